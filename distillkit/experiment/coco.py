"""The train/val pair of COCO files the teachers and the students train on."""

from __future__ import annotations

import os
from pathlib import Path

from distillkit.data.validate import ValidationResult, load_valid_dataset
from distillkit.errors import DataError, UsageError
from distillkit.paths import image_folders
from distillkit.progress import NULL_PROGRESS, Progress

CocoSource = ValidationResult | str | os.PathLike[str]


def source_path(source: CocoSource) -> Path | None:
    """The annotation file behind ``source`` (a loaded result remembers where it came from)."""
    if isinstance(source, ValidationResult):
        return Path(source.report.source) if source.report.source else None
    return Path(source)


def coco_inputs(
    train: CocoSource,
    val: CocoSource,
    images_dir: str | os.PathLike[str] | None = None,
    val_images_dir: str | os.PathLike[str] | None = None,
) -> list[Path | None]:
    """The annotation files and the image folders of a train/val pair, for the outputs-outside check."""
    train_file, val_file = source_path(train), source_path(val)
    folders = image_folders([train_file], images_dir) + image_folders([val_file], val_images_dir or images_dir)
    return [train_file, val_file, *folders]


def _load(source: CocoSource, what: str, progress: Progress) -> ValidationResult:
    if isinstance(source, ValidationResult):
        return source
    path = Path(source)
    if path.is_dir():
        raise UsageError(f"{what} data {path} is a folder, not a COCO JSON file", "pass the annotation file itself")
    if not path.is_file():
        raise UsageError(f"{what} file not found: {path}", "check the path")
    return load_valid_dataset(path, progress=progress)


def load_coco_pair(
    train: CocoSource, val: CocoSource, progress: Progress = NULL_PROGRESS
) -> tuple[ValidationResult, ValidationResult]:
    """Both files checked and repaired as ``validate`` does, and holding the same categories."""
    train_result = _load(train, "training", progress)
    val_result = _load(val, "validation", progress)
    check_same_classes(train_result, val_result)
    return train_result, val_result


def check_same_classes(train: ValidationResult, val: ValidationResult) -> None:
    """A model trained on one class list is validated on the same list, in the same order."""
    if train.info.class_mapping != val.info.class_mapping or train.info.class_names != val.info.class_names:
        raise DataError(
            f"{val.report.source or 'the validation file'} has other categories than "
            f"{train.report.source or 'the training file'} "
            f"({', '.join(train.info.class_names)} vs {', '.join(val.info.class_names)})",
            "make both files from one dataset (distillkit split keeps all categories in every split)",
        )
