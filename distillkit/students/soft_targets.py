"""The teacher's soft targets inside ultralytics' YOLO loss: per-class scores, confidence and mask quality.

Teacher labels reach the student as YOLO label lines (so every augmentation moves them like any
label) plus a table (``soft_targets.json``, written by the YOLO conversion) holding, per label,
the teacher's score, its mask quality and its score for every class. This module carries each
label's row through ultralytics' data pipeline and into the loss:

* **Carrying.** ultralytics' augmentations keep, drop, reorder and concatenate the ``cls`` column
  of the labels (mosaic, random perspective, copy-paste, mixup, albumentations) but no column it
  does not know. So the row index rides *inside* the class value: ``cls = class + K * (row + 1)``
  with ``K = nc + 1`` (ground truth without a row keeps ``cls = class``), stored as float64 (exact
  far beyond any dataset). ``preprocess_batch`` decodes it back into ``cls`` and ``soft_row``
  before anything else (loss, plots) sees the batch.
* **Class targets.** ultralytics' task-aligned assigner gives each positive anchor the target
  ``one_hot(class) * alignment``. On an anchor assigned to a label with a row, the one-hot vector is
  replaced by the teacher's per-class scores (sigmoid scores for YOLO and Grounding DINO, so they
  need not sum to 1): ``target = alignment * p``. The target class's value is the teacher's
  confidence, the others say what else the teacher thought it might be (CrossKD's soft class
  targets on the assigned anchors), and since ultralytics weights the box and DFL losses by the
  target's sum, the box of an unsure label weighs less too (Soft Teacher's reliability weighting).
  Ground truth the teacher also found keeps its hard class (``p = 1`` for it, see
  ``pseudo_labels``), so annotations are never overruled.
* **Mask quality.** For segmentation, each positive anchor's mask loss is multiplied by its label's
  mask quality (SAM's predicted IoU; 1 for ground truth).
* **Ignore regions.** A row whose score is negative (``IGNORE_SCORE``) is not an object but a region
  where some classes are not taught: ``p_c = 1`` for each such class. The teacher labels unlabelled
  images only with the classes it knows; an image region it labelled must not teach the others as
  background (the student would learn that an unlabelled platelet is background, the partial-label
  problem of semi-supervised detection). Such rows are taken out of the assignment (never a
  positive), and the class loss of the anchors inside them that no label claims is weighted 0 for
  those classes — through ultralytics' own ``class_weights`` hook, set per batch as an (B, A, C)
  tensor. The region is written as a label line covering its image, so mosaic and the other
  augmentations crop and move it with the image it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillkit.io import read_json

MATCH_TOLERANCE = 1e-4  # label boxes are written with 6 decimals; ultralytics reads them as float32
IGNORE_SCORE = -1.0  # the score of a table row that is an ignore region, not an object


@dataclass(frozen=True)
class SoftTargetSettings:
    """Where the conversion wrote the table, and the class count that fixes the encoding."""

    table_file: Path
    num_classes: int

    @property
    def base(self) -> int:
        return self.num_classes + 1


def load_soft_targets(settings: SoftTargetSettings) -> tuple[torch.Tensor, dict[str, list[list[float]]]]:
    """The (rows, 2 + C) table and the per-image label entries of ``settings.table_file``."""
    document = read_json(settings.table_file)
    rows = torch.tensor(document["rows"], dtype=torch.float32).reshape(-1, 2 + settings.num_classes)
    return rows, document["images"]


def image_key(im_file: str) -> str:
    """``split/name`` of an ultralytics image path (``ROOT/images/<split>/<name>``)."""
    path = Path(im_file)
    return f"{path.parent.name}/{path.name}"


def match_rows(labels: dict[str, Any], entries: list[list[float]]) -> np.ndarray:
    """For each label line of one image, the index of its soft-target row, or -1."""
    classes = np.asarray(labels["cls"], dtype=np.float64).reshape(-1)
    boxes = np.asarray(labels["bboxes"], dtype=np.float64).reshape(-1, 4)
    rows = np.full(len(classes), -1, dtype=np.int64)
    for row, class_index, *box in entries:
        distance = np.abs(boxes - np.asarray(box)).max(axis=1) if len(boxes) else np.zeros(0)
        candidates = np.flatnonzero((classes == class_index) & (distance < MATCH_TOLERANCE) & (rows < 0))
        if len(candidates):
            rows[candidates[np.argmin(distance[candidates])]] = int(row)
    return rows


def encode(classes: np.ndarray, rows: np.ndarray, base: int) -> np.ndarray:
    """``class + base * (row + 1)`` as float64, (N, 1); rows of -1 leave the class as it is."""
    classes = np.asarray(classes, dtype=np.float64).reshape(-1, 1)
    return classes + base * (np.asarray(rows, dtype=np.float64).reshape(-1, 1) + 1)


def decode(encoded: torch.Tensor, base: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes as float32 (N, 1), rows as int64 (N,), -1 where there is none)."""
    values = encoded.double().reshape(-1)
    rows = torch.div(values, base, rounding_mode="floor").long() - 1
    classes = values - (rows + 1).double() * base
    return classes.float().view(-1, 1), rows


