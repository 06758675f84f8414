"""Accuracy of a model and its artefacts on validation data, with `evaluate`'s own evaluator.

Detection/segmentation: COCO mAP50-95 through ``distillkit.evaluation.models.evaluate_models``
(the code behind ``distillkit evaluate --model``); the guarded figure is mask AP for segmentation
models and box AP otherwise. Other tasks: the evaluator their family registers in ``distillkit.tasks``
(``export.accuracy``; classifiers: accuracy from the code behind ``distillkit evaluate`` for classifiers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distillkit.progress import NULL_PROGRESS, Progress


@dataclass
class Accuracy:
    metric: str  # "mAP50-95 (bbox)", "mAP50-95 (segm)", "accuracy"
    value: float  # a fraction
    details: dict[str, float] = field(default_factory=dict)


def detection_accuracy(
    val_data: Path,
    models: Sequence[Path],
    task: str,
    imgsz: int,
    images_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> list[Accuracy]:
    from distillkit.evaluation.models import evaluate_models

    evaluations = evaluate_models(val_data, models, images_dir=images_dir, imgsz=imgsz, progress=progress)
    results = []
    for evaluation in evaluations:
        metrics = evaluation.result.metrics
        details = {f"{kind}_{key}": float(value) for kind, m in metrics.items() for key, value in m.stats.items()}
        primary = "segm" if task == "segment" and "segm" in metrics else "bbox"
        if primary not in metrics:
            primary = next(iter(metrics))
        results.append(Accuracy(f"mAP50-95 ({primary})", float(metrics[primary].stats["AP"]), details))
    return results
