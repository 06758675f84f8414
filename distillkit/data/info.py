"""What a dataset contains, derived from its annotations (never stored as a mode flag).

``DatasetInfo`` is what later commands consult to decide their path: boxes → a box teacher and a
detection student, masks → a mask teacher and a segmentation student, both → both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CategoryInfo:
    id: int
    name: str
    annotations: int = 0
    images: int = 0


@dataclass(frozen=True)
class DatasetInfo:
    num_images: int
    num_annotations: int
    categories: tuple[CategoryInfo, ...] = field(default_factory=tuple)
    has_boxes: bool = False
    has_masks: bool = False
    num_empty_images: int = 0

    @property
    def mode(self) -> str:
        """'boxes', 'masks', 'both' or 'none' — computed from has_boxes/has_masks."""
        if self.has_boxes and self.has_masks:
            return "both"
        if self.has_masks:
            return "masks"
        if self.has_boxes:
            return "boxes"
        return "none"

    @property
    def class_names(self) -> list[str]:
        """Class names in training order: categories sorted by COCO id."""
        return [c.name for c in sorted(self.categories, key=lambda c: c.id)]

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def class_mapping(self) -> dict[int, int]:
        """COCO category id → contiguous class index (0..num_classes-1), in category-id order."""
        return {c.id: index for index, c in enumerate(sorted(self.categories, key=lambda c: c.id))}

    @property
    def teachers(self) -> list[str]:
        """Which teachers the data calls for: boxes → grounding_dino, masks → sam, both → both."""
        chosen = []
        if self.has_boxes:
            chosen.append("grounding_dino")
        if self.has_masks:
            chosen.append("sam")
        return chosen

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["categories"] = [asdict(c) for c in self.categories]
        out["mode"] = self.mode
        return out


def _is_number(value: Any) -> bool:
    """A finite int or float (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _has_box(annotation: dict[str, Any]) -> bool:
    """A usable box: four finite numbers with positive width and height."""
    bbox = annotation.get("bbox")
    return (
        isinstance(bbox, (list, tuple))
        and len(bbox) == 4
        and all(_is_number(v) for v in bbox)
        and bbox[2] > 0
        and bbox[3] > 0
    )


def _has_mask(annotation: dict[str, Any]) -> bool:
    """A non-empty segmentation: polygons (list of coordinate lists, or one flat list) or an RLE dict."""
    seg = annotation.get("segmentation")
    if isinstance(seg, dict):
        return bool(seg.get("counts")) and isinstance(seg.get("size"), (list, tuple))
    if isinstance(seg, list) and seg:
        if all(isinstance(part, (list, tuple)) for part in seg):
            return any(len(part) >= 6 for part in seg)
        return len(seg) >= 6 and all(_is_number(v) for v in seg)
    return False


def dataset_info_from_coco(coco: dict[str, Any]) -> DatasetInfo:
    """Derive a DatasetInfo from a COCO dict, without checking or repairing it.

    A quick summary for commands that only need what the data says (classes, boxes, masks); it
    tolerates malformed entries by skipping them. ``validate`` does the full check.
    Categories come with their annotation and image counts; ``has_boxes`` is true when some
    annotation has a non-empty 4-number bbox, ``has_masks`` when some annotation has a non-empty
    segmentation (polygons or RLE).
    """
    images = [i for i in coco.get("images") or [] if isinstance(i, dict)]
    annotations = [a for a in coco.get("annotations") or [] if isinstance(a, dict)]
    names: dict[int, str] = {}
    for category in coco.get("categories") or []:
        if not isinstance(category, dict):
            continue
        cat_id = category.get("id")
        if isinstance(cat_id, int) and not isinstance(cat_id, bool) and cat_id not in names:
            names[cat_id] = str(category.get("name", cat_id))

    per_category_annotations: dict[int, int] = {}
    per_category_images: dict[int, set[Any]] = {}
    annotated_images: set[Any] = set()
    has_boxes = has_masks = False
    for annotation in annotations:
        image_id = annotation.get("image_id")
        if isinstance(image_id, (int, str)):
            annotated_images.add(image_id)
        has_boxes = has_boxes or _has_box(annotation)
        has_masks = has_masks or _has_mask(annotation)
        cat_id = annotation.get("category_id")
        if cat_id in names:
            per_category_annotations[cat_id] = per_category_annotations.get(cat_id, 0) + 1
            per_category_images.setdefault(cat_id, set()).add(image_id)

    image_ids = {i.get("id") for i in images if isinstance(i.get("id"), (int, str))}
    categories = tuple(
        CategoryInfo(
            id=cat_id,
            name=names[cat_id],
            annotations=per_category_annotations.get(cat_id, 0),
            images=len(per_category_images.get(cat_id, ())),
        )
        for cat_id in sorted(names)
    )
    return DatasetInfo(
        num_images=len(images),
        num_annotations=len(annotations),
        categories=categories,
        has_boxes=has_boxes,
        has_masks=has_masks,
        num_empty_images=len(image_ids - annotated_images),
    )
