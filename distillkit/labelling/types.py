"""What a teacher returns for one image, and the protocol every teacher implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass
class TeacherPrediction:
    """Detections of one image in the dataset's class order (index i = i-th category of class_mapping).

    ``boxes`` are absolute pixel ``xyxy`` in the original image; ``class_scores`` holds, per detection,
    the teacher's score for every class (soft targets; sigmoid scores, so rows need not sum to 1);
    ``masks`` are COCO RLE dicts (``{"size": [h, w], "counts": str}``) or None for box-only teachers;
    ``mask_quality`` is the mask teacher's own estimate of each mask's IoU (SAM's predicted IoU), used to
    weight the student's mask loss.
    """

    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64 indices into the dataset's class list
    class_scores: np.ndarray | None = None  # (N, C) float32
    masks: list[dict[str, Any]] | None = None  # N RLE dicts
    extra: dict[str, Any] = field(default_factory=dict)
    mask_quality: np.ndarray | None = None  # (N,) float32 in [0, 1]

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        count = len(self.scores)
        if self.class_scores is not None:
            class_scores = np.asarray(self.class_scores, dtype=np.float32)
            # An image without detections keeps a (0, C) table; reshape(0, -1) cannot infer C.
            width = class_scores.shape[-1] if class_scores.ndim == 2 else (class_scores.size // count if count else 0)
            self.class_scores = class_scores.reshape(count, width)
        if len(self.boxes) != count or len(self.class_ids) != count:
            raise ValueError("boxes, scores and class_ids must have one row per detection")
        if self.masks is not None and len(self.masks) != count:
            raise ValueError("masks must have one entry per detection")
        if self.mask_quality is not None:
            self.mask_quality = np.asarray(self.mask_quality, dtype=np.float32).reshape(-1)
            if len(self.mask_quality) != count:
                raise ValueError("mask_quality must have one entry per detection")

    def __len__(self) -> int:
        return len(self.scores)

    def filtered(self, min_score: float) -> TeacherPrediction:
        """The detections scoring at least ``min_score`` (e.g. the pseudo-label threshold)."""
        return self.subset(np.flatnonzero(self.scores >= min_score))

    def subset(self, keep: np.ndarray) -> TeacherPrediction:
        """The detections at the indices (or boolean mask) ``keep``, every per-detection field alike."""
        keep = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)
        return TeacherPrediction(
            width=self.width,
            height=self.height,
            boxes=self.boxes[keep],
            scores=self.scores[keep],
            class_ids=self.class_ids[keep],
            class_scores=None if self.class_scores is None else self.class_scores[keep],
            masks=None if self.masks is None else [self.masks[i] for i in keep],
            extra=dict(self.extra),
            mask_quality=None if self.mask_quality is None else self.mask_quality[keep],
        )

    def scaled_to(self, width: int, height: int) -> TeacherPrediction:
        """The detections in a ``width`` x ``height`` frame (a COCO file's size for the same image).

        Masks are dropped when the size changes: an RLE of another size cannot be used as is, and the
        box stands in for it.
        """
        if (self.width, self.height) == (width, height):
            return self
        scale = np.array([width / self.width, height / self.height] * 2, dtype=np.float32)
        return TeacherPrediction(
            width=width,
            height=height,
            boxes=self.boxes * scale,
            scores=self.scores,
            class_ids=self.class_ids,
            class_scores=self.class_scores,
            extra=dict(self.extra),
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "boxes": self.boxes.tolist(),
            "scores": self.scores.tolist(),
            "class_ids": self.class_ids.tolist(),
            "class_scores": None if self.class_scores is None else self.class_scores.tolist(),
            "masks": self.masks,
            "extra": self.extra,
            "mask_quality": None if self.mask_quality is None else self.mask_quality.tolist(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TeacherPrediction:
        extra = record.get("extra") or {}
        # Entries cached before mask_quality was a field kept SAM's scores in extra["mask_scores"].
        quality = record.get("mask_quality", extra.get("mask_scores"))
        return cls(
            width=int(record["width"]),
            height=int(record["height"]),
            boxes=np.asarray(record["boxes"], dtype=np.float32),
            scores=np.asarray(record["scores"], dtype=np.float32),
            class_ids=np.asarray(record["class_ids"], dtype=np.int64),
            class_scores=None if record.get("class_scores") is None else np.asarray(record["class_scores"]),
            masks=record.get("masks"),
            extra=extra,
            mask_quality=None if quality is None else np.asarray(quality, dtype=np.float32),
        )


class Teacher(Protocol):
    """Anything that labels images. ``identity`` changes whenever its outputs could change."""

    @property
    def identity(self) -> str:
        """A stable hash of the teacher's weights/adapters and labelling settings (thresholds, prompts)."""
        ...

    @property
    def class_names(self) -> list[str]: ...

    def predict(self, images: Sequence[Path]) -> list[TeacherPrediction]:
        """Predictions for a batch of image files, one per image, in order."""
        ...
