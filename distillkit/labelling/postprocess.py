"""Cleaning a teacher's raw detections before they become labels: duplicates out, per-class gates applied.

Applied to what the teacher-output cache holds (the raw teacher output), so changing a threshold
never means labelling again. Teacher-agnostic, in this order:

1. ``classwise_nms``: overlapping boxes of the same class keep the highest-scoring one. Grounding
   DINO has no NMS of its own (its 900 queries often place two boxes on one object); ultralytics'
   NMS already ran on YOLO outputs, so this changes nothing there.
2. ``suppress_cross_class_duplicates``: one object scored as two classes (a phrase-grounding model
   reads "RBC" and "WBC" on the same cell; YOLO's class-aware NMS keeps both) keeps its best box;
   the kept box's per-class vector takes the element-wise maximum of both, so the student's soft
   target still says the teacher hesitated between them.
3. ``apply_class_thresholds``: a detection stays when its score reaches its class's threshold
   (calibrated on the validation split, see ``calibration.py``, or one global value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou

from distillkit.labelling.types import TeacherPrediction


@dataclass(frozen=True)
class LabelFilter:
    """How raw teacher detections become labels (``distillation.*`` / ``label`` options)."""

    thresholds: Sequence[float]  # one per class, in the dataset's class order
    nms_iou: float = 0.6  # same-class overlap above this is one object
    cross_class_iou: float = 0.8  # different-class overlap above this is one object
    dropped_classes: frozenset[int] = frozenset()  # classes the teacher does not know: never a label

    def apply(self, prediction: TeacherPrediction) -> TeacherPrediction:
        kept = classwise_nms(prediction, self.nms_iou)
        kept = suppress_cross_class_duplicates(kept, self.cross_class_iou)
        kept = apply_class_thresholds(kept, self.thresholds)
        if self.dropped_classes and len(kept):
            kept = kept.subset(~np.isin(kept.class_ids, list(self.dropped_classes)))
        return kept


def classwise_nms(prediction: TeacherPrediction, iou: float) -> TeacherPrediction:
    """Same-class duplicates removed (torchvision's batched NMS), kept in descending score order."""
    if len(prediction) < 2:
        return prediction
    keep = batched_nms(
        torch.from_numpy(prediction.boxes.astype(np.float32)),
        torch.from_numpy(prediction.scores.astype(np.float32)),
        torch.from_numpy(prediction.class_ids),
        float(iou),
    )
    return prediction.subset(np.sort(keep.numpy()))


def suppress_cross_class_duplicates(prediction: TeacherPrediction, iou: float) -> TeacherPrediction:
    """Boxes of different classes overlapping above ``iou``: the higher score wins, soft scores merged."""
    count = len(prediction)
    if count < 2:
        return prediction
    boxes = torch.from_numpy(prediction.boxes.astype(np.float32))
    overlaps = box_iou(boxes, boxes).numpy()
    order = np.argsort(-prediction.scores, kind="stable")
    alive = np.ones(count, dtype=bool)
    class_scores = None if prediction.class_scores is None else prediction.class_scores.copy()
    for rank, winner in enumerate(order):
        if not alive[winner]:
            continue
        for loser in order[rank + 1 :]:
            if (
                alive[loser]
                and prediction.class_ids[loser] != prediction.class_ids[winner]
                and overlaps[winner, loser] > iou
            ):
                alive[loser] = False
                if class_scores is not None:
                    class_scores[winner] = np.maximum(class_scores[winner], class_scores[loser])
    merged = TeacherPrediction(
        width=prediction.width,
        height=prediction.height,
        boxes=prediction.boxes,
        scores=prediction.scores,
        class_ids=prediction.class_ids,
        class_scores=class_scores,
        masks=prediction.masks,
        extra=dict(prediction.extra),
        mask_quality=prediction.mask_quality,
    )
    return merged.subset(alive)


def apply_class_thresholds(prediction: TeacherPrediction, thresholds: Sequence[float]) -> TeacherPrediction:
    """The detections whose score reaches their class's threshold."""
    if len(prediction) == 0:
        return prediction
    table = np.asarray(thresholds, dtype=np.float32)
    if prediction.class_ids.max(initial=0) >= len(table):
        raise ValueError(f"{len(table)} class thresholds for class ids up to {int(prediction.class_ids.max())}")
    return prediction.subset(prediction.scores >= table[prediction.class_ids])
