"""Sliced (tiled) inference, SAHI's approach: predict on overlapping tiles, map back, merge.

Small objects in a large picture shrink below what the model can see once the picture is resized
to the model's input size; predicting on tiles keeps them at (or above) their real size. The steps
are those of SAHI (Akyon et al., 2022, github.com/obss/sahi): overlapping tiles whose last row and
column are moved back inside the picture (every tile full-size, none padded), optionally one more
pass on the whole picture ("standard prediction", for objects larger than a tile), boxes shifted
back to picture coordinates, then duplicates merged class by class, either by NMS (IoU; keeps the
best box) or SAHI's greedy NMM (intersection over the smaller box; fuses matched boxes and masks,
which also joins an object cut by a tile border with its whole).

Written here rather than taken from the ``sahi`` package: sahi wraps ultralytics in its own model
classes and result objects (and brings shapely, pybboxes, fire...), while distillkit already runs
ultralytics itself for .pt and exported models; the parts needed are the tile grid and the merge,
a hundred lines on ``torchvision.ops.batched_nms`` and numpy, tested exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from distillkit.errors import UsageError
from distillkit.inference.detections import Detections

MERGE_METHODS = ("nms", "nmm")

#: Predicts a batch of BGR pictures (tiles): one ``Detections`` per picture, in its own pixel frame.
BatchPredictor = Callable[[list[np.ndarray]], list[Detections]]


@dataclass(frozen=True)
class SliceSpec:
    """How to slice: tile size in pixels, overlap ratio, extra full-picture pass, merge method and threshold."""

    width: int
    height: int
    overlap: float = 0.2  # fraction of the tile shared with its neighbour, in both directions
    full_image: bool = False  # also predict on the whole picture and merge (SAHI's "standard prediction")
    merge: str = "nms"  # nms: IoU, keeps the best box; nmm: greedy non-maximum merging on IoS (SAHI's default)
    match_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise UsageError(f"--slice {self.width}x{self.height}: tiles need a positive size", "e.g. --slice 320")
        if not 0.0 <= self.overlap < 1.0:
            raise UsageError(f"--slice-overlap {self.overlap} is not in [0, 1)", "e.g. --slice-overlap 0.2")
        if self.merge not in MERGE_METHODS:
            raise UsageError(f"--slice-merge {self.merge!r} is not one of {', '.join(MERGE_METHODS)}")
        if not 0.0 < self.match_threshold <= 1.0:
            raise UsageError(f"--slice-match {self.match_threshold} is not in (0, 1]", "e.g. --slice-match 0.5")

    @classmethod
    def parse(cls, text: str, **options: object) -> SliceSpec:
        """``"320"`` (square tiles) or ``"512x384"`` (width x height)."""
        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+)\s*)?", text)
        if match is None:
            raise UsageError(f"--slice {text!r} is not a tile size", "give WIDTHxHEIGHT or one number, e.g. 320x320")
        width = int(match.group(1))
        height = int(match.group(2)) if match.group(2) else width
        return cls(width, height, **options)  # type: ignore[arg-type]

    def with_full_image(self, full_image: bool = True) -> SliceSpec:
        return replace(self, full_image=full_image)

    def tiles(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """Tiles (x1, y1, x2, y2) covering a ``width`` x ``height`` picture, row by row."""
        xs = _starts(width, self.width, self.overlap)
        ys = _starts(height, self.height, self.overlap)
        return [(x, y, min(x + self.width, width), min(y + self.height, height)) for y in ys for x in xs]

    def describe(self) -> str:
        full = " + full image" if self.full_image else ""
        merge = f"{self.merge} at {self.match_threshold:g}"
        return f"{self.width}x{self.height} tiles, overlap {self.overlap:g}{full}, {merge}"


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile starts along one side: a step of tile x (1 - overlap), the last tile moved back to end at the edge.

    A picture no larger than the tile is one (clipped) tile. Moving the last tile back, rather than
    letting it hang over and padding it, keeps every tile a full-size view at the same scale.
    """
    if length <= tile:
        return [0]
    step = max(1, tile - int(overlap * tile))
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def predict_sliced(image: np.ndarray, predict: BatchPredictor, spec: SliceSpec, max_det: int = 300) -> Detections:
    """Detections of ``image`` (BGR, H x W x 3) from its tiles (and the whole picture), merged, best ``max_det``."""
    height, width = image.shape[:2]
    tiles = spec.tiles(width, height)
    if len(tiles) == 1:  # the picture fits in one tile: slicing would only predict it again
        return _best(predict([image])[0], max_det)
    crops = [image[y1:y2, x1:x2] for x1, y1, x2, y2 in tiles]
    found = [d.shifted(x1, y1) for d, (x1, y1, _, _) in zip(predict(crops), tiles, strict=True)]
    if spec.full_image:
        found.append(predict([image])[0])
    merged = merge_detections(Detections.concatenate(found), spec.merge, spec.match_threshold)
    return _best(merged, max_det)


