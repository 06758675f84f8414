"""Running classifiers over image files: batched, optionally with test-time augmentation and ensembles.

TTA averages the probabilities of the image and its flipped / rotated copies; an ensemble averages
the (TTA-averaged, temperature-calibrated) probabilities of several models. Each model reads the
images at its own input size and normalisation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from distillkit.classify.dataset import ClassificationDataset
from distillkit.classify.runtime import ClassifierRuntime
from distillkit.errors import UsageError
from distillkit.progress import NULL_PROGRESS, Progress

TTA_TRANSFORMS = ("hflip", "vflip", "rot90")


def _apply_tta(batch: torch.Tensor, name: str) -> torch.Tensor:
    if name == "hflip":
        return torch.flip(batch, dims=[3])
    if name == "vflip":
        return torch.flip(batch, dims=[2])
    if name == "rot90":
        return torch.rot90(batch, k=1, dims=[2, 3])
    raise UsageError(f"unknown test-time augmentation '{name}'", f"choose from {', '.join(TTA_TRANSFORMS)}")


def check_tta(tta: Sequence[str]) -> list[str]:
    names = [name.strip() for name in tta if name.strip()]
    for name in names:
        if name not in TTA_TRANSFORMS:
            raise UsageError(f"unknown test-time augmentation '{name}'", f"choose from {', '.join(TTA_TRANSFORMS)}")
    return names


@dataclass
class ModelPredictions:
    """One model's outputs on a list of images (calibrated, TTA-averaged probabilities)."""

    runtime: ClassifierRuntime
    probabilities: np.ndarray  # (N, C)
    uncalibrated: np.ndarray  # (N, C) probabilities at temperature 1
    logits: np.ndarray  # (N, C) of the un-augmented images
    latency_ms: list[float] = field(default_factory=list)  # per image, forward passes only

    @property
    def median_latency_ms(self) -> float:
        return float(np.median(self.latency_ms)) if self.latency_ms else 0.0


def predict_paths(
    runtime: ClassifierRuntime,
    paths: Sequence[Path],
    batch_size: int = 32,
    tta: Sequence[str] = (),
    num_workers: int = 0,
    progress: Progress = NULL_PROGRESS,
) -> ModelPredictions:
    """Probabilities of ``runtime`` for every image in ``paths`` (order kept)."""
    transforms = check_tta(tta)
    dataset = ClassificationDataset(
        paths,
        np.zeros((len(paths), len(runtime.class_names)), np.float32),
        runtime.input_hw,
        runtime.mean,
        runtime.std,
        runtime.interpolation,
        cache=False,
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    probs, raw, logits_all, latency = [], [], [], []
    with progress.task(f"classifying with {runtime.path.name}", total=len(paths)) as task:
        for images, _ in loader:
            started = time.perf_counter()
            logits = runtime.logits(images)
            views = [logits] + [runtime.logits(_apply_tta(images, name)) for name in transforms]
            latency.extend([(time.perf_counter() - started) * 1000.0 / len(images)] * len(images))
            probs.append(torch.stack([runtime.probabilities(v) for v in views]).mean(dim=0))
            raw.append(torch.stack([runtime.probabilities(v, calibrated=False) for v in views]).mean(dim=0))
            logits_all.append(logits)
            task.advance(len(images))
    return ModelPredictions(
        runtime=runtime,
        probabilities=torch.cat(probs).numpy().astype(np.float64),
        uncalibrated=torch.cat(raw).numpy().astype(np.float64),
        logits=torch.cat(logits_all).numpy().astype(np.float64),
        latency_ms=latency,
    )


def check_compatible(runtimes: Sequence[ClassifierRuntime]) -> None:
    """An ensemble needs the same classes in the same order and the same label type."""
    first = runtimes[0]
    for other in runtimes[1:]:
        if other.class_names != first.class_names:
            raise UsageError(
                f"{other.path} has classes {other.class_names}, {first.path} has {first.class_names}",
                "ensemble only models trained on the same classes",
            )
        if other.multi_label != first.multi_label:
            raise UsageError(f"{other.path} and {first.path} differ in multi-label mode", "ensemble like models")


def decide(probabilities: np.ndarray, multi_label: bool, thresholds: Sequence[float] | float) -> list[list[int]]:
    """Predicted class indices per image: arg-max, or every class at/above its threshold."""
    if not multi_label:
        return [[int(i)] for i in probabilities.argmax(axis=1)]
    cut = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), probabilities.shape[1:])
    return [[int(i) for i in np.flatnonzero(row >= cut)] for row in probabilities]


def image_records(
    paths: Sequence[Path],
    probabilities: np.ndarray,
    class_names: Sequence[str],
    multi_label: bool,
    thresholds: Sequence[float] | float,
    topk: int = 5,
) -> list[dict[str, Any]]:
    """JSON-ready per-image results: predicted classes, top-k and every class probability."""
    records = []
    chosen = decide(probabilities, multi_label, thresholds)
    for path, row, picked in zip(paths, probabilities, chosen, strict=True):
        order = np.argsort(-row, kind="stable")[: min(topk, len(class_names))]
        records.append(
            {
                "file": str(path),
                "classes": [class_names[i] for i in picked],
                "class_ids": picked,
                "top": [{"class": class_names[i], "probability": round(float(row[i]), 6)} for i in order],
                "probabilities": {name: round(float(p), 6) for name, p in zip(class_names, row, strict=True)},
            }
        )
    return records
