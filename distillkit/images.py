"""Reading image files: one reader, one orientation rule, for every command.

**The rule: an image is what it looks like when displayed** — the EXIF ``Orientation`` tag is
applied (Pillow's ``ImageOps.exif_transpose``), so a phone photo stored sideways with
``Orientation=6`` is read upright, and its width and height are those of the upright picture. This
is what the rest of the stack already does: OpenCV's ``imread``/``imdecode`` rotate JPEG, PNG and
WebP by their EXIF tag, so ultralytics (which trains and predicts the students from the file paths)
reads them upright, and its ``exif_size`` reports the rotated size; CVAT and Label Studio show and
annotate the upright picture, so COCO boxes, masks and ``width``/``height`` are in that frame.
Teachers, labelling, the YOLO conversion, classifiers, ``validate`` and ``infer`` therefore all
agree on where an object is.

16-bit images keep their high byte (as OpenCV and ultralytics read them), other modes are
converted to RGB by Pillow. A file that cannot be decoded (missing, truncated, not an image) is a
``DataError`` naming it, never a Pillow traceback. Nothing here imports the rest of distillkit but
its errors: every layer may read images through this module.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from distillkit.errors import DataError

ORIENTATION_TAG = 0x0112
#: EXIF orientations 5-8 turn the picture by 90°: displayed width and height are the stored ones swapped.
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
#: What Pillow raises for a file it cannot open or decode (truncated data, a text file named .jpg, ...).
_READ_ERRORS = (OSError, ValueError, EOFError, SyntaxError, IndexError, struct.error, Image.DecompressionBombError)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_TIFF_WIDTH, _TIFF_LENGTH = 256, 257

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ImageHeader:
    """An image file's size from its header (no pixels decoded), in the displayed orientation."""

    width: int  # as displayed: EXIF orientation applied
    height: int
    stored_width: int  # as the pixels are stored in the file
    stored_height: int
    orientation: int  # the EXIF Orientation value, 1 when absent or unreadable

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as displayed."""
        return self.width, self.height

    @property
    def stored_size(self) -> tuple[int, int]:
        return self.stored_width, self.stored_height


def _unreadable(path: PathLike, exc: BaseException) -> DataError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return DataError(f"cannot read image {os.fspath(path)} ({reason})", "remove or replace the file")


def _orientation(image: Image.Image) -> int:
    """The EXIF Orientation (1-8); a broken EXIF block counts as no orientation, not as a broken image."""
    try:
        value = int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _stored_size(image: Image.Image) -> tuple[int, int]:
    # Pillow's TIFF reader reports the size with the orientation already applied (it transposes on
    # load); the stored size is in the TIFF tags. Every other reader reports the stored size.
    tags: Any = getattr(image, "tag_v2", None)
    if tags is not None:
        try:
            return int(tags[_TIFF_WIDTH]), int(tags[_TIFF_LENGTH])
        except (KeyError, TypeError, ValueError):
            pass
    return image.size


def image_header(path: PathLike) -> ImageHeader:
    """Width/height as displayed (and as stored) from the file header; ``DataError`` when unreadable.

    Only the header is parsed, so a truncated file passes here and fails when its pixels are read.
    """
    try:
        with Image.open(path) as image:
            orientation = _orientation(image)
            stored_width, stored_height = _stored_size(image)
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = stored_height, stored_width
    else:
        width, height = stored_width, stored_height
    return ImageHeader(width, height, stored_width, stored_height, orientation)


def image_size(path: PathLike) -> tuple[int, int]:
    """(width, height) as displayed, from the header; ``DataError`` when unreadable."""
    return image_header(path).size


def _decoded(path: PathLike) -> Image.Image:
    """The file's pixels, decoded and upright, detached from the file."""
    try:
        with Image.open(path) as opened:
            opened.load()  # decoding errors (truncated data) surface here, apart from EXIF parsing below
            try:
                return ImageOps.exif_transpose(opened)
            except (*_READ_ERRORS, KeyError, TypeError):
                # An EXIF block Pillow cannot parse: no orientation, as ``image_header`` decides too.
                return opened.copy()
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None


def _rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:
        # As OpenCV/ultralytics read 16-bit files: keep the high byte (Pillow's convert would clip at 255).
        grey = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)  # a writable copy: torch warns about read-only arrays


def _check_size(path: PathLike, pixels: np.ndarray, expect_size: tuple[int, int] | None) -> None:
    if expect_size is None:
        return
    height, width = pixels.shape[:2]
    if (width, height) != (int(expect_size[0]), int(expect_size[1])):
        raise DataError(
            f"image {os.fspath(path)} is {width}x{height} as displayed (EXIF orientation applied) but the "
            f"annotations say {expect_size[0]}x{expect_size[1]}",
            "run 'distillkit validate' to find size mismatches",
        )


def read_rgb(path: PathLike, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) ``uint8`` RGB pixels as displayed; ``DataError`` when unreadable.

    ``expect_size`` — the (width, height) the annotations give — turns a different size into a
    ``DataError`` instead of boxes silently landing elsewhere.
    """
    pixels = _rgb_array(_decoded(path))
    _check_size(path, pixels, expect_size)
    return pixels


def read_bgr(path: PathLike, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """``read_rgb`` in OpenCV's channel order, for code that feeds ultralytics' transforms."""
    return np.ascontiguousarray(read_rgb(path, expect_size)[:, :, ::-1])


def read_pil(path: PathLike) -> Image.Image:
    """An RGB Pillow image as displayed; ``DataError`` when unreadable."""
    image = _decoded(path)
    if image.mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(_rgb_array(image))
    return image if image.mode == "RGB" else image.convert("RGB")