def soft_target_dataset(dataset: Any, settings: SoftTargetSettings, images: dict[str, list[list[float]]]) -> int:
    """Turn ultralytics' training ``dataset`` into one that encodes each label's row; returns labels matched.

    ``images`` is the per-image part of the table (``load_soft_targets``).
    """
    per_image = []
    matched = 0
    for labels in dataset.labels:
        rows = match_rows(labels, images.get(image_key(labels["im_file"]), []))
        matched += int((rows >= 0).sum())
        per_image.append(rows)
    base_class = type(dataset)

    class SoftTargetDataset(base_class):  # type: ignore[misc, valid-type]
        soft_rows = per_image
        soft_base = settings.base

        def get_image_and_label(self, index: int) -> dict[str, Any]:
            label = super().get_image_and_label(index)
            label["cls"] = encode(label["cls"], self.soft_rows[index], self.soft_base)
            return label

        def __getitem__(self, index: int) -> dict[str, Any]:
            sample = super().__getitem__(index)
            sample["cls"] = sample["cls"].double()  # empty images come back as float32 zeros
            return sample

    dataset.__class__ = SoftTargetDataset
    return matched


def decode_batch(batch: dict[str, Any], base: int) -> dict[str, Any]:
    """Split the encoded ``cls`` of a collated batch into ``cls`` and ``soft_row`` (in place)."""
    classes, rows = decode(batch["cls"], base)
    batch["cls"] = classes.to(batch["cls"].device)
    batch["soft_row"] = rows.to(batch["cls"].device)
    if "sem_masks" in batch:  # semantic masks were built from the encoded class values
        batch["sem_masks"] = torch.remainder(batch["sem_masks"].double(), base).to(batch["sem_masks"].dtype)
    return batch


