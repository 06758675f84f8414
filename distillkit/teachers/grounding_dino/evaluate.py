"""Box mAP of Grounding DINO on a validation set, prompted with every class name, by the COCO evaluator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from distillkit.data.validate import ValidationResult
from distillkit.evaluation import EvaluationResult, evaluate_predictions
from distillkit.images import read_rgb
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.teachers.grounding_dino.data import DetectionSample
from distillkit.teachers.grounding_dino.predict import predict_boxes

# As COCO evaluation expects: keep (almost) everything, the metric sweeps the scores.
EVAL_SCORE_THRESHOLD = 0.001
EVAL_MAX_DETECTIONS = 100


def coco_detections(
    model: Any,
    processor: Any,
    prompt_text: str,
    samples: Sequence[DetectionSample],
    category_ids: Sequence[int],
    device: torch.device,
    batch_size: int,
    progress: Progress = NULL_PROGRESS,
) -> list[dict[str, Any]]:
    """COCO results-format detections of ``samples`` (``category_ids[i]`` is class i's COCO id)."""
    detections: list[dict[str, Any]] = []
    with progress.task("Grounding DINO evaluation", total=len(samples)) as task:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            predictions = predict_boxes(
                model,
                processor,
                prompt_text,
                len(category_ids),
                [read_rgb(sample.path, expect_size=(sample.width, sample.height)) for sample in chunk],
                device,
                box_threshold=EVAL_SCORE_THRESHOLD,
                text_threshold=0.0,
                max_detections=EVAL_MAX_DETECTIONS,
            )
            for sample, pred in zip(chunk, predictions, strict=True):
                for box, score, cls in zip(pred.boxes, pred.scores, pred.class_ids, strict=True):
                    x0, y0, x1, y1 = (float(v) for v in box)
                    detections.append(
                        {
                            "image_id": sample.image_id,
                            "category_id": int(category_ids[int(cls)]),
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(score),
                        }
                    )
            task.advance(len(chunk))
    return detections


def evaluate_boxes(
    model: Any,
    processor: Any,
    prompt_text: str,
    samples: Sequence[DetectionSample],
    ground_truth: ValidationResult,
    category_ids: Sequence[int],
    device: torch.device,
    batch_size: int,
    progress: Progress = NULL_PROGRESS,
) -> EvaluationResult:
    """Run the model over the validation images and score the boxes with ``evaluate_predictions``."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        detections = coco_detections(model, processor, prompt_text, samples, category_ids, device, batch_size, progress)
    finally:
        if was_training:
            model.train()
    return evaluate_predictions(ground_truth, detections, iou_types="bbox")


def box_metrics(result: EvaluationResult) -> dict[str, float]:
    """The validation metrics the training loop logs and monitors."""
    stats = result.metrics["bbox"].stats
    # pycocotools gives -1 when there is nothing to score; keep the number finite and lowest.
    return {"val/map50": max(stats["AP50"], 0.0), "val/map50_95": max(stats["AP"], 0.0)}
