"""Detections in COCO results format, checked and made ready for ``COCO.loadRes``.

Two traps of real evaluation pipelines are handled here, once:
- mask evaluation must use mask areas: pycocotools' ``loadRes`` takes a result's area from its
  ``bbox`` when one is present, so for ``segm`` the boxes are dropped (detectron2 does the same);
- polygons are converted to RLE with the image size, since ``loadRes`` only computes areas of RLE.
Results are matched to ground-truth images by ``image_id`` when present, else by ``file_name``
(what ``distillkit infer`` writes for images that are not in a COCO file).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from distillkit.data.masks import compressed_counts_ok
from distillkit.errors import DataError
from distillkit.io import read_json


def load_predictions(source: str | Path | list[Any]) -> list[dict[str, Any]]:
    """Read a results file (a JSON array); a non-array is a data error."""
    data = read_json(source) if isinstance(source, (str, Path)) else source
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]  # a COCO-style file holding detections with scores
    if not isinstance(data, list):
        raise DataError(
            f"{source} is not a list of detections (COCO results format)",
            "give a JSON array of {image_id, category_id, bbox, score[, segmentation]}",
        )
    return data


def prepare_predictions(
    predictions: list[Any], gt: dict[str, Any], min_score: float = 0.0
) -> tuple[list[dict[str, Any]], list[str]]:
    """Normalise detections against the ground truth; return (detections, warnings).

    Detections for images the ground truth does not hold are left out with a warning counting them
    (pycocotools ignores them too: predictions over a whole folder scored on its test split); when no
    detection is for a ground-truth image, that is a ``DataError`` (the wrong --data). Raises
    ``DataError`` (naming the entry) for detections that cannot be scored: unknown category, missing
    score, malformed image reference, box or mask.
    """
    images = {image["id"]: image for image in gt["images"]}
    by_name: dict[str, int] = {}
    for image in gt["images"]:
        name = str(image.get("file_name", "")).replace("\\", "/")
        by_name.setdefault(name, image["id"])
        by_name.setdefault(name.rsplit("/", 1)[-1], image["id"])
    categories = {category["id"] for category in gt["categories"]}
    names = {category["name"]: category["id"] for category in gt["categories"]}

    prepared: list[dict[str, Any]] = []
    below = 0
    unknown: list[str] = []  # why each detection for an image outside the ground truth was left out
    for position, entry in enumerate(predictions):
        where = f"detection #{position}"
        if not isinstance(entry, dict):
            raise DataError(f"{where} is not an object", "each detection is {image_id, category_id, bbox, score}")
        image_id = _image_id(entry, images, by_name, where)
        if isinstance(image_id, str):
            unknown.append(image_id)
            continue
        category_id = _category_id(entry, categories, names, where)
        score = entry.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataError(f"{where} has no usable score ({score!r})", "every detection needs a numeric score")
        if score < min_score:
            below += 1
            continue
        detection: dict[str, Any] = {"image_id": image_id, "category_id": category_id, "score": float(score)}
        bbox = entry.get("bbox")
        if bbox is not None and bbox != []:
            if (
                not isinstance(bbox, list)
                or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
            ):
                raise DataError(f"{where} has a malformed bbox {bbox!r}", "use [x, y, width, height] in pixels")
            detection["bbox"] = [float(v) for v in bbox]
        segmentation = entry.get("segmentation")
        if segmentation not in (None, [], {}):
            image = images[image_id]
            detection["segmentation"] = _as_rle(segmentation, int(image["height"]), int(image["width"]), where)
        if "bbox" not in detection and "segmentation" not in detection:
            raise DataError(f"{where} has neither a bbox nor a segmentation", "give at least a box")
        prepared.append(detection)
    if unknown and len(unknown) == len(predictions):
        raise DataError(
            f"none of the {len(unknown)} detections is for an image of the ground truth: {unknown[0]}",
            "evaluate against the annotation file the predictions were made for (check --data)",
        )
    warnings = []
    if unknown:
        warnings.append(
            f"{len(unknown)} detections are for images not in the ground truth and were left out (e.g. {unknown[0]})"
        )
    if below:
        warnings.append(f"{below} detections below --min-score {min_score} were left out")
    return prepared, warnings


def for_iou_type(detections: list[dict[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    """The detections as ``loadRes`` must see them for one iou type (copies; ids assigned)."""
    out = []
    for index, detection in enumerate(detections, start=1):
        item = {k: v for k, v in detection.items() if k != "bbox" or iou_type == "bbox"}
        if iou_type == "bbox":
            item.pop("segmentation", None)
            if "bbox" not in item:  # a mask-only detection: its box is the mask's tight box
                item["bbox"] = mask_utils.toBbox(detection["segmentation"]).tolist()
        elif "segmentation" not in item:
            continue  # a box-only detection has nothing to score as a mask
        item["id"] = index
        out.append(item)
    return out


def _image_id(entry: dict[str, Any], images: dict[int, Any], by_name: dict[str, int], where: str) -> int | str:
    """The ground-truth image id of a detection; a text saying so when its image is not in the ground truth."""
    raw = entry.get("image_id")
    if raw is not None:
        image_id = raw
        if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            image_id = int(raw)
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise DataError(f"{where} has image_id {raw!r}, which is not an integer", "use the images' COCO ids")
        if image_id in images:
            return image_id
        return f"{where} refers to image_id {raw!r}, which is not in the ground truth"
    name = entry.get("file_name")
    if isinstance(name, str):
        normalised = name.replace("\\", "/")
        for key in (normalised, normalised.rsplit("/", 1)[-1]):
            if key in by_name:
                return by_name[key]
        return f"{where} is for file {name!r}, which is not in the ground truth"
    raise DataError(f"{where} has neither image_id nor file_name", "every detection must name its image")


def _category_id(entry: dict[str, Any], categories: set[int], names: dict[str, int], where: str) -> int:
    raw = entry.get("category_id")
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in categories:
        return raw
    name = entry.get("category_name")
    if raw is None and isinstance(name, str) and name in names:
        return names[name]
    raise DataError(
        f"{where} has category_id {entry.get('category_id')!r}, which is not a ground-truth category",
        "predictions must use the dataset's category ids",
    )


def _as_rle(segmentation: Any, height: int, width: int, where: str) -> dict[str, Any]:
    try:
        if isinstance(segmentation, list):
            parts = segmentation if segmentation and isinstance(segmentation[0], list) else [segmentation]
            parts = [p for p in parts if len(p) >= 6 and len(p) % 2 == 0]
            if not parts:
                raise ValueError("no polygon with at least 3 points")
            rle = mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
            rle = {"size": list(segmentation["size"]), "counts": segmentation["counts"].encode()}
            if not compressed_counts_ok(rle["counts"]):
                raise ValueError("counts string is not COCO's RLE encoding")
        else:
            raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")
        if list(rle["size"]) != [height, width]:
            raise ValueError(f"mask size {rle['size']} differs from the image's {[height, width]}")
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise DataError(f"{where} has an unusable segmentation ({exc})", "use polygons or COCO RLE") from exc
    counts = rle["counts"]
    return {"size": [height, width], "counts": counts.decode() if isinstance(counts, bytes) else counts}
