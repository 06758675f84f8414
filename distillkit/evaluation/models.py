"""Evaluating trained models directly: predict on the ground truth's images, score, compare.

With several models this is the teacher-vs-student comparison: file size, parameters, median
latency per image on this machine, AP/AP50, and ratios to the first model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillkit.data.images import ImageLocator, default_image_roots
from distillkit.errors import DataError
from distillkit.evaluation.coco_metrics import EvaluationResult, evaluate_predictions, load_ground_truth
from distillkit.inference import PredictionRun, SliceSpec, load_model, predict_images, write_predictions
from distillkit.progress import NULL_PROGRESS, Progress

# Like COCO / ultralytics validation: keep (almost) every detection, the metrics sweep the scores.
EVAL_CONF = 0.001
EVAL_MAX_DET = 100


@dataclass
class ModelEvaluation:
    model: Path
    size_mb: float
    parameters: int
    median_latency_ms: float
    result: EvaluationResult

    def summary(self, reference: ModelEvaluation | None = None) -> dict[str, Any]:
        metrics = next(iter(self.result.metrics.values()))
        row: dict[str, Any] = {
            "model": str(self.model),
            "size_mb": round(self.size_mb, 3),
            "parameters": self.parameters,
            "median_latency_ms": round(self.median_latency_ms, 3),
            "iou_type": metrics.iou_type,
            "AP": metrics.stats["AP"],
            "AP50": metrics.stats["AP50"],
        }
        if reference is not None:
            ref = reference.summary()
            for key in ("size_mb", "parameters", "median_latency_ms", "AP", "AP50"):
                row[f"{key}_ratio"] = row[key] / ref[key] if ref[key] else None
        return row


def evaluate_models(
    ground_truth: str | Path,
    models: Sequence[str | Path],
    images_dir: str | Path | None = None,
    iou_types: str = "auto",
    imgsz: int | None = None,
    device: str | None = None,
    predictions_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
    slicing: SliceSpec | None = None,
) -> list[ModelEvaluation]:
    """Run each model on the ground truth's images and score it; ``slicing``: sliced (tiled) inference."""
    gt = load_ground_truth(ground_truth, progress)
    assert gt.dataset is not None
    locator = ImageLocator(default_image_roots(Path(ground_truth), Path(images_dir) if images_dir else None))
    image_ids: dict[Path, int] = {}
    missing = []
    for image in gt.dataset["images"]:
        path = locator.resolve(image["file_name"])
        if path is None:
            missing.append(image["file_name"])
        else:
            image_ids[path.resolve()] = image["id"]
    if missing:
        raise DataError(
            f"{len(missing)} ground-truth images were not found (e.g. {missing[0]!r})",
            "pass --images-dir with the folder holding them",
        )
    images = list(image_ids)
    evaluations = []
    for model_path in models:
        loaded = load_model(model_path)
        check_model_classes(loaded.names, loaded.category_ids, gt.dataset["categories"], model_path, ground_truth)
        run = PredictionRun()
        stream = predict_images(
            loaded,
            images,
            run=run,
            conf=EVAL_CONF,
            max_det=EVAL_MAX_DET,
            imgsz=imgsz,
            device=device,
            image_ids=image_ids,
            progress=progress,
            slicing=slicing,
        )
        if predictions_dir is not None:
            target = predictions_dir / f"predictions_{Path(model_path).stem}.json"
            detections = write_predictions(stream, target, keep=True)
        else:
            detections = list(stream)
        result = evaluate_predictions(gt, detections, iou_types=iou_types, progress=progress)
        result.predictions = str(model_path)
        evaluations.append(
            ModelEvaluation(Path(model_path), loaded.size_mb, loaded.parameters, run.median_latency_ms, result)
        )
    return evaluations


def check_model_classes(
    names: dict[int, str],
    category_ids: dict[int, int],
    categories: Sequence[dict[str, Any]],
    model: str | Path,
    ground_truth: str | Path,
) -> None:
    """Refuse a model whose category ids name other classes than the ground truth's.

    Ids alone prove nothing: every dataset numbers its categories 1, 2, 3..., so a model trained on
    fruit would otherwise be scored against blood cells without a word (AP 0, silently).
    """
    truth = {int(category["id"]): str(category["name"]) for category in categories}
    differing = [
        (category, names.get(index, str(index)), truth[category])
        for index, category in sorted(category_ids.items())
        if category in truth and _same_name(names.get(index, str(index))) != _same_name(truth[category])
    ]
    if differing:
        category, ours, theirs = differing[0]
        raise DataError(
            f"{model} was trained on other classes than {ground_truth}: category {category} is {ours!r} for the "
            f"model and {theirs!r} in the ground truth ({len(differing)} of {len(category_ids)} classes differ)",
            "evaluate the model on data with the categories it was trained on",
        )


def _same_name(name: str) -> str:
    # "Hard_Hat", "hard-hat" and "hard hat" are one class, as the YOLO teacher matches names
    return " ".join(name.casefold().replace("_", " ").replace("-", " ").split())
