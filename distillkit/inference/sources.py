"""Turning SOURCE arguments (files, folders, globs) into a sorted list of image files."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from distillkit.errors import UsageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def collect_images(sources: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Every image named by ``sources``: files as given, folders' images, glob patterns' matches.

    Order is stable (each source's images sorted, sources in the order given); duplicates removed.
    """
    found: list[Path] = []
    for source in sources:
        text = str(source)
        path = Path(text).expanduser()
        if path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UsageError(
                    f"{text} is not an image file", f"give images ending in {', '.join(sorted(IMAGE_SUFFIXES))}"
                )
            found.append(path)
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(sorted(p for p in path.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            found.extend(p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            raise UsageError(f"{text} is neither an image file, a folder nor a glob pattern", "check the path")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise UsageError("no image found in " + ", ".join(str(s) for s in sources), "give image files or folders")
    return unique
