"""Seeded, stratified train/val/test splitting of a COCO dataset.

Stratification is multi-label and per image: each image is described by which categories it
contains (crowd annotations count as presence), plus an extra "empty" column for images without
annotations so those are spread in proportion too. The assignment itself is the iterative
stratification of Sechidis et al. (2011) from the ``iterative-stratification`` package; a short
post-pass then moves the cheapest images so that every split has exactly its rounded share of
images (``ratio * N`` with largest-remainder rounding), the same sizes ``stratify=False`` gives.

The algorithm walks images in index order, so the images are first permuted with a generator seeded
by ``seed``: the same input and seed give the identical split, another seed a different one. Inside
each split, images and annotations keep the order they had in the input file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.errors import DataError, UsageError
from distillkit.io import atomic_write_json
from distillkit.progress import NULL_PROGRESS, Progress

DEFAULT_SPLIT_NAMES: dict[int, tuple[str, ...]] = {2: ("train", "val"), 3: ("train", "val", "test")}
RATIO_EXAMPLE = "e.g. 0.7,0.15,0.15 or train:0.7,val:0.15,test:0.15"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SUM_TOLERANCE = 1e-6
_MAX_SEED = 2**32 - 1  # numpy's legacy RandomState (used by iterstrat) takes 32-bit seeds


# ---------------------------------------------------------------------------------------------
# ratios


def parse_ratios(text: str) -> dict[str, float]:
    """Parse a ``--split`` value into ``{split name: ratio}`` in the order given.

    Accepted forms: ``0.7,0.15,0.15`` (three → train/val/test, two → train/val),
    ``train:0.7,val:0.15,test:0.15`` (any number ≥ 2 of uniquely named parts) and percentages
    summing to 100 (``70,15,15``), which are normalised to fractions. Every ratio must be > 0 and
    the ratios must sum to 1 (within 1e-6). Anything else raises ``UsageError``.
    """
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise UsageError(f"split ratios {text!r} are empty or contain an empty part", RATIO_EXAMPLE)
    named = [":" in part for part in parts]
    if any(named) and not all(named):
        raise UsageError(f"split ratios {text!r} mix named and unnamed parts", "name all parts or none")
    if all(named):
        names = [part.split(":", 1)[0].strip() for part in parts]
        values = [_parse_ratio_value(part.split(":", 1)[1], text) for part in parts]
    else:
        names = list(DEFAULT_SPLIT_NAMES.get(len(parts), ()))
        if not names:
            raise UsageError(
                f"split ratios {text!r} have {len(parts)} part(s); give 2 (train,val) or 3 (train,val,test)",
                f"{RATIO_EXAMPLE}, or name each part for other counts",
            )
        values = [_parse_ratio_value(part, text) for part in parts]
    return _normalise_ratios(dict(_checked_names(names, text)), values, text)


def _parse_ratio_value(raw: str, text: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise UsageError(f"split ratio {raw.strip()!r} in {text!r} is not a number", RATIO_EXAMPLE) from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"split ratio {raw.strip()!r} in {text!r} must be a number > 0", RATIO_EXAMPLE)
    return value


def _checked_names(names: list[str], text: str) -> list[tuple[str, int]]:
    if len(names) < 2:
        raise UsageError(f"split ratios {text!r} name only {len(names)} split; give at least 2", RATIO_EXAMPLE)
    for name in names:
        if not _SPLIT_NAME.match(name):
            raise UsageError(
                f"split name {name!r} in {text!r} is empty or not usable in a file name",
                "use letters, digits, '_', '-' or '.', e.g. train:0.8,val:0.2",
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UsageError(f"split name(s) {', '.join(duplicates)} repeated in {text!r}", "name each split once")
    return [(name, index) for index, name in enumerate(names)]


def _normalise_ratios(order: dict[str, int], values: list[float], text: str) -> dict[str, float]:
    total = math.fsum(values)
    if abs(total - 100.0) <= 100 * _SUM_TOLERANCE and len(values) > 1 and max(values) > 1:
        values = [value / 100.0 for value in values]
        total = math.fsum(values)
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise UsageError(f"split ratios {text!r} sum to {total:g}, not 1 (or 100 for percentages)", RATIO_EXAMPLE)
    return {name: values[index] for name, index in order.items()}


def _checked_ratios(ratios: dict[str, float]) -> dict[str, float]:
    """Validate ratios given from Python (the CLI already used ``parse_ratios``); return normalised."""
    if len(ratios) < 2:
        raise UsageError(f"need at least 2 splits, got {len(ratios)}", RATIO_EXAMPLE)
    text = ",".join(f"{name}:{value}" for name, value in ratios.items())
    _checked_names(list(ratios), text)
    try:
        values = [float(value) for value in ratios.values()]
    except (TypeError, ValueError):
        raise UsageError(f"split ratios {text!r} must all be numbers > 0", RATIO_EXAMPLE) from None
    if any(not math.isfinite(value) or value <= 0 for value in values):
        raise UsageError(f"split ratios {text!r} must all be numbers > 0", RATIO_EXAMPLE)
    total = math.fsum(values)
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise UsageError(f"split ratios {text!r} sum to {total:g}, not 1", RATIO_EXAMPLE)
    return {name: value / total for name, value in zip(ratios, values, strict=True)}


def split_sizes(n: int, ratios: Sequence[float]) -> list[int]:
    """Round ``ratio * n`` per split with the largest-remainder method so the sizes sum to ``n``.

    Ties in the remainder go to the split listed first.
    """
    exact = [round(ratio * n, 9) for ratio in ratios]  # 0.7 * 300 is 209.99999999999997
    sizes = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for index in by_remainder[: n - sum(sizes)]:
        sizes[index] += 1
    return sizes


def check_no_empty_split(n_images: int, ratios: dict[str, float]) -> None:
    """``DataError`` naming the first split that ``ratios`` would leave without images out of ``n_images``.

    ``split_dataset`` itself produces such a split (with an ``empty_split`` warning); the commands that
    write split files refuse it instead: an empty val or test file is rejected by every command reading it.
    """
    if n_images < len(ratios):
        return  # split_dataset says that there are fewer images than splits
    for (name, ratio), size in zip(ratios.items(), split_sizes(n_images, list(ratios.values())), strict=True):
        if size == 0:
            raise DataError(
                f"split '{name}' (ratio {ratio:g}) would get no images ({ratio:g} of {n_images} images rounds to 0), "
                "so no split file was written",
                f"raise its ratio to {_at_least(1 / n_images):g} or more, add images "
                f"({math.ceil(1 / ratio - 1e-9)} or more at {ratio:g}) or ask for fewer splits",
            )


def _at_least(value: float) -> float:
    """``value`` rounded up to 3 significant digits (a shown minimum must not fall below the real one)."""
    scale = 10.0 ** (2 - math.floor(math.log10(value)))
    return math.ceil(value * scale - 1e-9) / scale


# ---------------------------------------------------------------------------------------------
# result


@dataclass(frozen=True)
class CategorySplitStats:
    """One category inside one split."""

    id: int
    name: str
    annotations: int
    images: int
    image_share: float | None  # this split's images of the category / all its images; None if it has none


@dataclass(frozen=True)
class SplitStats:
    """Counts for one split."""

    name: str
    ratio: float
    images: int
    annotations: int
    empty_images: int
    categories: tuple[CategorySplitStats, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "images": self.images,
            "annotations": self.annotations,
            "empty_images": self.empty_images,
            "categories": [
                {
                    "id": c.id,
                    "name": c.name,
                    "annotations": c.annotations,
                    "images": c.images,
                    "image_share": c.image_share,
                }
                for c in self.categories
            ],
        }


@dataclass
class SplitResult:
    """What ``split_dataset`` produced.

    ``datasets`` holds one complete COCO dict per split (its images, exactly their annotations, all
    categories, every other top-level key unchanged). The image/annotation/category dicts inside are
    the input's own objects, not copies.
    """

    datasets: dict[str, dict[str, Any]]
    image_ids: dict[str, list[int]]
    ratios: dict[str, float]
    seed: int
    stratified: bool
    stats: dict[str, SplitStats] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready report: settings, per-split statistics and warnings."""
        return {
            "seed": self.seed,
            "stratified": self.stratified,
            "ratios": dict(self.ratios),
            "total_images": sum(len(ids) for ids in self.image_ids.values()),
            "splits": {name: stats.to_dict() for name, stats in self.stats.items()},
            "warnings": [dict(warning) for warning in self.warnings],
        }


