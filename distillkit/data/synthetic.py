"""A small synthetic inspection dataset: the shipped example and a fixture for tests.

``generate_inspection_dataset`` writes PNG images of textured metal/plastic surfaces with four
defect classes drawn on them, and a full COCO ``annotations.json`` describing them::

    OUT/annotations.json
    OUT/images/0000.png, 0001.png, ...

``file_name`` in the JSON is ``images/0000.png``: a path relative to the folder holding the JSON,
which is the first place distillkit (and most COCO tools) look for an image.

Classes and how they look (a detector can learn them from shape *and* shading):

- ``scratch``: thin, slightly curved bright band (specular); about a quarter are broken in two,
  giving a two-part polygon.
- ``stain``: irregular blob, a translucent rust/brown tint (a light residue on dark surfaces).
- ``dent``: rotated ellipse, shaded dark on the side away from the light.
- ``hole``: small, nearly black disc. Deliberately rare (about 8% of objects).

Each object's pixels are exactly the pixels pycocotools rasterises from its polygon: the object
mask is decoded from the same RLE that gives the annotation's ``bbox`` and ``area``
(``mask.frPyObjects`` + ``merge`` + ``toBbox`` / ``area``). Pillow's polygon fill rounds edges
differently (IoU with the COCO raster is about 0.6-0.8 on thin scratches), so it is not used for
the objects. Objects never overlap (they may touch), so no annotation is hidden by another.

Everything is seeded: the same ``seed`` gives byte-identical JSON and identical pixels. Image ``i``
draws from its own generator, ``image_rng(seed, i)``, so ``synthesize_image`` can rebuild any one
image (with its clean background) without the others.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from distillkit.errors import UsageError
from distillkit.io import atomic_write_bytes, atomic_write_json
from distillkit.progress import NULL_PROGRESS, Progress

__all__ = [
    "CATEGORIES",
    "DefectClass",
    "SyntheticImage",
    "SyntheticObject",
    "generate_inspection_dataset",
    "image_rng",
    "synthesize_image",
]

ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"
MAX_OBJECTS_PER_IMAGE = 6
_PLACEMENT_TRIES = 25
_MIN_SIDE = 64


@dataclass(frozen=True)
class DefectClass:
    id: int
    name: str
    frequency: float  # share of drawn objects; the imbalance is deliberate


CATEGORIES: tuple[DefectClass, ...] = (
    DefectClass(1, "scratch", 0.45),
    DefectClass(2, "stain", 0.27),
    DefectClass(3, "dent", 0.20),
    DefectClass(4, "hole", 0.08),
)


@dataclass(frozen=True)
class SyntheticObject:
    category_id: int
    segmentation: list[list[float]]  # COCO polygon parts, [x1, y1, x2, y2, ...] each
    bbox: list[float]  # [x, y, w, h] as pycocotools computes it
    area: float  # pixel count as pycocotools computes it


@dataclass(frozen=True)
class SyntheticImage:
    pixels: np.ndarray  # (H, W, 3) uint8: what is written to the PNG
    background: np.ndarray  # (H, W, 3) uint8: the same surface before any object was drawn
    objects: tuple[SyntheticObject, ...]


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator image ``index`` of a dataset generated with ``seed`` draws from."""
    return np.random.default_rng([seed, index])


# --------------------------------------------------------------------------------------------
# Surfaces


_SURFACES: tuple[tuple[float, float, float], ...] = (
    (150.0, 153.0, 158.0),  # brushed steel
    (186.0, 188.0, 192.0),  # aluminium
    (72.0, 74.0, 80.0),  # dark plastic
    (176.0, 166.0, 142.0),  # beige plastic
    (108.0, 118.0, 134.0),  # anodised blue-grey
)


