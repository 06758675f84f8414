"""Which images get labelled: content keys remembered across runs, and screening against other datasets.

Labelling keys every image by the sha256 of its bytes (``image_content_key``), both for the
teacher-output cache and to recognise copies. Hashing a large folder reads every byte, so
``ImageKeyIndex`` remembers each key in a small JSONL manifest (path, size, mtime → key), one
line written as soon as an image is hashed: a run killed half-way, and its rerun, hash each image
once. Screening drops images whose content equals an image of another dataset (``--exclude
test.json``: nothing of the test split may be labelled into training data) and repeated images of
the sources themselves, and counts both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from distillkit.data.images import ImageLocator, default_image_roots
from distillkit.errors import DataError
from distillkit.io import read_json
from distillkit.labelling.cache import image_content_key
from distillkit.progress import NULL_PROGRESS, Progress


class ImageKeyIndex:
    """Content keys of image files, remembered in an append-only JSONL manifest (None: in memory only).

    A remembered key is reused while the file's size and modification time are unchanged. A line
    cut short by a kill is ignored on reading, so the manifest never needs repairing.
    """

    def __init__(self, manifest: Path | None = None) -> None:
        self.manifest = Path(manifest) if manifest is not None else None
        self._known: dict[str, tuple[int, int, str]] = {}
        self._handle: IO[str] | None = None
        self.hashed = 0  # images read and hashed by this object (the rest came from the manifest)
        if self.manifest is not None and self.manifest.is_file():
            self._read(self.manifest)

    def _read(self, manifest: Path) -> None:
        with open(manifest, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = orjson.loads(line)
                    self._known[entry["path"]] = (int(entry["size"]), int(entry["mtime_ns"]), str(entry["key"]))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # the last line of a killed run, or a foreign line: hash again

    def key(self, path: Path) -> str:
        """The content key of ``path`` (from the manifest when the file is unchanged)."""
        name = os.fspath(Path(path).resolve())
        stat = os.stat(name)
        known = self._known.get(name)
        if known is not None and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2]
        key = image_content_key(Path(name))
        self.hashed += 1
        self._known[name] = (stat.st_size, stat.st_mtime_ns, key)
        if self.manifest is not None:
            if self._handle is None:
                self.manifest.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.manifest, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
            line = {"path": name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "key": key}
            self._handle.write(orjson.dumps(line).decode("utf-8") + "\n")
        return key

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> ImageKeyIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ExcludedImages:
    """Content keys of the images of ``--exclude`` datasets, and how many of their images were not found."""

    keys: set[str] = field(default_factory=set)
    files: list[str] = field(default_factory=list)
    images: int = 0
    missing: int = 0
    missing_example: str | None = None


def coco_image_paths(annotation_file: Path, images_dir: Path | None = None) -> tuple[list[Path], list[str]]:
    """Image files of a COCO file, found the way every distillkit command finds them, and the file_names not found.

    Roots: ``images_dir`` when given, else the JSON's folder and its ``images/`` (``default_image_roots``).
    """
    data = read_json(annotation_file)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataError(f"{annotation_file} is not a COCO file (no 'images' list)", "pass a COCO annotation file")
    locator = ImageLocator(default_image_roots(Path(annotation_file), images_dir))
    found: list[Path] = []
    missing: list[str] = []
    for image in images:
        file_name = image.get("file_name") if isinstance(image, dict) else None
        path = locator.resolve(file_name) if isinstance(file_name, str) else None
        if path is None:
            missing.append(str(file_name))
        else:
            found.append(path)
    return found, missing


def excluded_images(
    annotation_files: Sequence[Path],
    index: ImageKeyIndex,
    *,
    images_dir: Path | None = None,
    images_dir_flag: str | None = "--exclude-images-dir",
    progress: Progress = NULL_PROGRESS,
) -> ExcludedImages:
    """The content keys of every image of ``annotation_files`` (e.g. the validation and test splits).

    A file none of whose images can be found is an error: it was named to keep its images out of the
    labels, and nothing of it could be screened (a leak, e.g. of the test split, would go unnoticed).
    Some images missing is reported (``missing``) and left to the caller to say.
    """
    result = ExcludedImages(files=[str(path) for path in annotation_files])
    located = [coco_image_paths(Path(path), images_dir) for path in annotation_files]
    for path, (found, missing) in zip(annotation_files, located, strict=True):
        if missing and not found:
            raise DataError(
                f"none of the {len(missing)} images of the excluded dataset {path} was found (e.g. {missing[0]!r}), "
                "so copies of them cannot be screened out",
                "put the images where its file_name values point (beside the file or in images/)"
                + (f", or pass {images_dir_flag} DIR" if images_dir_flag else ""),
            )
    total = sum(len(found) for found, _ in located)
    with progress.task("Hashing excluded images", total=total) as task:
        for found, missing in located:
            result.images += len(found) + len(missing)
            result.missing += len(missing)
            if missing and result.missing_example is None:
                result.missing_example = missing[0]
            for path in found:
                result.keys.add(index.key(path))
                task.advance()
    return result


@dataclass
class Selection:
    """The images to label, in order, with their content keys, and what screening left out."""

    images: list[Path] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    excluded: int = 0  # same content as an image of an --exclude dataset
    duplicates: int = 0  # same content as an earlier source image
    beyond_limit: int = 0  # left out by max_images

    def to_dict(self) -> dict[str, Any]:
        return {"excluded": self.excluded, "duplicates": self.duplicates, "beyond_max_images": self.beyond_limit}


def select_images(
    images: Iterable[Path],
    index: ImageKeyIndex,
    exclude_keys: set[str] | frozenset[str] = frozenset(),
    *,
    max_images: int | None = None,
    total: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> Selection:
    """Screen ``images`` in order: excluded contents and repeats are dropped, at most ``max_images`` kept.

    Only the images needed are hashed: with ``max_images`` the scan stops once enough are kept.
    """
    selection = Selection()
    seen: set[str] = set()
    listed = list(images)
    with progress.task("Hashing images", total=total if total is not None else len(listed)) as task:
        for position, path in enumerate(listed):
            if max_images is not None and len(selection.images) >= max_images:
                selection.beyond_limit = len(listed) - position
                break
            key = index.key(path)
            task.advance()
            if key in exclude_keys:
                selection.excluded += 1
            elif key in seen:
                selection.duplicates += 1
            else:
                seen.add(key)
                selection.images.append(Path(path))
                selection.keys.append(key)
    return selection