# ---------------------------------------------------------------------------------------------
# splitting


def split_dataset(
    coco: dict[str, Any],
    ratios: dict[str, float],
    seed: int = 42,
    stratify: bool = True,
    min_per_class: int = 1,
    progress: Progress = NULL_PROGRESS,
) -> SplitResult:
    """Split an (already validated) COCO dict into seeded, stratified splits.

    ``ratios`` maps split name → fraction (see ``parse_ratios``). With ``stratify`` the per-image
    class presence (plus an "empty" column) is stratified iteratively; without it the images are
    shuffled and cut. Either way the split sizes are the largest-remainder rounding of
    ``ratio * N``. Warnings flag empty splits and categories with fewer than ``min_per_class``
    images in a split.
    """
    ratios = _checked_ratios(ratios)
    _check_settings(seed, min_per_class)
    images = coco.get("images") or []
    n_images = len(images)
    if n_images == 0:
        raise DataError("the dataset has no images, nothing to split")
    if n_images < len(ratios):
        raise DataError(
            f"the dataset has {n_images} image(s) but {len(ratios)} splits were asked for; "
            f"at least {len(ratios)} images are needed",
            "add images or ask for fewer splits",
        )
    categories = coco.get("categories") or []
    labels, ann_images, ann_cats = _presence_matrix(coco)
    sizes = split_sizes(n_images, list(ratios.values()))
    with progress.task("Assigning images to splits", total=None) as task:
        if stratify:
            folds = _stratified_folds(labels, np.array(list(ratios.values())), sizes, seed)
        else:
            folds = _shuffled_folds(n_images, sizes, seed)
        task.advance()
    names = list(ratios)
    datasets, image_ids = _build_datasets(coco, names, folds, ann_images, progress)
    stats = _split_stats(names, ratios, folds, labels, ann_images, ann_cats, categories)
    return SplitResult(
        datasets=datasets,
        image_ids=image_ids,
        ratios=ratios,
        seed=seed,
        stratified=stratify,
        stats=stats,
        warnings=_split_warnings(stats, min_per_class),
    )


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_settings(seed: int, min_per_class: int) -> None:
    if not _is_int(seed) or not 0 <= seed <= _MAX_SEED:
        raise UsageError(f"seed must be an integer from 0 to {_MAX_SEED}, got {seed!r}", "e.g. --seed 42")
    if not _is_int(min_per_class) or min_per_class < 0:
        raise UsageError(f"min_per_class must be an integer >= 0, got {min_per_class!r}")


