"""Check a COCO dataset, repair what can be repaired, and say what it contains.

``validate_dataset`` reads every shape real annotation tools write (CVAT, Label Studio, Roboflow,
labelme2coco, COCO-Annotator, panopticapi): polygons with several parts, RLE with list or
compressed string counts, crowd regions, ids from 0 or 1 or with gaps, string-typed numbers.
It returns the findings (aggregated per code, with the ids involved), the repaired dataset
(bbox/area from the masks where missing or inconsistent, numbers as numbers) and a
``DatasetInfo``. The input file is never modified.

The pass is built for COCO-sized files: one loop over the annotations for structure, one batched
pycocotools pass for every mask's box and area (see ``masks.py``), and numpy for the comparisons.
"""

from __future__ import annotations

import copy
import gc
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.data.images import ImageLocator, default_image_roots, safe_relative_parts
from distillkit.data.info import CategoryInfo, DatasetInfo
from distillkit.data.issues import DROPPABLE_ANNOTATION_CODES, Issue, IssueCollector, short_repr
from distillkit.data.masks import (
    MaskJob,
    decode_compressed_counts,
    mask_boxes_and_areas,
    polygon_problems,
    uncompressed_rle,
)
from distillkit.errors import DataError
from distillkit.images import image_header
from distillkit.io import read_json
from distillkit.progress import NULL_PROGRESS, Progress

# A stored bbox edge may differ from the mask's tight box by this much before it is "inconsistent":
# rasterisation moves edges by up to a pixel, and COCO's own ground truth stores polygon extents.
BBOX_TOLERANCE_PX = 2.0
BBOX_TOLERANCE_REL = 0.10
# Area tolerance: COCO stores polygon areas, pycocotools counts pixels; small objects differ most.
AREA_TOLERANCE_PX = 10.0
AREA_TOLERANCE_REL = 0.20
# Boxes may overshoot the border by float noise; beyond this they are clipped and reported.
CLIP_TOLERANCE_PX = 0.5

# pycocotools stores RLE counts as uint32 and sizes must fit them; larger images are not masks it can hold.
MAX_IMAGE_SIDE = 65_535
# Vertices of one annotation's polygons, all parts together. Real masks traced pixel by pixel around an
# object of a 4K image have a few thousand; 250k keeps the numpy checks and pycocotools' per-vertex
# arrays of one annotation in tens of MB. (Its outline length is bounded too: masks.MAX_OUTLINE_POINTS.)
MAX_ANNOTATION_VERTICES = 250_000

_TRUE_STRINGS = {"1", "true", "yes"}
_FALSE_STRINGS = {"0", "false", "no", ""}
_PROGRESS_STEP = 20_000


@dataclass
class ValidationReport:
    """What ``validate`` found. ``valid`` is True when there is no error (warnings allowed)."""

    source: str | None
    num_images: int
    num_annotations: int
    info: DatasetInfo
    generated: dict[str, int]
    replaced: dict[str, int]
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    images_checked: bool = False
    images_found: int = 0

    @property
    def valid(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "source": self.source,
            "num_images": self.num_images,
            "num_annotations": self.num_annotations,
            "num_empty_images": self.info.num_empty_images,
            "num_categories": len(self.info.categories),
            "mode": self.info.mode,
            "has_boxes": self.info.has_boxes,
            "has_masks": self.info.has_masks,
            "categories": [
                {"id": c.id, "name": c.name, "annotations": c.annotations, "images": c.images}
                for c in self.info.categories
            ],
            "generated": dict(self.generated),
            "replaced": dict(self.replaced),
            "images_checked": self.images_checked,
            "images_found": self.images_found,
            "errors": [issue.to_dict() for issue in self.errors],
            "warnings": [issue.to_dict() for issue in self.warnings],
        }


@dataclass
class ValidationResult:
    report: ValidationReport
    dataset: dict[str, Any] | None  # the repaired COCO dict; None when the structure is unusable

    @property
    def info(self) -> DatasetInfo:
        return self.report.info


# --------------------------------------------------------------------------------------------
# value coercion: (value, coerced?) — None when the value cannot mean a number
# --------------------------------------------------------------------------------------------


_INT64 = 2**63
_FLOAT_MAX_INT = 2**1023  # below the largest float, so float() cannot overflow


def _as_int(value: Any) -> tuple[int | None, bool]:
    """An id-like integer (within int64, as JSON tools and numpy can hold it)."""
    kind = type(value)
    if kind is int:
        return (value, False) if -_INT64 <= value < _INT64 else (None, False)
    if kind is float:
        if math.isfinite(value) and value == int(value) and abs(value) < _INT64:
            return int(value), True
        return None, False
    if kind is str:
        text = value.strip()
        if text.lstrip("-").isdigit() and len(text) <= 19:
            number = int(text)
            return (number, True) if -_INT64 <= number < _INT64 else (None, False)
        return None, False
    return None, False  # bool, None, containers


