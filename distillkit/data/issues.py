"""Validation findings, aggregated per code so a 300k-annotation file yields a short report.

Each finding code has a fixed severity, the kind of id it lists, and a message template that says
what is wrong and how to fix it. ``IssueCollector.add(code, id)`` is cheap (an append); the
messages are built once at the end.
"""

from __future__ import annotations

import reprlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class IssueKind:
    severity: Severity
    id_type: str  # "image" | "annotation" | "category" | "file" | "dataset"
    what: str  # "{n} <things> <problem>" — completed with the count and example ids
    fix: str


ISSUE_KINDS: dict[str, IssueKind] = {
    # --- structure ---
    "structure": IssueKind(
        "error", "dataset", "not a usable COCO file", "re-export the file as COCO detection/instances JSON"
    ),
    "invalid_image": IssueKind(
        "error",
        "image",
        "image entries are malformed (id, file_name, width or height missing or not usable)",
        "give every image an integer id, a file_name and positive width/height",
    ),
    "invalid_category": IssueKind(
        "error",
        "category",
        "category entries are malformed (id or name missing or not usable)",
        "give every category an integer id and a non-empty name",
    ),
    "invalid_annotation": IssueKind(
        "error",
        "annotation",
        "annotation entries are malformed (id, image_id or category_id missing or not integers)",
        "give every annotation integer id, image_id and category_id",
    ),
    "duplicate_image_id": IssueKind("error", "image", "image ids are used more than once", "make image ids unique"),
    "duplicate_annotation_id": IssueKind(
        "error", "annotation", "annotation ids are used more than once", "make annotation ids unique"
    ),
    "duplicate_category_id": IssueKind(
        "error", "category", "category ids are used more than once", "make category ids unique"
    ),
    "missing_image": IssueKind(
        "error",
        "annotation",
        "annotations point at image ids that do not exist",
        "add the images or delete those annotations",
    ),
    "missing_category": IssueKind(
        "error",
        "annotation",
        "annotations point at category ids that do not exist",
        "add the categories or fix category_id",
    ),
    "invalid_iscrowd": IssueKind(
        "error", "annotation", "annotations have an iscrowd value that is neither 0 nor 1", "set iscrowd to 0 or 1"
    ),
    # --- geometry ---
    "invalid_bbox": IssueKind(
        "error",
        "annotation",
        "annotations have a degenerate, negative, NaN or malformed bbox and no mask to rebuild it from",
        "fix or delete those boxes",
    ),
    "bbox_outside_image": IssueKind(
        "error",
        "annotation",
        "annotations have a bbox entirely outside their image",
        "fix the boxes or the image width/height",
    ),
    "invalid_polygon": IssueKind(
        "error",
        "annotation",
        "annotations have malformed polygons (odd number of coordinates, fewer than 3 points or non-numbers)",
        "fix or delete those polygons",
    ),
    "polygon_too_large": IssueKind(
        "error",
        "annotation",
        "annotations have polygons too large to rasterise safely (too many vertices or too long an outline)",
        "simplify those polygons (e.g. cv2.approxPolyDP or shapely's simplify) or store the masks as RLE",
    ),
    "invalid_segmentation": IssueKind(
        "error",
        "annotation",
        "annotations have a segmentation that is neither polygons nor RLE",
        "use a list of polygons or an RLE {counts, size}",
    ),
    "rle_size_mismatch": IssueKind(
        "error",
        "annotation",
        "annotations have an RLE whose size differs from their image's height/width",
        "re-export the masks at the image size",
    ),
    "invalid_rle": IssueKind(
        "error",
        "annotation",
        "annotations have RLE counts that cannot be decoded or do not cover the image",
        "re-export those masks",
    ),
    "empty_mask": IssueKind(
        "error", "annotation", "annotations have a mask that covers no pixel", "fix or delete them"
    ),
    "no_geometry": IssueKind(
        "error",
        "annotation",
        "annotations have neither a bbox nor a segmentation",
        "add a box or a mask, or delete them",
    ),
    "bbox_mask_mismatch": IssueKind(
        "warning",
        "annotation",
        "annotations have a stored bbox that disagrees with their mask; the repaired file uses the mask's tight box",
        "check the exporter that wrote the boxes",
    ),
    "bbox_clipped": IssueKind(
        "warning",
        "annotation",
        "annotations have a bbox extending past the image border; the repaired file clips it",
        "nothing to do unless the image size is wrong",
    ),
    "area_mask_mismatch": IssueKind(
        "warning",
        "annotation",
        "annotations have an area that disagrees with their mask area (Roboflow writes the box area); "
        "the repaired file uses the mask area",
        "nothing to do; use the repaired file",
    ),
    "invalid_area": IssueKind(
        "warning",
        "annotation",
        "annotations have a negative, NaN or non-numeric area; the repaired file recomputes it",
        "nothing to do; use the repaired file",
    ),
    "coerced_value": IssueKind(
        "warning",
        "annotation",
        'values were stored as strings or booleans (e.g. "iscrowd": "false", "id": "12") and were converted',
        "nothing to do; the repaired file stores numbers",
    ),
    # --- categories ---
    "duplicate_category_name": IssueKind(
        "error",
        "category",
        "categories share a name with another used category, so classes are ambiguous",
        "rename or merge those categories",
    ),
    "placeholder_category": IssueKind(
        "warning",
        "category",
        "unused categories duplicate the name of a used one (a Roboflow-style placeholder); "
        "the repaired file drops them",
        "nothing to do; use the repaired file",
    ),
    "unused_category": IssueKind(
        "warning",
        "category",
        "categories have no annotations",
        "delete them or add examples; they would become classes the model never sees",
    ),
    "class_below_min": IssueKind(
        "warning",
        "category",
        "classes have fewer annotations than --min-per-class",
        "label more examples of those classes",
    ),
    # --- image files ---
    "unsafe_file_name": IssueKind(
        "error",
        "image",
        "images have a file_name that escapes the images folder (absolute or '..'); they were not read",
        "make file_name relative to the images folder",
    ),
    "image_file_missing": IssueKind(
        "error", "image", "image files are missing", "copy the images or pass --images-dir"
    ),
    "image_unreadable": IssueKind(
        "error", "image", "image files cannot be read as images", "replace the corrupt files"
    ),
    "image_size_mismatch": IssueKind(
        "error",
        "image",
        "image files differ in size (as displayed, EXIF orientation applied) from the width/height in the JSON",
        "fix width/height in the JSON or the files; annotations drawn on an EXIF-rotated photo's stored "
        "pixels need its orientation tag removed",
    ),
    "images_not_found": IssueKind(
        "warning",
        "dataset",
        "no image file was found, so the image-file checks were skipped",
        "pass --images-dir to check the files too",
    ),
}