def _presence_matrix(coco: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (labels, image index of each annotation, category index of each annotation).

    ``labels`` is a bool array (images × (categories + 1)): column j says the image has at least one
    annotation of the j-th category (crowd ones included); the last column marks images with none.
    """
    image_index = {}
    for index, image in enumerate(coco["images"]):
        if image["id"] in image_index:
            raise DataError(f"image id {image['id']} appears more than once", "run distillkit validate first")
        image_index[image["id"]] = index
    category_index = {category["id"]: index for index, category in enumerate(coco.get("categories") or [])}
    annotations = coco.get("annotations") or []
    count = len(annotations)
    try:
        ann_images = np.fromiter((image_index[a["image_id"]] for a in annotations), np.int64, count)
        ann_cats = np.fromiter((category_index[a["category_id"]] for a in annotations), np.int64, count)
    except KeyError as exc:
        raise DataError(
            f"an annotation refers to image or category id {exc.args[0]} that does not exist",
            "run distillkit validate first",
        ) from None
    labels = np.zeros((len(image_index), len(category_index) + 1), dtype=bool)
    labels[ann_images, ann_cats] = True
    labels[:, -1] = ~labels[:, :-1].any(axis=1)
    return labels, ann_images, ann_cats


def _shuffled_folds(n_images: int, sizes: list[int], seed: int) -> np.ndarray:
    """Plain seeded shuffle: the first ``sizes[0]`` shuffled images go to split 0, and so on."""
    order = np.random.default_rng(seed).permutation(n_images)
    folds = np.empty(n_images, dtype=np.int64)
    folds[order] = np.repeat(np.arange(len(sizes)), sizes)
    return folds


def _stratified_folds(labels: np.ndarray, ratios: np.ndarray, sizes: list[int], seed: int) -> np.ndarray:
    """Iterative stratification on seeded-permuted images, then exact sizes; fold per original image."""
    from iterstrat.ml_stratifiers import IterativeStratification
    from sklearn.utils import check_random_state

    order = np.random.default_rng(seed).permutation(labels.shape[0])
    permuted = np.ascontiguousarray(labels[order])  # must stay bool: iterstrat masks columns with a row
    permuted_folds = IterativeStratification(permuted, ratios, check_random_state(seed))
    permuted_folds = _rebalance_sizes(permuted, np.asarray(permuted_folds, dtype=np.int64), ratios, sizes)
    folds = np.empty_like(permuted_folds)
    folds[order] = permuted_folds
    return folds


def _rebalance_sizes(labels: np.ndarray, folds: np.ndarray, ratios: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Move images from over- to under-sized splits until every split has exactly ``sizes`` images.

    Iterative stratification lands a few images off the target sizes. Each move takes, from the
    most over-full split to the most under-full one, the image whose move worsens the per-label
    deviation from the desired counts the least, measured as a share of each label's total (so
    rare labels weigh more). Ties go to the earliest (seeded-permuted) image.
    """
    folds = folds.copy()
    weights = 1.0 / np.maximum(labels.sum(axis=0), 1)
    desired = np.outer(ratios, labels.sum(axis=0))
    counts = np.stack([labels[folds == k].sum(axis=0) for k in range(len(sizes))]).astype(float)
    target = np.asarray(sizes)
    while True:
        surplus = np.bincount(folds, minlength=len(sizes)) - target
        if not surplus.any():
            return folds
        source, dest = int(np.argmax(surplus)), int(np.argmin(surplus))
        dev = np.abs(counts - desired)
        cost_out = np.abs(counts[source] - 1 - desired[source]) - dev[source]
        cost_in = np.abs(counts[dest] + 1 - desired[dest]) - dev[dest]
        candidates = np.flatnonzero(folds == source)
        costs = labels[candidates].astype(float) @ ((cost_out + cost_in) * weights)
        moved = candidates[int(np.argmin(costs))]
        folds[moved] = dest
        counts[source] -= labels[moved]
        counts[dest] += labels[moved]


def _build_datasets(
    coco: dict[str, Any],
    names: list[str],
    folds: np.ndarray,
    image_index_of_ann: np.ndarray,
    progress: Progress,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]]]:
    """One COCO dict per split; images and annotations keep the input order."""
    images = coco["images"]
    annotations = coco.get("annotations") or []
    ann_folds = folds[image_index_of_ann]
    datasets: dict[str, dict[str, Any]] = {}
    image_ids: dict[str, list[int]] = {}
    with progress.task("Building split datasets", total=len(names)) as task:
        for k, name in enumerate(names):
            split_images = [images[i] for i in np.flatnonzero(folds == k)]
            split_annotations = [annotations[i] for i in np.flatnonzero(ann_folds == k)]
            dataset = {}
            for key, value in coco.items():
                if key == "images":
                    dataset[key] = split_images
                elif key == "annotations":
                    dataset[key] = split_annotations
                else:
                    dataset[key] = value
            dataset.setdefault("annotations", split_annotations)
            dataset.setdefault("categories", [])
            datasets[name] = dataset
            image_ids[name] = [image["id"] for image in split_images]
            task.advance()
    return datasets, image_ids