def _surface(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Float32 (H, W, 3): base colour, lighting gradient, brushing streaks and sensor noise."""
    base = np.asarray(_SURFACES[rng.integers(len(_SURFACES))], dtype=np.float32)
    ys = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    angle = rng.uniform(0.0, 2.0 * math.pi)
    light = np.float32(rng.uniform(8.0, 22.0)) * (np.cos(angle) * xs + np.sin(angle) * ys)
    # Brushing: one random offset per row (or column), slowly modulated along it.
    if rng.random() < 0.5:
        streaks = rng.standard_normal((height, 1), dtype=np.float32)
        along = np.linspace(0.0, rng.uniform(2.0, 6.0), width, dtype=np.float32)[None, :]
    else:
        streaks = rng.standard_normal((1, width), dtype=np.float32)
        along = np.linspace(0.0, rng.uniform(2.0, 6.0), height, dtype=np.float32)[:, None]
    brushed = np.float32(rng.uniform(2.0, 5.0)) * streaks * (1.0 + 0.5 * np.sin(along + rng.uniform(0, 6)))
    grey = light + brushed + rng.standard_normal((height, width), dtype=np.float32) * np.float32(2.5)
    tint_noise = rng.standard_normal((height, width, 3), dtype=np.float32) * np.float32(1.2)
    return base + grey[:, :, None] + tint_noise


# --------------------------------------------------------------------------------------------
# Object shapes: polygon parts around (0, 0), as float64 (N, 2) arrays


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _scratch_parts(rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    length = rng.uniform(0.15, 0.45) * scale
    half_width = max(0.7, rng.uniform(0.6, 1.6) * scale / 240.0)
    bow = rng.uniform(-0.08, 0.08) * length
    spans = [(0.0, 1.0)]
    if rng.random() < 0.25:  # broken scratch: two collinear pieces with a gap
        cut = rng.uniform(0.35, 0.6)
        gap = rng.uniform(0.06, 0.15)
        spans = [(0.0, cut), (cut + gap, 1.0)]
    angle = rng.uniform(0.0, math.pi)
    parts = []
    for start, stop in spans:
        t = np.linspace(start, stop, 7)
        x = (t - 0.5) * length
        y = bow * (1.0 - (2.0 * t - 1.0) ** 2) + rng.normal(0.0, 0.4, t.size)
        taper = half_width * (0.45 + 0.55 * np.sin(np.pi * t))
        upper = np.stack([x, y - taper], axis=1)
        lower = np.stack([x, y + taper], axis=1)[::-1]
        parts.append(_rotate(np.concatenate([upper, lower]), angle))
    return parts


def _ellipse(rng: np.random.Generator, rx: float, ry: float, vertices: int, jitter: float) -> np.ndarray:
    theta = np.linspace(0.0, 2.0 * math.pi, vertices, endpoint=False)
    r = 1.0 + rng.normal(0.0, jitter, vertices)
    points = np.stack([rx * r * np.cos(theta), ry * r * np.sin(theta)], axis=1)
    return _rotate(points, rng.uniform(0.0, math.pi))


def _stain_parts(rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    radius = rng.uniform(0.06, 0.14) * scale
    vertices = 28
    theta = np.linspace(0.0, 2.0 * math.pi, vertices, endpoint=False)
    wobble = np.zeros(vertices)
    for harmonic in (2, 3, 5):  # smooth irregular outline: a few low harmonics with random phase
        wobble += rng.uniform(0.04, 0.14) * np.sin(harmonic * theta + rng.uniform(0.0, 2.0 * math.pi))
    r = radius * (1.0 + wobble + rng.normal(0.0, 0.03, vertices))
    return [np.stack([r * np.cos(theta), r * np.sin(theta) * rng.uniform(0.6, 1.0)], axis=1)]


def _dent_parts(rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    rx = rng.uniform(0.04, 0.10) * scale
    return [_ellipse(rng, rx, rx * rng.uniform(0.5, 0.9), 20, 0.03)]


def _hole_parts(rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    r = max(2.5, rng.uniform(0.015, 0.035) * scale)
    return [_ellipse(rng, r, r, 16, 0.0)]


_SHAPES: dict[str, Callable[[np.random.Generator, float], list[np.ndarray]]] = {
    "scratch": _scratch_parts,
    "stain": _stain_parts,
    "dent": _dent_parts,
    "hole": _hole_parts,
}


# --------------------------------------------------------------------------------------------
# Shading: new colours for the pixels of one object, inside its bounding box


def _shade(name: str, rng: np.random.Generator, patch: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """New float32 colours for ``patch`` (the surface under the object's box ``x0, y0, x1, y1``)."""
    x0, y0, x1, y1 = box
    if name == "scratch":  # specular: pushed towards near-white
        bright = np.float32(rng.uniform(225.0, 250.0))
        return patch * np.float32(0.35) + bright * np.float32(0.65)
    if name == "stain":  # translucent tint; light residue on dark surfaces, rust elsewhere
        dark_surface = float(patch.mean()) < 120.0
        tint = (205.0, 200.0, 185.0) if dark_surface else (128.0, 84.0, 44.0)
        mottle = rng.standard_normal(patch.shape[:2], dtype=np.float32) * np.float32(0.06)
        alpha = (np.float32(rng.uniform(0.55, 0.75)) + mottle)[:, :, None]
        return patch * (1 - alpha) + np.asarray(tint, dtype=np.float32) * alpha
    if name == "dent":  # darker away from the light, with a soft highlight on the lit rim
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        half = max(x1 - x0, y1 - y0) / 2.0
        angle = rng.uniform(0.0, 2.0 * math.pi)
        side = ((xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)) / half  # -1 lit .. 1 shaded
        factor = np.clip(0.62 - 0.22 * side, 0.35, 0.85)
        return patch * factor[:, :, None]
    # hole: nearly black, slightly lighter towards the rim
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    rim = np.hypot(xs - cx, ys - cy) / max(1.0, (x1 - x0) / 2.0)
    value = np.float32(rng.uniform(14.0, 30.0)) + np.float32(18.0) * np.clip(rim, 0.0, 1.0)
    return np.repeat(value[:, :, None], 3, axis=2) + patch * np.float32(0.05)


# --------------------------------------------------------------------------------------------
# One image


def _place(parts: list[np.ndarray], rng: np.random.Generator, width: int, height: int) -> list[list[float]] | None:
    """Translate the shape to a random spot fully inside the image; coordinates rounded to 0.01."""
    points = np.concatenate(parts)
    low, high = points.min(axis=0), points.max(axis=0)
    room_x = (width - 1.0) - (high[0] - low[0])
    room_y = (height - 1.0) - (high[1] - low[1])
    if room_x <= 1.0 or room_y <= 1.0:
        return None
    shift = np.array([1.0 + rng.uniform(0.0, room_x - 1.0), 1.0 + rng.uniform(0.0, room_y - 1.0)]) - low
    return [np.round(part + shift, 2).ravel().tolist() for part in parts]


def _pick_category(rng: np.random.Generator) -> DefectClass:
    weights = np.array([c.frequency for c in CATEGORIES])
    return CATEGORIES[int(rng.choice(len(CATEGORIES), p=weights / weights.sum()))]


def synthesize_image(rng: np.random.Generator, width: int, height: int, empty: bool = False) -> SyntheticImage:
    """Draw one inspection image; 1-6 non-overlapping defects unless ``empty``."""
    surface = _surface(rng, width, height)
    canvas = surface.copy()
    occupied = np.zeros((height, width), dtype=bool)
    objects: list[SyntheticObject] = []
    wanted = 0 if empty else int(rng.integers(1, MAX_OBJECTS_PER_IMAGE + 1))
    scale = float(min(width, height))
    for _ in range(wanted):
        category = _pick_category(rng)
        for _try in range(_PLACEMENT_TRIES):
            segmentation = _place(_SHAPES[category.name](rng, scale), rng, width, height)
            if segmentation is None:
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            area = int(mask_utils.area(rle))
            if area == 0:
                continue
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            x0, y0 = int(bbox[0]), int(bbox[1])
            x1, y1 = x0 + int(bbox[2]), y0 + int(bbox[3])
            mask = _decode(rle)[y0:y1, x0:x1].astype(bool)
            if (occupied[y0:y1, x0:x1] & mask).any():
                continue  # overlapping would hide part of an annotated object
            occupied[y0:y1, x0:x1] |= mask
            shaded = _shade(category.name, rng, surface[y0:y1, x0:x1], (x0, y0, x1, y1))
            region = canvas[y0:y1, x0:x1]
            region[mask] = shaded[mask]
            objects.append(SyntheticObject(category.id, segmentation, bbox, float(area)))
            break
    return SyntheticImage(pixels=_to_uint8(canvas), background=_to_uint8(surface), objects=tuple(objects))


def _decode(rle: dict) -> np.ndarray:
    with warnings.catch_warnings():
        # pycocotools <= 2.0.11 under numpy 2 warns about ``__array__(copy=...)`` on every decode.
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return mask_utils.decode(rle)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Level 1: these noisy surfaces barely compress further, and encoding dominates the run time.
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# The dataset


def generate_inspection_dataset(
    output_dir: str | Path,
    num_images: int = 60,
    seed: int = 0,
    image_size: tuple[int, int] = (320, 240),
    empty_fraction: float = 0.15,
    progress: Progress = NULL_PROGRESS,
) -> Path:
    """Write a synthetic inspection dataset under ``output_dir``; return the annotation file's path.

    ``image_size`` is (width, height). ``round(num_images * empty_fraction)`` images, chosen at
    random, have no objects. Images are written first and the JSON last, each atomically, so an
    existing ``annotations.json`` always describes complete images. Files from an earlier, larger
    run into the same folder are not removed.
    """
    width, height = (int(v) for v in image_size)
    if num_images < 1:
        raise UsageError(f"num_images must be at least 1, got {num_images}")
    if width < _MIN_SIDE or height < _MIN_SIDE:
        raise UsageError(f"image_size must be at least {_MIN_SIDE}x{_MIN_SIDE}, got {width}x{height}")
    if not 0.0 <= empty_fraction <= 1.0:
        raise UsageError(f"empty_fraction must be between 0 and 1, got {empty_fraction}")
    if seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed}")

    root = Path(output_dir)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    num_empty = round(num_images * empty_fraction)
    empty = np.zeros(num_images, dtype=bool)
    empty[np.random.default_rng(seed).permutation(num_images)[:num_empty]] = True
    digits = max(4, len(str(num_images - 1)))

    images: list[dict] = []
    annotations: list[dict] = []
    with progress.task("Drawing synthetic inspection images", total=num_images) as task:
        for index in range(num_images):
            drawn = synthesize_image(image_rng(seed, index), width, height, empty=bool(empty[index]))
            file_name = f"{IMAGES_DIR}/{index:0{digits}d}.png"
            atomic_write_bytes(root / file_name, _png_bytes(drawn.pixels))
            image_id = index + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": width,
                    "height": height,
                    "license": 1,
                    "date_captured": "",
                }
            )
            for obj in drawn.objects:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": obj.category_id,
                        "segmentation": obj.segmentation,
                        "bbox": obj.bbox,
                        "area": obj.area,
                        "iscrowd": 0,
                    }
                )
            task.advance(1)

    coco = {
        "info": {
            "description": f"distillkit synthetic inspection dataset (seed {seed})",
            "version": "1.0",
            "year": 2025,
            "contributor": "distillkit",
            "url": "",
            "date_created": "",  # left empty so the same seed gives byte-identical files
        },
        "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.id, "name": c.name, "supercategory": "defect"} for c in CATEGORIES],
    }
    path = root / ANNOTATIONS_FILE
    atomic_write_json(path, coco)
    return path
