"""What a dataset contains, derived from its annotations (never stored as a mode flag).

``DatasetInfo`` is what later commands consult to decide their path: boxes → a box teacher and a
detection student, masks → a mask teacher and a segmentation student, both → both. It describes the
data *after* ``validate``'s repairs: a mask without a box gets its tight box there, so masks-only
data holds boxes and masks ("both"); ``ValidationReport.generated["bbox"]`` says how many boxes
were derived.
"""

from __future__ import annotations

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
        """Which teachers the data calls for: boxes → grounding_dino, masks → sam, both → both.

        Masks-only data gets both after repair: Grounding DINO learns the boxes derived from the
        masks, so unlabelled images get boxes from it and masks from SAM prompted with them.
        """
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