def _split_stats(
    names: list[str],
    ratios: dict[str, float],
    folds: np.ndarray,
    labels: np.ndarray,
    image_index_of_ann: np.ndarray,
    ann_cats: np.ndarray,
    categories: list[dict[str, Any]],
) -> dict[str, SplitStats]:
    """Per split: image, annotation and empty-image counts, and per category counts and shares."""
    ann_folds = folds[image_index_of_ann]
    n_cats = len(categories)
    images_per_cat = labels[:, :n_cats].sum(axis=0)
    stats: dict[str, SplitStats] = {}
    for k, name in enumerate(names):
        in_split = folds == k
        cat_images = labels[in_split, :n_cats].sum(axis=0)
        cat_anns = np.bincount(ann_cats[ann_folds == k], minlength=n_cats)
        stats[name] = SplitStats(
            name=name,
            ratio=ratios[name],
            images=int(in_split.sum()),
            annotations=int((ann_folds == k).sum()),
            empty_images=int(labels[in_split, -1].sum()),
            categories=tuple(
                CategorySplitStats(
                    id=category["id"],
                    name=str(category.get("name", category["id"])),
                    annotations=int(cat_anns[j]),
                    images=int(cat_images[j]),
                    image_share=float(cat_images[j] / images_per_cat[j]) if images_per_cat[j] else None,
                )
                for j, category in enumerate(categories)
            ),
        )
    return stats