# Findings about single annotations: with --drop-invalid those annotations are left out of the
# repaired file and the finding becomes a warning, instead of failing the whole dataset.
DROPPABLE_ANNOTATION_CODES = frozenset(
    {
        "invalid_annotation",
        "duplicate_annotation_id",
        "missing_image",
        "missing_category",
        "invalid_iscrowd",
        "invalid_bbox",
        "bbox_outside_image",
        "invalid_polygon",
        "polygon_too_large",
        "invalid_segmentation",
        "rle_size_mismatch",
        "invalid_rle",
        "empty_mask",
        "no_geometry",
    }
)


@dataclass
class Issue:
    code: str
    severity: Severity
    message: str
    id_type: str
    ids: list[Any] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.ids) if self.ids else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "count": self.count,
            "id_type": self.id_type,
            "ids": self.ids,
        }


_PLURALS = {"image": "images", "annotation": "annotations", "category": "categories", "file": "files"}


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = 60
_SHORT_REPR.maxother = 60
_SHORT_REPR.maxlist = _SHORT_REPR.maxdict = 6
_SHORT_REPR.maxlevel = 3
_MAX_ID_CHARS = 60


def short_repr(value: Any) -> str:
    """A value from the file, shown in a message: bounded in length and depth whatever the file holds
    (a 1M-item list or 1000 nested lists must not become a 20 MB message or a RecursionError)."""
    return _SHORT_REPR.repr(value)


def _reportable_id(item_id: Any) -> Any:
    """Ids go into the JSON report as they are when they are int64s or short strings, else as a short repr."""
    if (type(item_id) is int and -(2**63) <= item_id < 2**63) or (
        type(item_id) is str and len(item_id) <= _MAX_ID_CHARS
    ):
        return item_id
    return short_repr(item_id)


class IssueCollector:
    """Collects ids per finding code; ``issues()`` turns them into one ``Issue`` per code."""

    def __init__(self, max_examples: int = 5) -> None:
        self._ids: dict[str, list[Any]] = defaultdict(list)
        self._details: dict[str, list[str]] = defaultdict(list)
        self._max_examples = max_examples

    def add(self, code: str, item_id: Any = None, detail: str | None = None) -> None:
        ids = self._ids[code]
        if item_id is not None:
            ids.append(_reportable_id(item_id))
        if detail is not None and len(self._details[code]) < self._max_examples:
            self._details[code].append(detail)

    def has(self, code: str) -> bool:
        return code in self._ids

    def issues(self, dropped_codes: frozenset[str] = frozenset()) -> list[Issue]:
        """One Issue per code seen; codes in ``dropped_codes`` become warnings saying so."""
        out = []
        for code in ISSUE_KINDS:  # report in the registry's (meaningful) order
            if code not in self._ids:
                continue
            issue = self._build(code, ISSUE_KINDS[code])
            if code in dropped_codes:
                issue.severity = "warning"
                issue.message += "; dropped from the repaired file (--drop-invalid)"
            out.append(issue)
        return out

    def _build(self, code: str, kind: IssueKind) -> Issue:
        ids = _unique(self._ids[code])
        details = self._details.get(code, [])
        if kind.id_type == "dataset":
            message = kind.what
        else:
            n = len(ids)
            noun = kind.id_type if n == 1 else _PLURALS.get(kind.id_type, kind.id_type + "s")
            what = kind.what
            shown = ", ".join(str(i) for i in ids[: self._max_examples])
            more = f", … {n - self._max_examples} more" if n > self._max_examples else ""
            message = f"{n} {noun}: {what} ({kind.id_type} ids {shown}{more})"
            if n == 1:
                # "1 image: image entries are malformed" reads badly; keep the template but singular ids
                message = message.replace(f"({kind.id_type} ids ", f"({kind.id_type} id ")
        if details:
            message += "; e.g. " + "; ".join(details)
        message += f" — {kind.fix}"
        return Issue(code=code, severity=kind.severity, message=message, id_type=kind.id_type, ids=ids)


def _unique(items: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for item in items:
        key = repr(item) if not isinstance(item, (int, str)) else item
        if key in seen:
            continue
        seen.add(key)
        out.append(item)
    return out
