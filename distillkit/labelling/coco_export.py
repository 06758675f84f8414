"""Teacher predictions as COCO annotations that review tools (CVAT, Label Studio) import as they are.

Every annotation carries ``score`` (the teacher's confidence, for sorting and filtering during
review), ``bbox``, ``area``, ``category_id`` and ``iscrowd: 0``. Masks are written as compressed
RLE (``mask_format="rle"``) or as polygons traced from the mask (``"polygon"``, what some tools
edit best). When a mask is present the box and area are the mask's own, so the file is
self-consistent and ``distillkit validate`` has nothing to repair; an empty mask is dropped and
the teacher's box kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from distillkit.errors import UsageError
from distillkit.labelling.types import TeacherPrediction

MASK_FORMATS = ("rle", "polygon", "none")


def check_mask_format(mask_format: str) -> str:
    if mask_format not in MASK_FORMATS:
        raise UsageError(f"mask format '{mask_format}' is unknown", f"use one of {', '.join(MASK_FORMATS)}")
    return mask_format


def _rle_object(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE: let pycocotools compress it
        from pycocotools import mask as mask_utils

        height, width = (int(v) for v in rle["size"])
        return mask_utils.frPyObjects(rle, height, width)
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def _as_json_rle(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def mask_polygons(rle: dict[str, Any]) -> list[list[float]]:
    """Outer contours of a mask as COCO polygons (flat ``[x1, y1, x2, y2, ...]``, at least 3 points each)."""
    import cv2
    from pycocotools import mask as mask_utils

    binary = np.ascontiguousarray(mask_utils.decode(_rle_object(rle)))
    contours = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def _segmentation(rle: dict[str, Any], mask_format: str) -> tuple[Any, list[float], float] | None:
    """(segmentation, bbox, area) of a mask in the asked format; None when the mask is empty."""
    from pycocotools import mask as mask_utils

    encoded = _rle_object(rle)
    if mask_format == "polygon":
        polygons = mask_polygons(rle)
        if not polygons:
            return None
        height, width = (int(v) for v in encoded["size"])
        # box and area of the polygons as drawn, which is what a reader rasterises
        encoded = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        segmentation: Any = polygons
    else:
        segmentation = _as_json_rle(encoded)
    area = float(mask_utils.area(encoded))
    if area <= 0:
        return None
    bbox = [float(v) for v in mask_utils.toBbox(encoded)]
    return segmentation, bbox, area


def class_score_vector(prediction: TeacherPrediction, index: int, num_classes: int) -> list[float]:
    """The teacher's score for every class of detection ``index`` (one-hot times its score when it has none)."""
    if prediction.class_scores is not None and prediction.class_scores.shape[1] == num_classes:
        return [float(v) for v in np.clip(prediction.class_scores[index], 0.0, 1.0)]
    vector = [0.0] * num_classes
    vector[int(prediction.class_ids[index])] = float(prediction.scores[index])
    return vector


def prediction_annotations(
    prediction: TeacherPrediction,
    image_id: int,
    category_ids: Sequence[int],
    first_id: int,
    mask_format: str = "rle",
    *,
    soft_targets: bool = False,
    source: str | None = None,
) -> list[dict[str, Any]]:
    """COCO annotations (ids from ``first_id``) for one image's detections, in the prediction's order.

    ``category_ids[i]`` is the COCO id of the teacher's class ``i``. Boxes are clipped to the image;
    a box with no area left (and no mask) is left out. With ``soft_targets`` each annotation also
    keeps ``class_scores`` (the teacher's score per class) and, with a mask, ``mask_quality``;
    ``source`` marks who made it.
    """
    annotations: list[dict[str, Any]] = []
    width, height = float(prediction.width), float(prediction.height)
    for index in range(len(prediction)):
        x1, y1, x2, y2 = (float(v) for v in prediction.boxes[index])
        x1, x2 = min(max(0.0, x1), width), min(max(0.0, x2), width)
        y1, y2 = min(max(0.0, y1), height), min(max(0.0, y2), height)
        bbox, area = [x1, y1, x2 - x1, y2 - y1], (x2 - x1) * (y2 - y1)
        segmentation = None
        if mask_format != "none" and prediction.masks is not None and prediction.masks[index]:
            found = _segmentation(prediction.masks[index], mask_format)
            if found is not None:
                segmentation, bbox, area = found
        if segmentation is None and area <= 0:
            continue
        annotation: dict[str, Any] = {
            "id": first_id + len(annotations),
            "image_id": image_id,
            "category_id": int(category_ids[int(prediction.class_ids[index])]),
            "bbox": bbox,
            "area": area,
            "iscrowd": 0,
            "score": min(1.0, max(0.0, float(prediction.scores[index]))),
        }
        if source is not None:
            annotation["source"] = source
        if soft_targets:
            annotation["class_scores"] = class_score_vector(prediction, index, len(category_ids))
        if segmentation is not None:
            annotation["segmentation"] = segmentation
            if soft_targets and prediction.mask_quality is not None:
                annotation["mask_quality"] = float(np.clip(prediction.mask_quality[index], 0.0, 1.0))
        annotations.append(annotation)
    return annotations
