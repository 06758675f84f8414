"""Finding a COCO image's file on disk, safely, and reading its size without decoding it.

Every command that opens images resolves them through ``resolve_image_path`` so they agree on
where a ``file_name`` lives: under one of the image roots (``--images-dir``, else the JSON's folder
and its ``images/``), by its relative path first and by its bare name second (Roboflow and labelme
exports often prefix folders that the copied dataset no longer has). A ``file_name`` that is
absolute or climbs out with ``..`` is unsafe and never opened.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

# EXIF orientations 5-8 rotate by 90°: the stored pixels are then transposed w.r.t. the displayed image.
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


def default_image_roots(annotation_file: Path, images_dir: Path | None = None) -> list[Path]:
    if images_dir is not None:
        return [images_dir]
    folder = annotation_file.resolve().parent
    return [folder, folder / "images"]


def safe_relative_name(file_name: str) -> PurePosixPath | None:
    """The file_name as a relative POSIX path, or None when it is absolute or escapes with '..'."""
    normalised = file_name.replace("\\", "/")
    if not normalised or normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return None
    path = PurePosixPath(normalised)
    if any(part == ".." for part in path.parts):
        return None
    return path


def resolve_image_path(file_name: str, roots: Sequence[Path]) -> Path | None:
    """Existing file for ``file_name`` under ``roots`` (relative path first, then bare name)."""
    relative = safe_relative_name(file_name)
    if relative is None:
        return None
    for root in roots:
        candidate = root.joinpath(*relative.parts)
        if os.path.isfile(candidate):
            return candidate
    if len(relative.parts) > 1:
        for root in roots:
            candidate = root / relative.name
            if os.path.isfile(candidate):
                return candidate
    return None


@dataclass(frozen=True)
class ImageFileInfo:
    width: int
    height: int
    transposed: bool  # EXIF says the displayed image is rotated by 90°


def read_image_size(path: Path) -> ImageFileInfo | None:
    """Width/height from the file header (no pixel decoding); None when it is not a readable image."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = 1
            try:
                orientation = int(image.getexif().get(0x0112, 1))
            except Exception:  # a broken EXIF block does not make the image unreadable
                orientation = 1
            return ImageFileInfo(width, height, orientation in _TRANSPOSING_ORIENTATIONS)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def size_matches(info: ImageFileInfo, width: int, height: int) -> bool:
    if (info.width, info.height) == (width, height):
        return True
    # Some tools record the size after applying EXIF rotation; accept that too.
    return info.transposed and (info.height, info.width) == (width, height)
