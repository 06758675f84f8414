"""Per-class decision thresholds of multi-label classifiers: tuned on validation data, chosen at use.

``tune_thresholds`` picks, for each class, the probability cut that maximises that class's F1 on the
validation probabilities (``metrics.best_f1_thresholds``); a class without positives there keeps the
scalar default, as nothing can be learnt about it. ``decision_thresholds`` says which cuts a run of
``infer`` / ``evaluate`` applies: an explicit override for every class, else the model's own
per-class thresholds (tuned when stored, else its scalar threshold repeated).

Tuning is opt-in (``classifier.tune_thresholds``): with a small validation set the best cut of a
class follows a few images, so it overfits, and the validation metrics measured at tuned cuts are
optimistic. Held-out data scored by ``evaluate`` tells how much of the gain is real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distillkit.classify.metrics import best_f1_thresholds
from distillkit.errors import UsageError

#: Where the thresholds a run applies come from.
ThresholdSource = Literal["tuned", "default", "override"]


@dataclass(frozen=True)
class ThresholdTuning:
    """Per-class thresholds tuned on validation probabilities, with the F1 each reaches there."""

    thresholds: list[float]
    best_f1: list[float]
    kept_default: list[str]  # classes with no positive validation image: they keep the scalar threshold
    default: float
    images: int

    def to_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        return {
            "thresholds": dict(zip(class_names, self.thresholds, strict=True)),
            "best_f1": dict(zip(class_names, self.best_f1, strict=True)),
            "kept_default": list(self.kept_default),
            "default": self.default,
            "val_images": self.images,
        }


def tune_thresholds(
    probabilities: np.ndarray, targets: np.ndarray, class_names: Sequence[str], default: float
) -> ThresholdTuning:
    """Best-F1 threshold per class on these (calibrated) probabilities; ``default`` where a class has no positive."""
    probs = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(targets, dtype=np.float64)
    thresholds, scores = best_f1_thresholds(probs, truth, default=default)
    absent = [name for name, column in zip(class_names, truth.T, strict=True) if not (column > 0).any()]
    return ThresholdTuning(
        thresholds=[float(t) for t in thresholds],
        best_f1=[float(s) for s in scores],
        kept_default=absent,
        default=float(default),
        images=int(probs.shape[0]),
    )


def checked_thresholds(values: Sequence[Any] | None, num_classes: int, origin: Path | str) -> list[float] | None:
    """Stored per-class thresholds as floats, or None when there are none; UsageError when they do not fit."""
    if values is None:
        return None
    try:
        cuts = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{origin} stores per-class thresholds that are not numbers", "re-export the model") from exc
    if len(cuts) != num_classes or not all(0.0 <= c <= 1.0 for c in cuts):
        raise UsageError(
            f"{origin} stores {len(cuts)} per-class thresholds for {num_classes} classes (each must be in [0, 1])",
            "re-export the model from its best.pt",
        )
    return cuts


@dataclass(frozen=True)
class DecisionThresholds:
    """The per-class cuts a run applies and where they come from."""

    values: list[float]
    source: ThresholdSource

    def to_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        return {"source": self.source, "per_class": dict(zip(class_names, self.values, strict=True))}


def decision_thresholds(
    stored: Sequence[float] | None, scalar: float, num_classes: int, override: float | None = None
) -> DecisionThresholds:
    """An explicit ``override`` for every class, else the ``stored`` (tuned) ones, else ``scalar`` repeated."""
    if override is not None:
        if not 0.0 <= override <= 1.0:
            raise UsageError(f"--threshold {override} is not a probability", "give a value in [0, 1]")
        return DecisionThresholds([float(override)] * num_classes, "override")
    if stored is not None:
        return DecisionThresholds([float(v) for v in stored], "tuned")
    return DecisionThresholds([float(scalar)] * num_classes, "default")
