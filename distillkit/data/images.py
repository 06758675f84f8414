"""Finding a COCO image's file on disk, safely (reading it: ``distillkit.images``).

Every command that opens images resolves them through ``ImageLocator`` so they agree on where a
``file_name`` lives: under one of the image roots (``--images-dir``, else the JSON's folder and its
``images/``), by its relative path first and by its bare name second (Roboflow and labelme exports
often prefix folders that the copied dataset no longer has). A ``file_name`` that is absolute or
climbs out with ``..`` is unsafe and never opened.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def default_image_roots(annotation_file: Path, images_dir: Path | None = None) -> list[Path]:
    if images_dir is not None:
        return [images_dir]
    folder = annotation_file.resolve().parent
    return [folder, folder / "images"]


def safe_relative_parts(file_name: str) -> tuple[str, ...] | None:
    """The file_name's path components (``\\`` read as ``/``), or None when absolute or escaping with '..'."""
    normalised = file_name.replace("\\", "/")
    if not normalised or normalised[0] == "/" or (len(normalised) > 1 and normalised[1] == ":"):
        return None
    parts = tuple(part for part in normalised.split("/") if part and part != ".")
    if not parts or ".." in parts:
        return None
    return parts


class ImageLocator:
    """Resolves file_names under a list of roots, listing each folder once instead of a stat per image.

    Checking 40k images that are not on disk costs a handful of directory listings, not 80k stats.
    """

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = [Path(root) for root in roots]
        self._listings: dict[Path, frozenset[str]] = {}

    def _names_in(self, folder: Path) -> frozenset[str]:
        names = self._listings.get(folder)
        if names is None:
            try:
                with os.scandir(folder) as entries:
                    names = frozenset(entry.name for entry in entries if entry.is_file())
            except OSError:
                names = frozenset()
            self._listings[folder] = names
        return names

    def resolve(self, file_name: str) -> Path | None:
        """Existing file for ``file_name`` (relative path first, then bare name); None if absent or unsafe."""
        parts = safe_relative_parts(file_name)
        if parts is None:
            return None
        for root in self.roots:
            folder = root.joinpath(*parts[:-1]) if len(parts) > 1 else root
            if parts[-1] in self._names_in(folder):
                return folder / parts[-1]
        if len(parts) > 1:
            for root in self.roots:
                if parts[-1] in self._names_in(root):
                    return root / parts[-1]
        return None


def resolve_image_path(file_name: str, roots: Sequence[Path]) -> Path | None:
    """One-off resolution (see ``ImageLocator`` for many images)."""
    return ImageLocator(roots).resolve(file_name)
