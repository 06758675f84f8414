"""What ``Trainer.fit`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FitResult:
    """The outcome of a training run.

    ``epochs_run``: epochs completed in total (a resumed run counts the ones before the restart);
    ``best_epoch`` / ``best_value``: where the monitored metric was best (None if never finite);
    ``history``: one row per epoch (``epoch``, ``lr``, ``train/<term>``, the evaluate() metrics);
    ``final_weights``: what the model holds after ``fit``: ``"best"`` (the best epoch's evaluated
    weights), ``"ema"`` (the final average) or ``"last"`` (the final trained weights).
    """

    epochs_run: int
    best_epoch: int | None
    best_value: float | None
    monitor: str
    mode: str
    stopped_early: bool
    history: list[dict[str, Any]]
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    diverged: bool = False
    final_weights: str = "last"
    output_dir: Path | None = None
    metrics_csv: Path | None = None
    resumed_from: Path | None = None
    epoch_checkpoints: list[Path] = field(default_factory=list)
