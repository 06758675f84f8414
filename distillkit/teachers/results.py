"""What training one teacher returns (both teachers return the same shape, so the pipeline and the
CLI treat them alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TeacherTrainResult:
    """One trained teacher.

    ``name`` is the teacher's key (``grounding_dino`` or ``sam``); ``adapter_dir`` holds
    ``adapter_config.json`` + ``adapter_model.safetensors``; ``merged_dir`` the merged model when
    ``--merge`` asked for it. ``trainable_params`` / ``total_params`` describe the LoRA-wrapped model.
    ``history`` has one row per epoch (train losses and validation metrics); ``monitor`` /
    ``best_value`` / ``best_epoch`` say where the monitored validation metric peaked.
    """

    name: str
    adapter_dir: Path
    trainable_params: int
    total_params: int
    epochs_run: int
    monitor: str
    best_value: float | None
    best_epoch: int | None
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics_csv: Path | None = None
    tensorboard_dir: Path | None = None
    checkpoint_dir: Path | None = None
    merged_dir: Path | None = None
    weights: str | None = None  # the resolved base weights (local folder)
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def fit_fields(fit: Any) -> dict[str, Any]:
        """The fields every teacher copies from the shared loop's ``FitResult``."""
        return {
            "epochs_run": fit.epochs_run,
            "monitor": fit.monitor,
            "best_value": fit.best_value,
            "best_epoch": fit.best_epoch,
            "stopped_early": fit.stopped_early,
            "history": fit.history,
            "metrics_csv": fit.metrics_csv,
        }

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "adapter_dir": str(self.adapter_dir),
            "merged_dir": None if self.merged_dir is None else str(self.merged_dir),
            "weights": self.weights,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "trainable_share": self.trainable_share,
            "epochs_run": self.epochs_run,
            "monitor": self.monitor,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "metrics_csv": None if self.metrics_csv is None else str(self.metrics_csv),
            "tensorboard_dir": None if self.tensorboard_dir is None else str(self.tensorboard_dir),
            "checkpoint_dir": None if self.checkpoint_dir is None else str(self.checkpoint_dir),
            **({"extra": self.extra} if self.extra else {}),
        }
