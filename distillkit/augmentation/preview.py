"""A picture of what the augmentation pipeline does to real images, for a person to check.

``render_augmentation_preview`` picks a few annotated images of a COCO dataset, draws them with
their masks and boxes, runs the pipeline on them and draws the results underneath: row one is the
input, row two the output. The PNG is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from distillkit.augmentation.pipeline import AugmentationPipeline, pipeline_from_config
from distillkit.augmentation.plan import PipelinePlan
from distillkit.config.build import build_config
from distillkit.config.overrides import ConfigOverrides, as_overrides
from distillkit.config.schema import AugmentationConfig
from distillkit.data.images import ImageLocator
from distillkit.errors import DataError, UsageError
from distillkit.images import read_pil
from distillkit.io import atomic_open
from distillkit.progress import NULL_PROGRESS, Progress

MAX_PREVIEW_SIDE = 512  # images are shrunk to this before augmenting: the grid is for eyes, not metrics
SECTION = "augmentation"


@dataclass(frozen=True)
class AugmentationPreview:
    path: Path
    image_ids: list[int]
    objects_before: int
    objects_after: int
    plan: PipelinePlan

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "image_ids": self.image_ids,
            "objects_before": self.objects_before,
            "objects_after": self.objects_after,
            "pipeline": self.plan.to_dict(),
        }


def augmentation_config(overrides: ConfigOverrides = ()) -> AugmentationConfig:
    """The shipped ``augmentation`` section with ``augmentation.KEY`` overrides applied."""
    parsed = as_overrides(overrides)
    for override in parsed:
        if override.section != SECTION:
            raise UsageError(
                f"--set '{override.text}' is not an augmentation setting",
                f"this command only takes --set {SECTION}.KEY=VALUE",
            )
    return build_config([SECTION], overrides=parsed).augmentation


def render_augmentation_preview(
    dataset: Mapping[str, Any],
    image_roots: Sequence[Path],
    output: str | Path,
    config: AugmentationConfig,
    count: int = 4,
    progress: Progress = NULL_PROGRESS,
) -> AugmentationPreview:
    """Draw ``count`` images of ``dataset`` before and after ``config``'s pipeline into ``output`` (PNG)."""
    if count < 1:
        raise UsageError(f"preview count must be at least 1, got {count}")
    target = Path(output)
    if target.suffix.lower() != ".png":
        raise UsageError(f"preview file {target} is not a .png", "name the preview file something.png")
    pipeline = pipeline_from_config(config)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in dataset.get("categories", [])}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in dataset.get("annotations", []):
        by_image.setdefault(int(annotation["image_id"]), []).append(annotation)

    samples = _load_samples(dataset, by_image, ImageLocator(list(image_roots)), count)
    if not samples:
        raise DataError(
            "none of the dataset's images could be opened for the preview",
            "pass --images-dir with the folder holding them",
        )
    panels: list[tuple[_Sample, _Sample]] = []
    with progress.task("augmenting preview images", total=len(samples)) as bar:
        for sample in samples:
            panels.append((sample, _augment(pipeline, sample)))
            bar.advance(1)
    _draw(panels, names, pipeline, target)
    return AugmentationPreview(
        path=target,
        image_ids=[sample.image_id for sample in samples],
        objects_before=sum(len(before.labels) for before, _ in panels),
        objects_after=sum(len(after.labels) for _, after in panels),
        plan=pipeline.plan,
    )


@dataclass
class _Sample:
    image_id: int
    pixels: np.ndarray
    boxes: np.ndarray
    masks: list[np.ndarray] | None  # None when the annotations have no segmentation
    labels: list[int]