class _SoftAssigner:
    """Wraps the criterion's task-aligned assigner: teacher rows replace one-hot class targets.

    Called as ultralytics calls it: ``(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt)``.
    """

    def __init__(self, assigner: Any, criterion: SoftTargetLossMixin) -> None:
        self.assigner = assigner
        self.criterion = criterion

    def __getattr__(self, name: str) -> Any:
        return getattr(self.assigner, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        padded = self.criterion._padded_rows
        self.criterion._anchor_quality = None
        if padded is None or padded.shape[1] == 0:
            return self.assigner(*args, **kwargs)
        table = self.criterion.soft_table
        entries_of_gt = table[padded.clamp(min=0)]  # (B, n, 2 + C)
        ignore_gt = (padded >= 0) & (entries_of_gt[..., 0] < 0)  # (B, n)
        if ignore_gt.any():  # regions, not objects: never assigned
            args = (*args[:5], args[5] * (~ignore_gt).unsqueeze(-1).to(args[5].dtype), *args[6:])
        labels, bboxes, scores, fg_mask, gt_index = self.assigner(*args, **kwargs)
        rows = padded.gather(1, gt_index.clamp(max=padded.shape[1] - 1))  # (B, anchors)
        taught = fg_mask & (rows >= 0)
        if taught.any():
            entries = table[rows[taught]]
            alignment = scores[taught].amax(dim=-1, keepdim=True)
            scores = scores.clone()
            scores[taught] = (alignment * entries[:, 2:]).to(scores.dtype)
            quality = torch.ones(fg_mask.shape, device=scores.device, dtype=scores.dtype)
            quality[taught] = entries[:, 1].to(scores.dtype)
            self.criterion._anchor_quality = quality
        if ignore_gt.any():
            anchor_points, gt_bboxes = args[2], args[4]
            ignored = ignored_class_mask(anchor_points, gt_bboxes, ignore_gt, entries_of_gt[..., 2:])
            ignored &= ~fg_mask[..., None]  # an anchor a label claims keeps its whole target
            weights = (~ignored).to(scores.dtype)
            base = self.criterion._base_class_weights
            self.criterion.class_weights = weights if base is None else weights * base
        return labels, bboxes, scores, fg_mask, gt_index


def ignored_class_mask(
    anchor_points: torch.Tensor, gt_bboxes: torch.Tensor, ignore_gt: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """(B, A, C) bool: anchor ``a`` of image ``b`` lies inside an ignore region of ``b`` that ignores class ``c``.

    ``anchor_points`` (A, 2) and ``gt_bboxes`` (B, n, 4, xyxy) in the same pixels; ``ignore_gt`` (B, n)
    marks the regions, ``classes`` (B, n, C) their per-class flags.
    """
    image, slot = ignore_gt.nonzero(as_tuple=True)  # a few regions per batch: no (B, n, A) tensor
    boxes = gt_bboxes[image, slot]  # (K, 4)
    x, y = anchor_points[:, 0], anchor_points[:, 1]
    inside = (
        (x[None] > boxes[:, 0:1]) & (x[None] < boxes[:, 2:3]) & (y[None] > boxes[:, 1:2]) & (y[None] < boxes[:, 3:4])
    )  # (K, A)
    flags = (classes[image, slot] > 0).float()  # (K, C)
    counts = torch.zeros(gt_bboxes.shape[0], anchor_points.shape[0], classes.shape[-1], device=boxes.device)
    counts.index_add_(0, image, inside.float()[:, :, None] * flags[:, None, :])
    return counts > 0


class SoftTargetLossMixin:
    """Mixed into a ``v8DetectionLoss`` / ``v8SegmentationLoss`` subclass (see ``distill_trainer``)."""

    soft_table: torch.Tensor
    class_weights: torch.Tensor | None
    _base_class_weights: torch.Tensor | None = None
    _padded_rows: torch.Tensor | None = None
    _anchor_quality: torch.Tensor | None = None
    _mask_weights: list[torch.Tensor] | None = None

    def attach_soft_targets(self, table: torch.Tensor) -> None:
        self.soft_table = table.to(self.device)  # type: ignore[attr-defined]
        self.assigner = _SoftAssigner(self.assigner, self)  # type: ignore[has-type]
        self._base_class_weights = self.class_weights  # ignore regions multiply these, per batch

    def loss(self, preds: dict[str, Any], batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rows = batch.get("soft_row")
        self._padded_rows = None
        if rows is not None and bool((rows >= 0).any()):
            batch_size = preds["boxes"].shape[0]
            targets = torch.cat(
                (
                    batch["batch_idx"].view(-1, 1).float(),
                    (rows.view(-1, 1) + 1).float(),  # preprocess pads with 0: shift so padding reads -1
                    torch.zeros(len(rows), 4, device=rows.device),
                ),
                dim=1,
            ).to(self.device)  # type: ignore[attr-defined]
            padded = self.preprocess(targets, batch_size, scale_tensor=torch.ones(4, device=targets.device))  # type: ignore[attr-defined]
            self._padded_rows = padded[..., 0].round().long() - 1
        try:
            return super().loss(preds, batch)  # type: ignore[misc]
        finally:
            self._padded_rows = None
            self._anchor_quality = None
            self.class_weights = self._base_class_weights

    def calculate_segmentation_loss(self, fg_mask: torch.Tensor, *args: Any) -> torch.Tensor:
        quality = self._anchor_quality
        if quality is not None:  # one weight vector per image that has positives, in the loop's order
            self._mask_weights = [quality[i][fg_mask[i]] for i in range(len(fg_mask)) if fg_mask[i].any()]
        try:
            return super().calculate_segmentation_loss(fg_mask, *args)  # type: ignore[misc]
        finally:
            self._mask_weights = None

    def single_mask_loss(
        self, gt_mask: torch.Tensor, pred: torch.Tensor, proto: torch.Tensor, xyxy: torch.Tensor, area: torch.Tensor
    ) -> torch.Tensor:
        from ultralytics.utils.loss import v8SegmentationLoss

        if self._mask_weights:
            weight = self._mask_weights.pop(0).to(area.dtype)
            area = area / weight.clamp(min=1e-6)  # the per-instance loss is divided by area: this multiplies it
        return v8SegmentationLoss.single_mask_loss(gt_mask, pred, proto, xyxy, area)
