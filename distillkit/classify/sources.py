"""Image-level label sources: a class-per-folder tree, a CSV (one-hot or label rows), a COCO JSON.

Every source becomes one ``ClassificationData``: image paths plus a multi-hot target matrix
(images x classes). Whether the task is multi-label is read from the data (some image has no label
or several), never declared. CSV forms recognised:

- label rows: an image column and a label column (``label``, ``class``, ``ClassId``...); an image may
  appear on several rows and a cell may hold several labels (``a b``, ``a;b``, ``a|b``), both add up.
  Severstal's ``ImageId,ClassId,EncodedPixels`` is this form (a row with empty EncodedPixels or
  empty ClassId lists the image without a defect); so is its older ``ImageId_ClassId,EncodedPixels``.
- one-hot: an image column and one 0/1 column per class (the header names the classes).

Image paths in a CSV are absolute, or relative to ``images_dir`` (else the CSV's folder, its
``images/`` and ``train_images/``). A COCO image's labels are the categories present in it.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.data.images import ImageLocator, default_image_roots
from distillkit.errors import DataError, UsageError
from distillkit.inference.sources import IMAGE_SUFFIXES
from distillkit.io import read_json

PathLike = str | os.PathLike[str]

_IMAGE_COLUMNS = ("image", "image_path", "path", "filepath", "file_path", "file", "filename", "file_name")
_IMAGE_ID_COLUMNS = ("imageid", "image_id", "img", "id", "name")
_LABEL_COLUMNS = ("label", "labels", "class", "classes", "classid", "class_id", "category", "target", "tags")
_SEVERSTAL_OLD = "imageid_classid"
_MASK_COLUMN = "encodedpixels"
_LABEL_SPLIT = re.compile(r"[\s;|,]+")


@dataclass
class ClassificationData:
    """Images and their labels as a multi-hot matrix (images x classes, float32 0/1)."""

    paths: list[Path]
    targets: np.ndarray
    class_names: list[str]
    source: Path
    kind: str  # folder | csv_labels | csv_onehot | coco

    def __post_init__(self) -> None:
        assert self.targets.shape == (len(self.paths), len(self.class_names)), self.targets.shape

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def multi_label(self) -> bool:
        """True when some image has no label or more than one (so classes are not exclusive)."""
        return bool(np.any(self.targets.sum(axis=1) != 1))

    @property
    def labels(self) -> np.ndarray:
        """Class index per image (single-label data only)."""
        if self.multi_label:
            raise DataError(f"{self.source} is multi-label: images have no single class index")
        return self.targets.argmax(axis=1)

    def class_counts(self) -> np.ndarray:
        """Images per class."""
        return self.targets.sum(axis=0).astype(np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ClassificationData:
        index = np.asarray(indices, dtype=np.int64)
        return ClassificationData(
            paths=[self.paths[i] for i in index],
            targets=self.targets[index],
            class_names=list(self.class_names),
            source=self.source,
            kind=self.kind,
        )

    def aligned_to(self, class_names: Sequence[str]) -> ClassificationData:
        """The same images with columns in ``class_names`` order (e.g. a val set against training classes)."""
        names = list(class_names)
        if names == self.class_names:
            return self
        unknown = [
            name for name in self.class_names if name not in names and self.class_counts()[self.class_names.index(name)]
        ]
        if unknown:
            raise DataError(
                f"{self.source} has class(es) {', '.join(unknown)} that the model does not know",
                f"the model's classes: {', '.join(names)}",
            )
        targets = np.zeros((len(self.paths), len(names)), dtype=np.float32)
        for column, name in enumerate(self.class_names):
            if name in names:
                targets[:, names.index(name)] = self.targets[:, column]
        return ClassificationData(list(self.paths), targets, names, self.source, self.kind)


def load_classification_data(source: PathLike, images_dir: PathLike | None = None) -> ClassificationData:
    """Read any supported source (folder tree, CSV, COCO JSON); raise DataError/UsageError on problems."""
    path = Path(source).expanduser()
    if not path.exists():
        raise UsageError(f"data source {path} does not exist", "give a class-per-folder tree, a CSV or a COCO JSON")
    roots = [Path(images_dir)] if images_dir is not None else None
    if path.is_dir():
        data = _from_folders(path)
    elif path.suffix.lower() == ".csv":
        data = _from_csv(path, roots)
    elif path.suffix.lower() == ".json":
        data = _from_coco(path, Path(images_dir) if images_dir is not None else None)
    else:
        raise UsageError(f"cannot read labels from {path}", "give a class-per-folder tree, a .csv or a COCO .json")
    if len(data) == 0:
        raise DataError(f"{path} lists no images")
    if data.num_classes < 1:
        raise DataError(f"{path} defines no class")
    return data


# --------------------------------------------------------------------------------------------------
# folder tree


def _from_folders(root: Path) -> ClassificationData:
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders", "put each class's images in ROOT/<class name>/")
    paths: list[Path] = []
    columns: list[int] = []
    for column, name in enumerate(classes):
        images = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths.extend(images)
        columns.extend([column] * len(images))
    if not paths:
        raise DataError(
            f"the class folders of {root} hold no images", f"image types: {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    targets = np.zeros((len(paths), len(classes)), dtype=np.float32)
    targets[np.arange(len(paths)), columns] = 1.0
    return ClassificationData(paths, targets, classes, root, "folder")


# --------------------------------------------------------------------------------------------------
# CSV


def _find_column(header: list[str], candidates: Sequence[str]) -> int | None:
    lowered = [name.strip().lower() for name in header]
    for candidate in candidates:
        if candidate in lowered:
            return lowered.index(candidate)
    return None


def _sorted_names(names: set[str]) -> list[str]:
    """Numeric names in numeric order (Severstal's 1..4), others alphabetically."""
    if all(re.fullmatch(r"-?\d+", name) for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _from_csv(path: Path, roots: list[Path] | None) -> ClassificationData:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one data row")
    header, body = [cell.strip() for cell in rows[0]], rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path} line {number} has {len(row)} cells but the header has {len(header)}")
    lowered = [name.lower() for name in header]
    if _SEVERSTAL_OLD in lowered:
        records = _severstal_old_records(header, body)
        kind = "csv_labels"
        names = _sorted_names({label for _, labels in records for label in labels})
    else:
        image_col = _find_column(header, _IMAGE_COLUMNS)
        if image_col is None:
            image_col = _find_column(header, _IMAGE_ID_COLUMNS)
        image_col = 0 if image_col is None else image_col
        label_col = _find_column(header, _LABEL_COLUMNS)
        if label_col is not None:
            records = _label_records(header, body, image_col, label_col)
            kind = "csv_labels"
            names = _sorted_names({label for _, labels in records for label in labels})
        else:
            records, names = _onehot_records(path, header, body, image_col)
            kind = "csv_onehot"
    locator = ImageLocator(roots if roots is not None else _csv_roots(path))
    merged: dict[str, set[str]] = {}
    for image, labels in records:
        merged.setdefault(image, set()).update(labels)
    paths: list[Path] = []
    missing: list[str] = []
    for image in merged:
        resolved = _resolve_csv_image(image, locator)
        if resolved is None:
            missing.append(image)
        else:
            paths.append(resolved)
    if missing:
        where = ", ".join(str(root) for root in locator.roots)
        raise DataError(
            f"{len(missing)} image(s) named in {path} were not found (first: {missing[0]}; looked in {where})",
            "pass --images-dir with the folder that holds them",
        )
    targets = np.zeros((len(paths), len(names)), dtype=np.float32)
    for row, labels in enumerate(merged.values()):
        for label in labels:
            targets[row, names.index(label)] = 1.0
    return ClassificationData(paths, targets, names, path, kind)


def _csv_roots(path: Path) -> list[Path]:
    folder = path.resolve().parent
    return [folder, folder / "images", folder / "train_images"]


def _resolve_csv_image(name: str, locator: ImageLocator) -> Path | None:
    candidate = Path(name).expanduser()
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    return locator.resolve(name)


def _label_records(
    header: list[str], body: list[list[str]], image_col: int, label_col: int
) -> list[tuple[str, set[str]]]:
    mask_col = _find_column(header, (_MASK_COLUMN,))
    records = []
    for row in body:
        image = row[image_col].strip()
        if not image:
            continue
        has_defect = mask_col is None or bool(row[mask_col].strip())
        labels = {part for part in _LABEL_SPLIT.split(row[label_col].strip()) if part} if has_defect else set()
        records.append((image, labels))
    return records


def _severstal_old_records(header: list[str], body: list[list[str]]) -> list[tuple[str, set[str]]]:
    key_col = [name.lower() for name in header].index(_SEVERSTAL_OLD)
    mask_col = _find_column(header, (_MASK_COLUMN,))
    records = []
    for row in body:
        image, _, class_id = row[key_col].strip().rpartition("_")
        has_defect = mask_col is None or bool(row[mask_col].strip())
        records.append((image, {class_id} if has_defect and class_id else set()))
    return records


def _onehot_records(
    path: Path, header: list[str], body: list[list[str]], image_col: int
) -> tuple[list[tuple[str, set[str]]], list[str]]:
    label_cols = [index for index in range(len(header)) if index != image_col]
    if not label_cols:
        raise DataError(
            f"{path} has no label column",
            "add a 'label' column or one 0/1 column per class",
        )
    records = []
    for number, row in enumerate(body, start=2):
        labels = set()
        for index in label_cols:
            value = _binary(row[index])
            if value is None:
                raise DataError(
                    f"{path} line {number}: column '{header[index]}' holds {row[index]!r}, not 0 or 1",
                    "one-hot columns take 0/1; a column of class names must be called 'label'",
                )
            if value:
                labels.add(header[index])
        records.append((row[image_col].strip(), labels))
    return records, [header[index] for index in label_cols]


def _binary(text: str) -> bool | None:
    value = text.strip().lower()
    if value in ("1", "1.0", "true", "yes"):
        return True
    if value in ("0", "0.0", "false", "no", ""):
        return False
    return None


# --------------------------------------------------------------------------------------------------
# COCO


def _from_coco(path: Path, images_dir: Path | None) -> ClassificationData:
    coco: Any = read_json(path)
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise DataError(f"{path} is not a COCO file (no 'images' list)")
    categories = sorted(coco.get("categories") or [], key=lambda c: c["id"])
    names = [str(category["name"]) for category in categories]
    column = {category["id"]: index for index, category in enumerate(categories)}
    row_of = {image["id"]: row for row, image in enumerate(coco["images"])}
    targets = np.zeros((len(coco["images"]), len(names)), dtype=np.float32)
    for annotation in coco.get("annotations") or []:
        row, col = row_of.get(annotation.get("image_id")), column.get(annotation.get("category_id"))
        if row is None or col is None:
            raise DataError(
                f"{path}: an annotation refers to a missing image or category id", "run distillkit validate first"
            )
        targets[row, col] = 1.0
    locator = ImageLocator(default_image_roots(path, images_dir))
    paths: list[Path] = []
    missing: list[str] = []
    for image in coco["images"]:
        resolved = locator.resolve(str(image.get("file_name", "")))
        if resolved is None:
            missing.append(str(image.get("file_name")))
        else:
            paths.append(resolved)
    if missing:
        raise DataError(
            f"{len(missing)} image(s) of {path} were not found (first: {missing[0]})",
            "pass --images-dir with the folder that holds them",
        )
    return ClassificationData(paths, targets, names, path, "coco")


# --------------------------------------------------------------------------------------------------
# splitting


def split_classification_data(
    data: ClassificationData, val_fraction: float = 0.2, seed: int = 42
) -> tuple[ClassificationData, ClassificationData]:
    """Seeded, stratified train/val split with ``distillkit split``'s splitter (multi-label aware)."""
    from distillkit.data.split import split_dataset

    if not 0 < val_fraction < 1:
        raise UsageError(f"validation fraction must be in (0, 1), got {val_fraction}")
    rows, cols = np.nonzero(data.targets)
    coco = {
        "images": [{"id": index, "file_name": str(index)} for index in range(len(data))],
        "annotations": [
            {"id": number, "image_id": int(row), "category_id": int(col)}
            for number, (row, col) in enumerate(zip(rows, cols, strict=True))
        ],
        "categories": [{"id": index, "name": name} for index, name in enumerate(data.class_names)],
    }
    result = split_dataset(coco, {"train": 1.0 - val_fraction, "val": val_fraction}, seed=seed)
    return data.subset(sorted(result.image_ids["train"])), data.subset(sorted(result.image_ids["val"]))