def _load_samples(
    dataset: Mapping[str, Any], by_image: dict[int, list[dict[str, Any]]], locator: ImageLocator, count: int
) -> list[_Sample]:
    # Annotated images first, spread evenly over the file so the preview is not all from one batch.
    images = sorted(dataset.get("images", []), key=lambda image: (int(image["id"]) not in by_image, int(image["id"])))
    annotated = [image for image in images if int(image["id"]) in by_image] or images
    step = max(1, len(annotated) // count)
    ordered = annotated[::step] + [image for image in images if image not in annotated[::step]]
    samples: list[_Sample] = []
    for image in ordered:
        if len(samples) == count:
            break
        path = locator.resolve(str(image.get("file_name", "")))
        if path is None:
            continue
        sample = _sample(image, by_image.get(int(image["id"]), []), path)
        if sample is not None:
            samples.append(sample)
    return samples


def _sample(image: Mapping[str, Any], annotations: list[dict[str, Any]], path: Path) -> _Sample | None:
    width, height = int(image["width"]), int(image["height"])
    try:
        picture = read_pil(path)
    except DataError:
        return None
    scale = min(1.0, MAX_PREVIEW_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    pixels = np.asarray(picture.resize(size, Image.Resampling.BILINEAR) if picture.size != size else picture)
    has_masks = any(annotation.get("segmentation") for annotation in annotations)
    boxes, masks, labels = [], [], []
    for annotation in annotations:
        boxes.append([float(v) * scale for v in annotation["bbox"]])
        labels.append(int(annotation["category_id"]))
        if has_masks:
            full = _decode(annotation.get("segmentation"), height, width)
            masks.append(np.asarray(Image.fromarray(full).resize(size, Image.Resampling.NEAREST)))
    return _Sample(
        int(image["id"]), pixels, np.array(boxes, np.float32).reshape(-1, 4), masks if has_masks else None, labels
    )


def _decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Binary mask of a (validated) COCO segmentation; empty when there is none."""
    if not segmentation:
        return np.zeros((height, width), np.uint8)
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(np.uint8)


def _augment(pipeline: AugmentationPipeline, sample: _Sample) -> _Sample:
    result = pipeline(image=sample.pixels, masks=sample.masks, bboxes=sample.boxes, labels=sample.labels)
    return _Sample(sample.image_id, result["image"], result["bboxes"], result.get("masks"), result["labels"])


def _draw(
    panels: list[tuple[_Sample, _Sample]], names: dict[int, str], pipeline: AugmentationPipeline, target: Path
) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: nothing global, cheaper to set up
    from matplotlib.patches import Rectangle

    colours = colormaps["tab10"]
    palette = {category: colours(index % 10) for index, category in enumerate(sorted(names))}
    height, width = panels[0][0].pixels.shape[:2]
    figure = Figure(figsize=(3.2 * len(panels), 2 * 3.2 * height / width + 0.9), dpi=110)
    for column, pair in enumerate(panels):
        for row, sample in enumerate(pair):
            axes = figure.add_subplot(2, len(panels), row * len(panels) + column + 1)
            axes.imshow(sample.pixels)
            if sample.masks:
                overlay = np.zeros((*sample.pixels.shape[:2], 4), np.float32)
                for mask, label in zip(sample.masks, sample.labels, strict=True):
                    overlay[mask.astype(bool)] = (*palette.get(label, (1, 0, 0, 1))[:3], 0.45)
                axes.imshow(overlay)
            for (x, y, w, h), label in zip(sample.boxes.tolist(), sample.labels, strict=True):
                colour = palette.get(label, (1, 0, 0, 1))
                axes.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=1.2))
                axes.text(
                    x,
                    y,
                    names.get(label, str(label)),
                    color="white",
                    fontsize=6,
                    va="bottom",
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
                )
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.set_ylabel("before" if row == 0 else "after")
            if row == 0:
                axes.set_title(f"image {sample.image_id}", fontsize=8)
    plan = pipeline.plan
    steps = ", ".join(step.name for step in plan.steps) or "nothing (identity)"
    figure.suptitle(f"augmentation, intensity {plan.intensity}: {steps}", fontsize=8, wrap=True)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, "wb") as handle:
        figure.savefig(handle, format="png")