def _as_float(value: Any) -> tuple[float | None, bool]:
    kind = type(value)
    if kind is float:
        return (value, False) if math.isfinite(value) else (None, False)
    if kind is int:
        # Integers beyond float range arrive through Python's json (orjson refuses them): not a usable number.
        return (float(value), False) if -_FLOAT_MAX_INT < value < _FLOAT_MAX_INT else (None, False)
    if kind is str:
        try:
            number = float(value.strip())
        except ValueError:
            return None, False
        return (number, True) if math.isfinite(number) else (None, False)
    return None, False


def _as_crowd(value: Any) -> tuple[int | None, bool]:
    if value is None:
        return 0, False
    kind = type(value)
    if kind is int:
        return (value, False) if value in (0, 1) else (None, False)
    if kind is bool:
        return int(value), True
    if kind is str:
        text = value.strip().lower()
        if text in _TRUE_STRINGS:
            return 1, True
        if text in _FALSE_STRINGS:
            return 0, True
    if kind is float and value in (0.0, 1.0):
        return int(value), True
    return None, False


def _parse_bbox(value: Any) -> tuple[list[float] | None, bool]:
    """A [x, y, w, h] of finite numbers with w, h > 0; (None, _) when unusable."""
    if type(value) is not list or len(value) != 4:
        return None, False
    coerced = False
    out = []
    for item in value:
        number, was_coerced = _as_float(item)
        if number is None:
            return None, False
        coerced |= was_coerced
        out.append(number)
    if out[2] <= 0 or out[3] <= 0:
        return None, coerced
    return out, coerced


def _is_empty_segmentation(seg: Any) -> bool:
    return seg is None or seg == [] or seg == {} or seg == [[]]


# --------------------------------------------------------------------------------------------
# the validator
# --------------------------------------------------------------------------------------------


@dataclass
class _Image:
    width: int | None
    height: int | None
    file_name: str | None
    entry: dict[str, Any]  # the image's dict in the dataset, for repairs


@dataclass
class _KeptAnnotations:
    """The annotations that passed the per-annotation checks, split by what repairs them next."""

    valid: list[dict[str, Any]] = field(default_factory=list)
    mask_anns: list[dict[str, Any]] = field(default_factory=list)
    mask_jobs: list[MaskJob] = field(default_factory=list)
    mask_bboxes: list[list[float] | None] = field(default_factory=list)  # parsed stored bbox of each mask annotation
    box_only: list[tuple[dict[str, Any], _Image]] = field(default_factory=list)
    has_boxes: bool = False  # some annotation stored a usable bbox


