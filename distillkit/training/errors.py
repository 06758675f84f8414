"""Errors raised by the training loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distillkit.errors import DistillkitError

if TYPE_CHECKING:
    from distillkit.training.result import FitResult


class TrainingDiverged(DistillkitError):
    """The loss or the gradient became non-finite: the run stops instead of training on garbage.

    ``epoch`` and ``step`` (both 1-based; ``step`` counts batches within the epoch) say where it
    happened; ``result`` holds what the run achieved up to the last completed epoch (``diverged``
    set), so a caller can still report or restore it.
    """

    exit_code = 1

    def __init__(self, what: str, value: float, epoch: int, step: int, result: FitResult | None = None) -> None:
        self.what = what
        self.value = value
        self.epoch = epoch
        self.step = step
        self.result = result
        super().__init__(
            f"{what} became {_describe(value)} at epoch {epoch}, step {step}",
            "lower training_dynamics.lr or set training_dynamics.grad_clip_norm",
        )


def _describe(value: float) -> str:
    if value != value:  # NaN is the only value unequal to itself
        return "nan"
    return "inf" if value > 0 else "-inf"
