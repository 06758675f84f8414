"""One picture's detections as plain arrays: what sliced inference shifts and merges, and entries are written from.

Masks are kept as ``MaskPatch``es (the mask cropped to its pixels, with its offset in the picture),
not as full-size planes: a 4000x3000 picture sliced into 50 tiles may hold a thousand candidate
masks before merging, and a thousand full planes would not fit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


@dataclass(frozen=True)
class MaskPatch:
    """A binary mask cropped to the box of its pixels; ``x``, ``y``: the crop's corner in the picture."""

    x: int
    y: int
    pixels: np.ndarray  # bool (h, w)

    @classmethod
    def from_plane(cls, plane: np.ndarray) -> MaskPatch:
        rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        if rows.size == 0:
            return cls(0, 0, np.zeros((0, 0), dtype=bool))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return cls(x0, y0, plane[y0:y1, x0:x1].astype(bool))

    def shifted(self, dx: int, dy: int) -> MaskPatch:
        return MaskPatch(self.x + dx, self.y + dy, self.pixels)

    def plane(self, height: int, width: int) -> np.ndarray:
        """The full-size uint8 plane (Fortran order, as pycocotools encodes it)."""
        canvas = np.zeros((height, width), dtype=np.uint8, order="F")
        h, w = self.pixels.shape
        y1, x1 = min(self.y + h, height), min(self.x + w, width)
        if y1 > self.y and x1 > self.x:
            canvas[self.y : y1, self.x : x1] = self.pixels[: y1 - self.y, : x1 - self.x]
        return canvas

    def union(self, other: MaskPatch) -> MaskPatch:
        if other.pixels.size == 0:
            return self
        if self.pixels.size == 0:
            return other
        x0, y0 = min(self.x, other.x), min(self.y, other.y)
        x1 = max(self.x + self.pixels.shape[1], other.x + other.pixels.shape[1])
        y1 = max(self.y + self.pixels.shape[0], other.y + other.pixels.shape[0])
        merged = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for patch in (self, other):
            h, w = patch.pixels.shape
            merged[patch.y - y0 : patch.y - y0 + h, patch.x - x0 : patch.x - x0 + w] |= patch.pixels
        return MaskPatch(x0, y0, merged)


@dataclass
class Detections:
    """N detections in one picture's pixel frame: boxes (x1, y1, x2, y2), scores, class indices, masks."""

    xyxy: np.ndarray  # float64 (N, 4)
    scores: np.ndarray  # float64 (N,)
    classes: np.ndarray  # int64 (N,)
    masks: list[MaskPatch] | None = None  # None: a detection model

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls, with_masks: bool = False) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), [] if with_masks else None)

    @classmethod
    def from_result(cls, result: Any) -> Detections:
        """From an ultralytics ``Results`` (masks at the picture's size: ``retina_masks``)."""
        boxes = result.boxes
        with_masks = getattr(result, "masks", None) is not None
        if boxes is None or len(boxes) == 0:
            return cls.empty(with_masks)
        masks = None
        if with_masks:
            height, width = result.orig_shape
            planes = result.masks.data.cpu().numpy() > 0.5
            masks = [MaskPatch.from_plane(_at_size(plane, height, width)) for plane in planes]
        return cls(
            boxes.xyxy.cpu().numpy().astype(np.float64),
            boxes.conf.cpu().numpy().astype(np.float64),
            boxes.cls.cpu().numpy().astype(np.int64),
            masks,
        )

    def shifted(self, dx: int, dy: int) -> Detections:
        """The same detections in a frame where this one's corner is at (dx, dy): a tile's back in its picture."""
        offset = np.array([dx, dy, dx, dy], dtype=np.float64)
        masks = None if self.masks is None else [m.shifted(dx, dy) for m in self.masks]
        return Detections(self.xyxy + offset, self.scores.copy(), self.classes.copy(), masks)

    def select(self, indices: Sequence[int] | np.ndarray) -> Detections:
        index = np.asarray(indices, dtype=np.int64)
        masks = None if self.masks is None else [self.masks[i] for i in index]
        return Detections(self.xyxy[index], self.scores[index], self.classes[index], masks)

    @classmethod
    def concatenate(cls, parts: Sequence[Detections]) -> Detections:
        if not parts:
            return cls.empty()
        with_masks = any(p.masks is not None for p in parts)
        masks: list[MaskPatch] | None = [m for p in parts for m in (p.masks or [])] if with_masks else None
        return cls(
            np.concatenate([p.xyxy.reshape(-1, 4) for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.classes for p in parts]).astype(np.int64),
            masks,
        )

    def entries(
        self,
        names: dict[int, str],
        category_ids: dict[int, int],
        height: int,
        width: int,
        head: dict[str, Any],
    ) -> Iterator[dict[str, Any]]:
        """COCO-results entries: ``head`` (file_name, image_id, frame_index...) then category, bbox, score, mask."""
        for i in range(len(self)):
            x1, y1, x2, y2 = self.xyxy[i]
            index = int(self.classes[i])
            entry = dict(head)
            entry.update(
                category_id=category_ids.get(index, index),
                category_name=names.get(index, str(index)),
                bbox=[round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
                score=round(float(self.scores[i]), 5),
            )
            if self.masks is not None:
                rle = mask_utils.encode(self.masks[i].plane(height, width))
                entry["segmentation"] = {"size": [height, width], "counts": rle["counts"].decode()}
            yield entry

    def plot(self, image_bgr: np.ndarray, names: dict[int, str]) -> np.ndarray:
        """An annotated BGR copy, drawn by ultralytics (the same look as its own overlays)."""
        import torch

        from distillkit.ultralytics_env import import_ultralytics

        import_ultralytics()
        from ultralytics.engine.results import Results

        height, width = image_bgr.shape[:2]
        boxes = np.concatenate([self.xyxy, self.scores[:, None], self.classes[:, None]], axis=1)
        masks = None
        if self.masks is not None and len(self):
            masks = torch.from_numpy(np.stack([m.plane(height, width) for m in self.masks]).astype(np.float32))
        result = Results(image_bgr, "", names, boxes=torch.from_numpy(boxes.astype(np.float32)), masks=masks)
        return result.plot()


def _at_size(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    if plane.shape == (height, width):  # retina masks are at the picture's size; guard anyway
        return plane
    import cv2

    return cv2.resize(plane.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