def _split_warnings(stats: dict[str, SplitStats], min_per_class: int) -> list[dict[str, Any]]:
    """``empty_split`` for a split without images; otherwise ``class_below_min_in_split``."""
    warnings: list[dict[str, Any]] = []
    for name, split in stats.items():
        if split.images == 0:
            warnings.append(
                {
                    "code": "empty_split",
                    "message": f"split '{name}' (ratio {split.ratio:g}) got no images; raise its ratio or add images",
                    "split": name,
                    "category_ids": [],
                }
            )
            continue
        short = [c for c in split.categories if c.image_share is not None and c.images < min_per_class]
        if short:
            listed = ", ".join(f"{c.name} ({c.images})" for c in short)
            warnings.append(
                {
                    "code": "class_below_min_in_split",
                    "message": f"split '{name}' has fewer than {min_per_class} image(s) of "
                    f"{len(short)} class(es): {listed}",
                    "split": name,
                    "category_ids": [c.id for c in short],
                }
            )
    return warnings


# ---------------------------------------------------------------------------------------------
# writing


def split_paths(names: Sequence[str], output_dir: str | Path, stem: str = "") -> dict[str, Path]:
    """Where ``write_splits`` puts each split: ``<split>.json`` or ``<stem>_<split>.json``."""
    folder = Path(output_dir)
    return {name: folder / (f"{stem}_{name}.json" if stem else f"{name}.json") for name in names}


def write_splits(
    result: SplitResult,
    output_dir: str | Path,
    stem: str = "",
    protect: Sequence[str | Path] = (),
) -> dict[str, Path]:
    """Write each split's COCO dict as compact JSON, atomically; return split name → path.

    Files are ``<split>.json`` when ``stem`` is empty, else ``<stem>_<split>.json``. A target that
    is one of the ``protect`` paths (the input annotation file) is refused before anything is written.
    """
    paths = split_paths(list(result.datasets), output_dir, stem)
    protected = {Path(path).resolve() for path in protect}
    for name, path in paths.items():
        if path.resolve() in protected:
            raise UsageError(
                f"writing split '{name}' would overwrite the input file {path}",
                "pass --output-dir to write the splits elsewhere",
            )
    for name, path in paths.items():
        atomic_write_json(path, result.datasets[name], indent=False)
    return paths
