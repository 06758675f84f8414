"""The SAM teacher's view of a COCO dataset: images with masks, their box prompts, reading pixels.

Only annotations with a mask take part (a box alone gives SAM nothing to learn); crowd regions are
left out, as COCO evaluation ignores them. The box prompt of an instance is its annotated box, or
the tight box of its mask when it has none.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from distillkit.data.images import ImageLocator, default_image_roots
from distillkit.data.validate import ValidationResult, load_valid_dataset
from distillkit.errors import DataError, UsageError
from distillkit.images import read_rgb as read_image_rgb
from distillkit.teachers.sam.geometry import xywh_to_xyxy


@dataclass
class SamImageRecord:
    """One image and its mask annotations (non-crowd), in annotation order."""

    image_id: int
    file_name: str
    path: Path
    width: int
    height: int
    annotations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def category_ids(self) -> list[int]:
        return [int(ann["category_id"]) for ann in self.annotations]

    def rles(self) -> list[dict[str, Any]]:
        """The masks as compressed COCO RLE (pycocotools' form, ``counts`` as bytes)."""
        return [segmentation_rle(ann["segmentation"], self.height, self.width) for ann in self.annotations]

    def masks(self) -> np.ndarray:
        """(K, H, W) uint8 masks."""
        if not self.annotations:
            return np.zeros((0, self.height, self.width), dtype=np.uint8)
        decoded = decode_rles(self.rles())
        return np.ascontiguousarray(decoded.transpose(2, 0, 1))

    def prompt_boxes(self) -> np.ndarray:
        """(K, 4) xyxy pixel boxes: the annotated box, else the tight box of the mask (from its RLE)."""
        boxes = np.zeros((len(self.annotations), 4), dtype=np.float32)
        for index, ann in enumerate(self.annotations):
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0):
                bbox = mask_utils.toBbox(segmentation_rle(ann["segmentation"], self.height, self.width)).tolist()
            boxes[index] = xywh_to_xyxy(np.asarray(bbox, dtype=np.float32))[0]
        return boxes


def segmentation_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """A COCO segmentation (polygon parts, RLE with list or string counts) as one compressed RLE."""
    if isinstance(segmentation, list):
        parts = segmentation if segmentation and isinstance(segmentation[0], list) else [segmentation]
        return mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
    if isinstance(segmentation, dict):
        counts = segmentation.get("counts")
        if isinstance(counts, list):
            return mask_utils.frPyObjects(segmentation, height, width)
        if isinstance(counts, str):
            return {"size": list(segmentation["size"]), "counts": counts.encode("utf-8")}
        return dict(segmentation)
    raise DataError(f"unsupported segmentation of type {type(segmentation).__name__}", "use polygons or COCO RLE")


def decode_rles(rles: list[dict[str, Any]]) -> np.ndarray:
    """(H, W, K) uint8 masks from compressed RLEs."""
    with warnings.catch_warnings():
        # pycocotools <= 2.0.11 under numpy 2 warns about ``__array__(copy=...)`` on every decode.
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return np.asarray(mask_utils.decode(rles), dtype=np.uint8)


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """(K, H, W) binary masks -> COCO RLE dicts with ``counts`` as str (JSON-ready)."""
    if len(masks) == 0:
        return []
    fortran = np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0))
    encoded = mask_utils.encode(fortran)
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def _has_mask(ann: dict[str, Any]) -> bool:
    seg = ann.get("segmentation")
    return seg not in (None, [], {}, [[]])


def load_split(
    source: ValidationResult | str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None
) -> tuple[ValidationResult, list[Path]]:
    """A validated dataset and the folders its images are looked up in."""
    if isinstance(source, ValidationResult):
        result = source
        origin = result.report.source
    else:
        result = load_valid_dataset(Path(source))
        origin = str(source)
    if images_dir is not None:
        roots = [Path(images_dir)]
    elif origin:
        roots = default_image_roots(Path(origin))
    else:
        raise UsageError("a dataset given as a dict has no folder to find its images in", "pass images_dir")
    return result, roots


def mask_records(
    result: ValidationResult, roots: list[Path], name: str = "the dataset", require_masks: bool = True
) -> list[SamImageRecord]:
    """One record per image holding at least one non-crowd mask annotation (or every image when
    ``require_masks`` is False), with the image file located under ``roots``."""
    dataset = result.dataset
    if dataset is None:
        raise DataError(f"{name} could not be read as COCO", "run 'distillkit validate' on it")
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in dataset.get("annotations", []):
        if int(ann.get("iscrowd", 0) or 0) == 1 or not _has_mask(ann):
            continue
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    locator = ImageLocator(roots)
    records: list[SamImageRecord] = []
    for image in dataset.get("images", []):
        image_id = int(image["id"])
        annotations = by_image.get(image_id, [])
        if require_masks and not annotations:
            continue
        path = locator.resolve(str(image["file_name"]))
        if path is None:
            shown = ", ".join(str(root) for root in roots)
            raise DataError(
                f"image {image['file_name']!r} of {name} was not found under {shown}",
                "pass --images-dir with the folder holding the images",
            )
        records.append(
            SamImageRecord(
                image_id, str(image["file_name"]), path, int(image["width"]), int(image["height"]), annotations
            )
        )
    if require_masks and not records:
        raise DataError(
            f"{name} has no mask annotations, so there is nothing to train or score SAM on",
            "masks call for the SAM teacher; box-only data trains Grounding DINO",
        )
    return records


def read_rgb(path: Path, width: int | None = None, height: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels as displayed (``distillkit.images``: EXIF orientation applied).

    With ``width`` and ``height`` (the annotations' size), a file of another displayed size is a
    ``DataError``: the masks would not lie on the pixels.
    """
    expected = (width, height) if width is not None and height is not None else None
    return read_image_rgb(path, expect_size=expected)
