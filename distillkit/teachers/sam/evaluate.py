"""Scoring SAM masks prompted with the ground-truth boxes.

Prompted with the true box of every instance, SAM's masks say how well it segments, apart from
detection: ``evaluate_sam`` reports COCO mask AP (pycocotools, scores from the IoU head, which
ranks the masks) and the mean IoU of each prompted mask with its own ground truth. The per-epoch
validation during training (``ValidationScorer``) measures that same mean IoU, which picks the best
checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from distillkit.data.validate import ValidationResult
from distillkit.evaluation import EvaluationResult, evaluate_predictions
from distillkit.evaluation.coco_metrics import load_ground_truth
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.teachers.sam.data import SamImageRecord, load_split, mask_records, read_rgb
from distillkit.teachers.sam.embeddings import EmbeddingCache, image_embeddings, model_dtype, preprocess_images
from distillkit.teachers.sam.geometry import SamGeometry
from distillkit.teachers.sam.predict import LoadedSam, decode_prompts, full_size_rles

IOU_GOOD = 0.5  # a prompted mask at or above this IoU counts as a hit in ``val/mask_iou50``


def paired_ious(predicted: list[dict[str, Any]], truth: list[dict[str, Any]]) -> np.ndarray:
    """IoU of each predicted RLE with the ground-truth RLE at the same position."""
    if not predicted:
        return np.zeros(0, dtype=np.float64)
    as_bytes = [{"size": rle["size"], "counts": _bytes(rle["counts"])} for rle in predicted]
    truth_bytes = [{"size": rle["size"], "counts": _bytes(rle["counts"])} for rle in truth]
    matrix = np.asarray(mask_utils.iou(as_bytes, truth_bytes, [0] * len(truth_bytes)), dtype=np.float64)
    return np.diagonal(matrix.reshape(len(predicted), len(truth))).copy()


def _bytes(counts: Any) -> Any:
    return counts.encode("ascii") if isinstance(counts, str) else counts


class ValidationScorer:
    """``evaluate(model)`` for the training loop: mean IoU of GT-box-prompted masks on the val set.

    Ground-truth masks are encoded once; with ``cache`` the val embeddings are computed once too.
    """

    def __init__(
        self,
        records: list[SamImageRecord],
        processor: Any,
        geometry: SamGeometry,
        mask_threshold: float,
        multimask_output: bool,
        cache: EmbeddingCache | None,
    ) -> None:
        self.records = records
        self.processor = processor
        self.geometry = geometry
        self.mask_threshold = mask_threshold
        self.multimask_output = multimask_output
        self.cache = cache
        self._truth = [record.rles() for record in records]
        self._boxes = [
            torch.from_numpy(geometry.boxes_to_input(record.prompt_boxes(), record.height, record.width))
            for record in records
        ]

    def _embedding(self, model: torch.nn.Module, key: int, device: torch.device) -> torch.Tensor:
        dtype = model_dtype(model)
        if self.cache is not None and key in self.cache:
            return self.cache.get([key], device, dtype)
        record = self.records[key]
        pixels = preprocess_images(self.processor, [read_rgb(record.path, record.width, record.height)])
        return image_embeddings(model, pixels.to(device, dtype))

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        ious: list[np.ndarray] = []
        for key, record in enumerate(self.records):
            embedding = self._embedding(model, key, device)
            logits, _ = decode_prompts(model, embedding, self._boxes[key], self.multimask_output)
            masks = full_size_rles(logits, self.geometry, record.height, record.width, self.mask_threshold)
            ious.append(paired_ious(masks, self._truth[key]))
        values = np.concatenate(ious) if ious else np.zeros(0)
        if values.size == 0:
            return {"val/mask_iou": 0.0, "val/mask_iou50": 0.0}
        return {"val/mask_iou": float(values.mean()), "val/mask_iou50": float((values >= IOU_GOOD).mean())}


@dataclass
class SamEvaluationResult(EvaluationResult):
    """COCO segm metrics of GT-box-prompted masks, plus the mean IoU of each mask with its own GT."""

    prompted_mask_iou: float = 0.0
    prompted_instances: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["sam"] = {"prompted_mask_iou": self.prompted_mask_iou, "prompted_instances": self.prompted_instances}
        return out


def evaluate_sam(
    loaded: LoadedSam,
    data: ValidationResult | str | os.PathLike[str],
    device: torch.device | str | None = None,
    progress: Progress = NULL_PROGRESS,
    *,
    images_dir: str | os.PathLike[str] | None = None,
) -> SamEvaluationResult:
    """Prompt the teacher with every ground-truth box of ``data`` and score the masks (COCO segm)."""
    if device is not None and torch.device(device) != loaded.device:
        loaded.model.to(device)
        loaded.device = torch.device(device)
    if isinstance(data, ValidationResult):
        gt, roots = load_split(data, images_dir)
    else:
        # Evaluation scores the ground truth as stored (pycocotools' rule): boxes are not replaced.
        gt = load_ground_truth(data, progress)
        _, roots = load_split(gt, images_dir)
    records = mask_records(gt, roots, name=str(gt.report.source or "the ground truth"))
    predictions: list[dict[str, Any]] = []
    ious: list[np.ndarray] = []
    with progress.task("SAM: masks from ground-truth boxes", total=len(records)) as task:
        for record in records:
            image = read_rgb(record.path, record.width, record.height)
            boxes = record.prompt_boxes()
            embedding = image_embeddings(
                loaded.model, preprocess_images(loaded.processor, [image]).to(loaded.device, model_dtype(loaded.model))
            )
            boxes_input = torch.from_numpy(loaded.geometry.boxes_to_input(boxes, record.height, record.width))
            logits, scores = decode_prompts(loaded.model, embedding, boxes_input, loaded.multimask_output)
            masks = full_size_rles(logits, loaded.geometry, record.height, record.width, loaded.mask_threshold)
            ious.append(paired_ious(masks, record.rles()))
            for rle, score, category in zip(masks, scores.clamp(0, 1).tolist(), record.category_ids, strict=True):
                predictions.append(
                    {"image_id": record.image_id, "category_id": category, "segmentation": rle, "score": float(score)}
                )
            task.advance(1)
    coco = evaluate_predictions(gt, predictions, iou_types="segm", progress=progress)
    values = np.concatenate(ious) if ious else np.zeros(0)
    fields = {name: getattr(coco, name) for name in coco.__dataclass_fields__}
    fields["predictions"] = "<SAM prompted with ground-truth boxes>"
    return SamEvaluationResult(
        **fields, prompted_mask_iou=float(values.mean()) if values.size else 0.0, prompted_instances=int(values.size)
    )