def _best(detections: Detections, max_det: int) -> Detections:
    order = np.argsort(-detections.scores, kind="stable")[:max_det]
    return detections.select(order)


def merge_detections(detections: Detections, method: str = "nms", threshold: float = 0.5) -> Detections:
    """Duplicates merged class by class; the result sorted by score, best first."""
    if len(detections) == 0:
        return detections
    if method == "nms":
        import torch
        from torchvision.ops import batched_nms

        keep = batched_nms(
            torch.from_numpy(detections.xyxy),
            torch.from_numpy(detections.scores),
            torch.from_numpy(detections.classes),
            threshold,
        )
        return detections.select(keep.numpy())
    if method == "nmm":
        return greedy_nmm(detections, threshold)
    raise UsageError(f"merge method {method!r} is not one of {', '.join(MERGE_METHODS)}")


def greedy_nmm(detections: Detections, threshold: float = 0.5) -> Detections:
    """SAHI's greedy non-maximum merging: per class, best box first, every box it overlaps is fused into it.

    Overlap is intersection over the smaller box (IoS), so a fragment cut off by a tile border (which
    lies inside the whole object's box) joins it although their IoU is small. The fused detection
    has the union of the boxes (and masks) and the best score.
    """
    boxes, scores, classes = detections.xyxy, detections.scores, detections.classes
    out_boxes: list[np.ndarray] = []
    out_scores: list[float] = []
    out_classes: list[int] = []
    out_masks = [] if detections.masks is not None else None
    for cls in np.unique(classes):
        members = np.flatnonzero(classes == cls)
        members = members[np.argsort(-scores[members], kind="stable")]
        ios = _intersection_over_smaller(boxes[members])
        taken = np.zeros(len(members), dtype=bool)
        for position in range(len(members)):
            if taken[position]:
                continue
            group = [
                position,
                *np.flatnonzero(~taken & (ios[position] > threshold) & (np.arange(len(members)) > position)),
            ]
            taken[group] = True
            chosen = members[group]
            box = np.concatenate([boxes[chosen, :2].min(axis=0), boxes[chosen, 2:].max(axis=0)])
            out_boxes.append(box)
            out_scores.append(float(scores[chosen[0]]))
            out_classes.append(int(cls))
            if out_masks is not None and detections.masks is not None:
                mask = detections.masks[chosen[0]]
                for other in chosen[1:]:
                    mask = mask.union(detections.masks[other])
                out_masks.append(mask)
    merged = Detections(
        np.array(out_boxes, dtype=np.float64).reshape(-1, 4),
        np.array(out_scores, dtype=np.float64),
        np.array(out_classes, dtype=np.int64),
        out_masks,
    )
    return merged.select(np.argsort(-merged.scores, kind="stable"))


def _intersection_over_smaller(boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    intersection = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    smaller = np.minimum(areas[:, None], areas[None, :])
    return np.where(smaller > 0, intersection / np.maximum(smaller, 1e-12), 0.0)