class _Validator:
    def __init__(
        self,
        data: Any,
        source: Path | None,
        images_dir: Path | None,
        min_per_class: int,
        check_images: bool,
        drop_invalid: bool,
        replace_inconsistent: bool,
        progress: Progress,
    ) -> None:
        self.drop_invalid = drop_invalid
        self.replace_inconsistent = replace_inconsistent
        self.data = data
        self.source = source
        self.images_dir = images_dir
        self.min_per_class = min_per_class
        self.check_images = check_images
        self.progress = progress
        self.issues = IssueCollector()
        self.generated = {"bbox": 0, "area": 0, "image_size": 0}
        self.replaced = {"bbox": 0, "area": 0, "clipped_bbox": 0}
        self.images: dict[int, _Image] = {}
        self.categories: dict[int, str] = {}
        self.category_entries: dict[int, dict[str, Any]] = {}  # the accepted category dicts, in file order
        self.images_checked = False
        self.images_found = 0

    # -- top level ---------------------------------------------------------------------------

    def run(self) -> ValidationResult:
        data = self.data
        if type(data) is not dict:
            self.issues.add("structure", None, f"the top level is a JSON {type(data).__name__}, not an object")
            return self._result(None, [], [])
        lists = {}
        for key in ("images", "annotations", "categories"):
            value = data.get(key)
            if type(value) is not list:
                what = "missing" if value is None else f"a {type(value).__name__}, not a list"
                self.issues.add("structure", None, f"'{key}' is {what}")
            else:
                lists[key] = value
        if len(lists) < 3:
            return self._result(None, [], [])
        if not lists["images"]:
            self.issues.add("structure", None, "'images' is empty: there is nothing to train on")

        self._check_categories(lists["categories"])
        self._check_images(lists["images"])
        if self.check_images:
            self._check_image_files()
        self._report_unknown_sizes()
        stats = self._check_annotations(lists["annotations"])
        kept_categories = self._check_category_names(stats)
        data["categories"] = kept_categories
        data["annotations"] = stats["valid_annotations"]  # what failed a check is left out
        return self._result(data, kept_categories, stats)

    def _result(self, dataset: dict[str, Any] | None, categories: list[Any], stats: Any) -> ValidationResult:
        issues = self.issues.issues(DROPPABLE_ANNOTATION_CODES if self.drop_invalid else frozenset())
        num_images = len(self.images)
        num_annotations = len(stats["valid_annotations"]) if stats else 0
        category_infos: tuple[CategoryInfo, ...] = ()
        num_empty = num_images
        has_boxes = has_masks = False
        if stats:
            per_category_annotations: Counter[int] = stats["category_annotations"]
            per_category_images: Counter[int] = stats["category_images"]
            category_infos = tuple(
                CategoryInfo(
                    id=c["id"],
                    name=c["name"],
                    annotations=per_category_annotations.get(c["id"], 0),
                    images=per_category_images.get(c["id"], 0),
                )
                for c in sorted(categories, key=lambda c: c["id"])
            )
            num_empty = num_images - stats["annotated_images"]
            has_boxes, has_masks = stats["has_boxes"], stats["has_masks"]
        info = DatasetInfo(
            num_images=num_images,
            num_annotations=num_annotations,
            categories=category_infos,
            has_boxes=has_boxes,
            has_masks=has_masks,
            num_empty_images=num_empty,
        )
        report = ValidationReport(
            source=str(self.source) if self.source else None,
            num_images=num_images,
            num_annotations=num_annotations,
            info=info,
            generated=self.generated,
            replaced=self.replaced,
            errors=[i for i in issues if i.severity == "error"],
            warnings=[i for i in issues if i.severity == "warning"],
            images_checked=self.images_checked,
            images_found=self.images_found,
        )
        return ValidationResult(report=report, dataset=dataset)

    # -- categories ----------------------------------------------------------------------------

    def _check_categories(self, categories: list[Any]) -> None:
        for position, category in enumerate(categories):
            if type(category) is not dict:
                self.issues.add("invalid_category", f"#{position}", f"entry #{position} is not an object")
                continue
            category_id, coerced = _as_int(category.get("id"))
            name = category.get("name")
            if category_id is None or type(name) is not str or not name.strip():
                self.issues.add("invalid_category", category.get("id", f"#{position}"))
                continue
            if coerced:
                self.issues.add("coerced_value", None, f"category id {short_repr(category.get('id'))}")
                category["id"] = category_id
            if category_id in self.categories:
                self.issues.add("duplicate_category_id", category_id)
                continue
            self.categories[category_id] = name
            self.category_entries[category_id] = category

    def _check_category_names(self, stats: dict[str, Any]) -> list[Any]:
        """Duplicate names, unused categories, rare classes; drops unused duplicate placeholders."""
        used = stats["category_annotations"]
        by_name: dict[str, list[int]] = {}
        for category_id, name in self.categories.items():
            by_name.setdefault(name.strip(), []).append(category_id)
        dropped: set[int] = set()
        for ids in by_name.values():
            if len(ids) < 2:
                continue
            used_ids = [i for i in ids if used.get(i, 0) > 0]
            if len(used_ids) > 1:
                for category_id in ids:
                    self.issues.add("duplicate_category_name", category_id)
            elif len(used_ids) == 1:
                for category_id in ids:
                    if category_id not in used_ids:
                        self.issues.add("placeholder_category", category_id)
                        dropped.add(category_id)
        for category_id in self.categories:
            if category_id in dropped:
                continue
            count = used.get(category_id, 0)
            if count == 0:
                self.issues.add("unused_category", category_id)
            elif count < self.min_per_class:
                self.issues.add("class_below_min", category_id, f"{self.categories[category_id]}: {count}")
        return [entry for category_id, entry in self.category_entries.items() if category_id not in dropped]

    # -- images -------------------------------------------------------------------------------

    def _check_images(self, images: list[Any]) -> None:
        for position, image in enumerate(images):
            if type(image) is not dict:
                self.issues.add("invalid_image", f"#{position}", f"entry #{position} is not an object")
                continue
            image_id, coerced_id = _as_int(image.get("id"))
            if image_id is None:
                self.issues.add(
                    "invalid_image", f"#{position}", f"entry #{position} has id {short_repr(image.get('id'))}"
                )
                continue
            if coerced_id:
                self.issues.add("coerced_value", None, f"image id {short_repr(image.get('id'))}")
                image["id"] = image_id
            if image_id in self.images:
                self.issues.add("duplicate_image_id", image_id)
                continue
            width, coerced_w = _as_int(image.get("width"))
            height, coerced_h = _as_int(image.get("height"))
            if coerced_w or coerced_h:
                self.issues.add("coerced_value", None, f"image {image_id} width/height")
                if width is not None:
                    image["width"] = width
                if height is not None:
                    image["height"] = height
            if width is not None and not 0 < width <= MAX_IMAGE_SIDE:
                width = None
            if height is not None and not 0 < height <= MAX_IMAGE_SIDE:
                height = None
            file_name = image.get("file_name")
            if type(file_name) is not str or not file_name:
                self.issues.add("invalid_image", image_id, f"image {image_id} has no file_name")
                file_name = None
            elif safe_relative_parts(file_name) is None:
                self.issues.add("unsafe_file_name", image_id, short_repr(file_name))
                file_name = None
            self.images[image_id] = _Image(width, height, file_name, image)
        # Images whose size is still unknown after the file checks are reported then.

    def _check_image_files(self) -> None:
        source_for_roots = self.source if self.source is not None else Path.cwd() / "dataset.json"
        locator = ImageLocator(default_image_roots(source_for_roots, self.images_dir))
        resolved: dict[int, Path | None] = {}
        with self.progress.task("locating image files", total=len(self.images)) as task:
            for count, (image_id, image) in enumerate(self.images.items(), 1):
                resolved[image_id] = locator.resolve(image.file_name) if image.file_name else None
                if count % _PROGRESS_STEP == 0:
                    task.advance(_PROGRESS_STEP)
            task.advance(len(self.images) % _PROGRESS_STEP)
        self.images_found = sum(path is not None for path in resolved.values())
        if self.images_found == 0:
            if self.images:
                self.issues.add("images_not_found", None)
            return
        self.images_checked = True
        with self.progress.task("reading image headers", total=len(self.images)) as task:
            for image_id, path in resolved.items():
                task.advance()
                image = self.images[image_id]
                if path is None:
                    if image.file_name is not None:
                        self.issues.add("image_file_missing", image_id, image.file_name)
                    continue
                try:
                    header = image_header(path)
                except DataError:
                    self.issues.add("image_unreadable", image_id, str(path.name))
                    continue
                # Sizes are compared as displayed (EXIF orientation applied), the frame that annotation
                # tools draw in and that every distillkit reader and ultralytics read (distillkit.images).
                if image.width is None or image.height is None:
                    image.width, image.height = header.width, header.height
                    image.entry["width"], image.entry["height"] = header.width, header.height
                    self.generated["image_size"] += 1
                elif header.size != (image.width, image.height):
                    shown = f"file {header.width}x{header.height}"
                    if header.size != header.stored_size:
                        shown += (
                            f" as displayed (stored {header.stored_width}x{header.stored_height}, "
                            f"EXIF orientation {header.orientation})"
                        )
                    self.issues.add(
                        "image_size_mismatch", image_id, f"{path.name}: {shown}, JSON {image.width}x{image.height}"
                    )

    def _report_unknown_sizes(self) -> None:
        for image_id, image in self.images.items():
            if image.width is None or image.height is None:
                self.issues.add("invalid_image", image_id, f"image {image_id} has no usable width/height")

    # -- annotations ----------------------------------------------------------------------------

    def _check_annotations(self, annotations: list[Any]) -> dict[str, Any]:
        seen_ids: set[int] = set()
        kept = _KeptAnnotations()
        with self.progress.task("checking annotations", total=len(annotations)) as task:
            for position, ann in enumerate(annotations):
                if position % _PROGRESS_STEP == 0 and position:
                    task.advance(_PROGRESS_STEP)
                self._check_annotation(ann, position, seen_ids, kept)
            task.advance(len(annotations) - _PROGRESS_STEP * max(0, (len(annotations) - 1) // _PROGRESS_STEP))

        removed = self._repair_from_masks(kept.mask_anns, kept.mask_jobs, kept.mask_bboxes)
        self._repair_box_only(kept.box_only, removed)
        valid = kept.valid
        if removed:
            valid = [ann for ann in valid if id(ann) not in removed]
        return _annotation_stats(valid, kept.has_boxes, has_masks=len(kept.mask_anns) > len(removed))

    def _check_annotation(self, ann: Any, position: int, seen_ids: set[int], kept: _KeptAnnotations) -> None:
        """One annotation's checks, in order; what passes them is added to ``kept`` for the repairs."""
        if type(ann) is not dict:
            self.issues.add("invalid_annotation", f"#{position}", f"entry #{position} is not an object")
            return
        ids = self._annotation_ids(ann, position)
        if ids is None:
            return
        ann_id, image_id, category_id = ids
        image = self._referenced_image(ann_id, image_id, category_id, seen_ids)
        if image is None or not self._check_crowd(ann, ann_id):
            return
        if image.width is None or image.height is None:
            return  # already reported as an invalid image; geometry cannot be checked
        bbox = self._annotation_bbox(ann, ann_id)
        if bbox is not None:
            kept.has_boxes = True
        self._keep_by_geometry(ann, ann_id, image_id, image, bbox, kept)

    def _annotation_ids(self, ann: dict[str, Any], position: int) -> tuple[int, int, int] | None:
        """The annotation's (id, image_id, category_id) as integers; None (reported) when one is unusable."""
        ann_id, image_id, category_id = ann.get("id"), ann.get("image_id"), ann.get("category_id")
        if type(ann_id) is int and type(image_id) is int and type(category_id) is int:
            return ann_id, image_id, category_id
        ann_id, coerced = _as_int(ann_id)
        image_id, coerced_image = _as_int(image_id)
        category_id, coerced_category = _as_int(category_id)
        if ann_id is None or image_id is None or category_id is None:
            self.issues.add("invalid_annotation", ann.get("id", f"#{position}"))
            return None
        if coerced or coerced_image or coerced_category:
            ann["id"], ann["image_id"], ann["category_id"] = ann_id, image_id, category_id
            self.issues.add("coerced_value", ann_id)
        return ann_id, image_id, category_id

    def _referenced_image(self, ann_id: int, image_id: int, category_id: int, seen_ids: set[int]) -> _Image | None:
        """The image of an annotation with a new id, a known image and a known category; None (reported) if not."""
        if ann_id in seen_ids:
            self.issues.add("duplicate_annotation_id", ann_id)
            return None
        seen_ids.add(ann_id)
        image = self.images.get(image_id)
        if image is None:
            self.issues.add("missing_image", ann_id, f"annotation {ann_id} → image {image_id}")
            return None
        if category_id not in self.categories:
            self.issues.add("missing_category", ann_id, f"annotation {ann_id} → category {category_id}")
            return None
        return image

    def _check_crowd(self, ann: dict[str, Any], ann_id: int) -> bool:
        """Whether ``iscrowd`` is 0 or 1 (stored as an int when it meant one); False (reported) if not."""
        crowd = ann.get("iscrowd")
        if type(crowd) is int and (crowd == 0 or crowd == 1):
            return True
        crowd, coerced_crowd = _as_crowd(crowd)
        if crowd is None:
            self.issues.add("invalid_iscrowd", ann_id, short_repr(ann.get("iscrowd")))
            return False
        if coerced_crowd:
            self.issues.add("coerced_value", ann_id)
        ann["iscrowd"] = crowd
        return True

    def _annotation_bbox(self, ann: dict[str, Any], ann_id: int) -> list[float] | None:
        """The stored bbox when usable (stored as numbers when it held text); None when absent or unusable."""
        bbox_value = ann.get("bbox")
        if bbox_value is None:
            return None
        bbox, coerced_bbox = _parse_bbox(bbox_value)
        if bbox is not None and coerced_bbox:
            ann["bbox"] = bbox
            self.issues.add("coerced_value", ann_id)
        return bbox

    def _keep_by_geometry(
        self,
        ann: dict[str, Any],
        ann_id: int,
        image_id: int,
        image: _Image,
        bbox: list[float] | None,
        kept: _KeptAnnotations,
    ) -> None:
        """Keep the annotation with its mask, or as a box only; report it when it has neither."""
        job = self._mask_job(ann, ann_id, image_id, image, len(kept.mask_jobs))
        if job is False:
            return  # malformed mask, reported
        if job is None:
            if bbox is None:
                bbox_value = ann.get("bbox")  # as stored: an unusable bbox is never rewritten
                if bbox_value is None or bbox_value == []:
                    self.issues.add("no_geometry", ann_id)
                else:
                    self.issues.add("invalid_bbox", ann_id, f"annotation {ann_id}: {short_repr(bbox_value)}")
                return
            kept.box_only.append((ann, image))
        else:
            kept.mask_anns.append(ann)
            kept.mask_jobs.append(job)
            kept.mask_bboxes.append(bbox)
        kept.valid.append(ann)

    def _mask_job(
        self, ann: dict[str, Any], ann_id: int, image_id: int, image: _Image, index: int
    ) -> MaskJob | bool | None:
        """MaskJob for the annotation's segmentation; None when it has none; False when malformed."""
        seg = ann.get("segmentation")
        if _is_empty_segmentation(seg):
            return None
        height, width = image.height or 0, image.width or 0
        if type(seg) is list:
            first = seg[0]
            if type(first) in (int, float):
                # A single polygon written flat ([x1, y1, x2, ...]) instead of [[...]].
                seg = [seg]
                ann["segmentation"] = seg
                self.issues.add("coerced_value", ann_id)
            parts = []
            values = 0
            for part in seg:
                if type(part) is not list or len(part) < 6 or len(part) % 2:
                    if type(part) is list and not part:
                        continue  # an empty part next to real ones: harmless
                    size = f"{len(part)} values" if type(part) is list else f"a {type(part).__name__}"
                    self.issues.add(
                        "invalid_polygon", ann_id, f"annotation {ann_id} (image {image_id}): a part of {size}"
                    )
                    return False
                parts.append(part)
                values += len(part)
            if not parts:
                return None
            if values > 2 * MAX_ANNOTATION_VERTICES:  # refused before numpy or pycocotools allocate per vertex
                self.issues.add(
                    "polygon_too_large",
                    ann_id,
                    f"annotation {ann_id} (image {image_id}): {values // 2:,} vertices, "
                    f"over the limit of {MAX_ANNOTATION_VERTICES:,}",
                )
                return False
            if len(parts) != len(seg):
                ann["segmentation"] = parts
            return MaskJob(index=index, height=height, width=width, parts=parts)
        if type(seg) is dict:
            return self._rle_job(seg, f"annotation {ann_id} (image {image_id})", ann_id, height, width, index)
        self.issues.add("invalid_segmentation", ann_id, f"annotation {ann_id}: {type(seg).__name__}")
        return False

    def _rle_job(
        self, seg: dict[str, Any], where: str, ann_id: int, height: int, width: int, index: int
    ) -> MaskJob | bool:
        """Only an RLE whose size is the image's and whose counts cover it exactly reaches pycocotools."""
        size = seg.get("size")
        counts = seg.get("counts")
        if type(size) is not list or len(size) != 2 or not all(type(v) is int for v in size):
            self.issues.add("invalid_rle", ann_id, f"{where}: size {short_repr(size)}")
            return False
        if size != [height, width]:
            self.issues.add("rle_size_mismatch", ann_id, f"{where}: RLE {size[0]}x{size[1]}, image {height}x{width}")
            return False
        if type(counts) is list:
            if not all(type(v) is int and v >= 0 for v in counts) or sum(counts) != height * width:
                self.issues.add("invalid_rle", ann_id, f"{where}: counts do not sum to {height}x{width}")
                return False
            return MaskJob(index=index, height=height, width=width, rle=uncompressed_rle(seg))
        if type(counts) is str and counts:
            encoded = counts.encode("utf-8", "replace")
            runs = decode_compressed_counts(encoded)
            if runs is None:
                self.issues.add("invalid_rle", ann_id, f"{where}: counts string is not COCO's RLE encoding")
                return False
            if int(runs.sum()) != height * width:
                self.issues.add(
                    "invalid_rle",
                    ann_id,
                    f"{where}: counts string covers {int(runs.sum()):,} pixels, not {height}x{width}",
                )
                return False
            return MaskJob(index=index, height=height, width=width, rle={"size": size, "counts": encoded})
        self.issues.add("invalid_rle", ann_id, f"{where}: counts of type {type(counts).__name__}")
        return False

    def _repair_from_masks(
        self, anns: list[dict[str, Any]], jobs: list[MaskJob], stored_bboxes: list[list[float] | None]
    ) -> set[int]:
        """Fill or fix bbox/area from the masks; return ids (``id(ann)``) of annotations rejected here.

        Vectorised over all mask annotations; only the annotations that change are visited.
        """
        removed: set[int] = set()
        if not jobs:
            return removed
        # Polygons pycocotools cannot safely rasterise are reported and left out before it sees them.
        refused = polygon_problems(jobs)
        if refused:
            for row, reason in refused.items():
                ann = anns[row]
                code = "polygon_too_large" if reason.startswith("an outline") else "invalid_polygon"
                self.issues.add(code, ann["id"], f"annotation {ann['id']} (image {ann['image_id']}): {reason}")
                removed.add(id(ann))
            kept = [row for row in range(len(jobs)) if row not in refused]
            anns = [anns[row] for row in kept]
            jobs = [jobs[row] for row in kept]
            stored_bboxes = [stored_bboxes[row] for row in kept]
            if not jobs:
                return removed
        boxes, areas = mask_boxes_and_areas(jobs, progress=self.progress, checked=True)
        nan_box = [math.nan] * 4
        stored = np.array([b if b is not None else nan_box for b in stored_bboxes], dtype=np.float64)
        has_bbox = ~np.isnan(stored[:, 0])
        area_present = np.fromiter(("area" in ann for ann in anns), dtype=bool, count=len(anns))
        stored_area = np.fromiter((_area_value(ann) for ann in anns), dtype=np.float64, count=len(anns))
        has_area = ~np.isnan(stored_area)

        # A stored box "disagrees" when one of its edges is further than the tolerance from the mask's.
        tolerance = np.maximum(BBOX_TOLERANCE_PX, BBOX_TOLERANCE_REL * np.tile(boxes[:, 2:], 2))
        edges_mask = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
        edges_stored = np.concatenate([stored[:, :2], stored[:, :2] + stored[:, 2:]], axis=1)
        with np.errstate(invalid="ignore"):
            bbox_mismatch = has_bbox & (np.abs(edges_mask - edges_stored) > tolerance).any(axis=1)
            area_mismatch = has_area & (
                np.abs(stored_area - areas) > np.maximum(AREA_TOLERANCE_PX, AREA_TOLERANCE_REL * areas)
            )
        bad_coordinates = np.isnan(areas)  # masks.py marks polygons it refused (none here: checked above)
        # A compressed string can decode to counts that overrun the image: not a mask of it.
        limits = np.fromiter((float(job.height) * job.width for job in jobs), dtype=np.float64, count=len(jobs))
        overrun = ~bad_coordinates & (areas > limits)
        empty = ~bad_coordinates & (areas <= 0)
        rejected = bad_coordinates | overrun | empty

        issues = self.issues
        for row in np.flatnonzero(rejected).tolist():
            ann = anns[row]
            removed.add(id(ann))
            if bad_coordinates[row]:
                issues.add("invalid_polygon", ann["id"], f"annotation {ann['id']}: non-numeric or far-out coordinates")
            elif overrun[row]:
                issues.add("invalid_rle", ann["id"], f"annotation {ann['id']}: counts cover more than the image")
            else:
                issues.add("empty_mask", ann["id"])

        ok = ~rejected
        keep_stored = not self.replace_inconsistent  # evaluation scores the ground truth as stored
        box_rows = np.flatnonzero(ok & (~has_bbox | bbox_mismatch)).tolist()
        box_values = boxes[box_rows].tolist()
        for row, box in zip(box_rows, box_values, strict=True):
            ann = anns[row]
            if bbox_mismatch[row]:
                shown = [round(float(v), 1) for v in stored[row]]
                issues.add(
                    "bbox_mask_mismatch",
                    ann["id"],
                    f"annotation {ann['id']}: stored {shown}, mask {[round(v, 1) for v in box]}",
                )
                if keep_stored:
                    continue
                self.replaced["bbox"] += 1
            elif ann.get("bbox") not in (None, []):  # present but unusable (zero size, NaN, text)
                issues.add("bbox_mask_mismatch", ann["id"], f"annotation {ann['id']}: stored {short_repr(ann['bbox'])}")
                self.replaced["bbox"] += 1
            else:
                self.generated["bbox"] += 1
            ann["bbox"] = box

        area_rows = np.flatnonzero(ok & (~has_area | area_mismatch)).tolist()
        area_values = areas[area_rows].tolist()
        for row, area in zip(area_rows, area_values, strict=True):
            ann = anns[row]
            if area_mismatch[row]:
                issues.add("area_mask_mismatch", ann["id"])
                if keep_stored:
                    continue
                self.replaced["area"] += 1
            elif area_present[row]:
                issues.add("invalid_area", ann["id"])
                self.replaced["area"] += 1
            else:
                self.generated["area"] += 1
            ann["area"] = area
        return removed

    def _repair_box_only(self, box_only: list[tuple[dict[str, Any], _Image]], removed: set[int]) -> None:
        """Boxes without masks: outside → error, overshooting → clipped, area from the box."""
        for ann, image in box_only:
            x, y, w, h = ann["bbox"]
            width, height = float(image.width or 0), float(image.height or 0)
            x2, y2 = x + w, y + h
            if x >= width or y >= height or x2 <= 0 or y2 <= 0:
                self.issues.add("bbox_outside_image", ann["id"], f"annotation {ann['id']}: {ann['bbox']}")
                removed.add(id(ann))
                continue
            tol = CLIP_TOLERANCE_PX
            if x < -tol or y < -tol or x2 > width + tol or y2 > height + tol:
                cx, cy = max(x, 0.0), max(y, 0.0)
                cw, ch = min(x2, width) - cx, min(y2, height) - cy
                self.issues.add("bbox_clipped", ann["id"])
                self.replaced["clipped_bbox"] += 1
                ann["bbox"] = [cx, cy, cw, ch]
                w, h = cw, ch
            area, _ = _as_float(ann.get("area"))
            if area is None or area < 0:
                if "area" in ann:
                    self.issues.add("invalid_area", ann["id"])
                    self.replaced["area"] += 1
                else:
                    self.generated["area"] += 1
                ann["area"] = w * h


def _annotation_stats(valid: list[dict[str, Any]], has_boxes: bool, has_masks: bool) -> dict[str, Any]:
    """Per-category counts of the kept annotations, and whether the repaired data holds boxes and masks."""
    category_annotations: Counter[int] = Counter()
    pairs = set()
    for ann in valid:
        category_annotations[ann["category_id"]] += 1
        pairs.add((ann["category_id"], ann["image_id"]))
    category_images: Counter[int] = Counter(category for category, _ in pairs)
    annotated_images = len({image_id for _, image_id in pairs})
    return {
        "valid_annotations": valid,
        "category_annotations": category_annotations,
        "category_images": category_images,
        "annotated_images": annotated_images,
        # What the repaired data holds: every kept mask now has a box (``generated["bbox"]`` says how
        # many were derived), so masks-only data trains the box teacher too.
        "has_boxes": has_boxes or has_masks,
        "has_masks": has_masks,
    }


def _area_value(ann: dict[str, Any]) -> float:
    """The stored area as a float; NaN when missing, negative or not a number."""
    value = ann.get("area")
    if type(value) is float:
        return value if value >= 0 and math.isfinite(value) else math.nan
    number, _ = _as_float(value)
    return number if number is not None and number >= 0 else math.nan


def validate_dataset(
    source: str | Path | dict[str, Any],
    images_dir: str | Path | None = None,
    min_per_class: int = 0,
    check_images: bool = True,
    drop_invalid: bool = False,
    replace_inconsistent: bool = True,
    progress: Progress = NULL_PROGRESS,
) -> ValidationResult:
    """Validate and repair a COCO dataset given as a file path or an already-loaded dict.

    ``drop_invalid`` leaves annotations that cannot be repaired (zero-size boxes, malformed
    polygons, dangling ids...) out of the repaired dataset and reports them as warnings instead of
    errors. ``replace_inconsistent=False`` only fills what is missing and keeps stored bbox/area
    that disagree with their masks (still reported): evaluation scores ground truth as stored, as
    pycocotools does. A dict passed in is deep-copied first, so the caller's object is never modified. Raises
    ``UsageError`` for a missing file and ``DataError`` for a file that is not JSON; everything
    wrong inside the JSON is reported in the result instead.
    """
    # The JSON holds millions of containers and the pass creates no reference cycles: the cyclic
    # garbage collector would only re-scan that heap again and again while it is built and checked.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        path: Path | None = None
        if isinstance(source, (str, Path)):
            path = Path(source)
            with progress.task(f"reading {path.name}", total=None):
                data = read_json(path)
        else:
            data = copy.deepcopy(source)
        return _run_validator(
            data, path, images_dir, min_per_class, check_images, drop_invalid, replace_inconsistent, progress
        )
    finally:
        if gc_was_enabled:
            gc.enable()


def dataset_info_from_coco(coco: dict[str, Any]) -> DatasetInfo:
    """What a COCO dict contains, derived by the same pass as ``validate`` (image files not read).

    One derivation only, so the classes, their order and the boxes/masks decision are always the
    ones ``validate`` reports (e.g. a Roboflow placeholder category is not a class here either).
    """
    return validate_dataset(coco, check_images=False).info


def _run_validator(
    data: Any,
    path: Path | None,
    images_dir: str | Path | None,
    min_per_class: int,
    check_images: bool,
    drop_invalid: bool,
    replace_inconsistent: bool,
    progress: Progress,
) -> ValidationResult:
    validator = _Validator(
        data=data,
        source=path,
        images_dir=Path(images_dir) if images_dir is not None else None,
        min_per_class=min_per_class,
        check_images=check_images,
        drop_invalid=drop_invalid,
        replace_inconsistent=replace_inconsistent,
        progress=progress,
    )
    return validator.run()


def load_valid_dataset(
    path: str | Path,
    images_dir: str | Path | None = None,
    check_images: bool = False,
    drop_invalid: bool = False,
    replace_inconsistent: bool = True,
    progress: Progress = NULL_PROGRESS,
) -> ValidationResult:
    """Validate and repair a COCO file for a command that needs it valid; raise ``DataError`` if not.

    Every command that consumes a dataset goes through here, so all of them see the same repaired
    annotations and the same classes that ``distillkit validate`` reports.
    """
    result = validate_dataset(
        path,
        images_dir=images_dir,
        check_images=check_images,
        drop_invalid=drop_invalid,
        replace_inconsistent=replace_inconsistent,
        progress=progress,
    )
    if not result.report.valid or result.dataset is None:
        first = result.report.errors[0]
        more = len(result.report.errors) - 1
        raise DataError(
            f"{path} has errors: [{first.code}] {first.message}"
            + (f" (and {more} more kinds of error)" if more else ""),
            _repair_hint(path, {issue.code for issue in result.report.errors}),
        )
    return result


def _repair_hint(path: str | Path, codes: set[str]) -> str:
    """What to do about a dataset that failed the checks, with options every command has (none of its own).

    The commands reading datasets do not all take ``--drop-invalid``; ``validate`` does, and writes a
    repaired copy any of them can read. Dropping is suggested only when it would clear every error.
    """
    report = f"run 'distillkit validate {path}' for the full report"
    if codes <= DROPPABLE_ANNOTATION_CODES:
        return (
            f"{report}, or leave the unrepairable annotations out: "
            f"'distillkit validate {path} --drop-invalid --output clean.json', then pass clean.json"
        )
    return report + " and fix the file"
