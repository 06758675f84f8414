"""COCO ground truth → Grounding DINO training samples and batches.

A sample is an RGB image (optionally augmented) with its boxes as normalised ``cx, cy, w, h`` and
its class indices (= phrase indices of the prompt). Batches are built by the processor in the
collate function: resizing, normalisation, padding (``pixel_mask``) and the tokenised prompt.
Crowd regions are left out, as COCO evaluation ignores them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillkit.data.images import ImageLocator, default_image_roots
from distillkit.errors import DataError
from distillkit.images import read_rgb

Augment = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class DetectionSample:
    """One image of the dataset and its boxes (COCO ``x, y, w, h`` pixels) with class indices."""

    path: Path
    image_id: int
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]
    classes: tuple[int, ...]


def locate_images(dataset: dict[str, Any], annotation_file: Path | None, images_dir: Path | None) -> dict[int, Path]:
    """image id → image file; a missing file is a DataError naming it and the option that fixes it."""
    roots = default_image_roots(annotation_file, images_dir) if annotation_file else [images_dir or Path.cwd()]
    locator = ImageLocator(roots)
    found: dict[int, Path] = {}
    missing: list[str] = []
    for image in dataset["images"]:
        path = locator.resolve(image["file_name"])
        if path is None:
            missing.append(image["file_name"])
        else:
            found[image["id"]] = path
    if missing:
        raise DataError(
            f"{len(missing)} images of {annotation_file or 'the dataset'} were not found (e.g. {missing[0]!r})",
            "pass --images-dir with the folder holding them",
        )
    return found


def detection_samples(
    dataset: dict[str, Any], class_mapping: dict[int, int], image_paths: dict[int, Path]
) -> list[DetectionSample]:
    """Every image with its non-crowd boxes (images without boxes stay: they teach 'nothing here')."""
    per_image: dict[int, list[tuple[tuple[float, float, float, float], int]]] = {}
    for ann in dataset["annotations"]:
        bbox = ann.get("bbox")
        if ann.get("iscrowd", 0) or not bbox or bbox[2] <= 0 or bbox[3] <= 0:
            continue
        box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
        per_image.setdefault(ann["image_id"], []).append((box, class_mapping[ann["category_id"]]))
    samples = []
    for image in dataset["images"]:
        items = per_image.get(image["id"], [])
        samples.append(
            DetectionSample(
                path=image_paths[image["id"]],
                image_id=image["id"],
                width=int(image["width"]),
                height=int(image["height"]),
                boxes=tuple(box for box, _ in items),
                classes=tuple(cls for _, cls in items),
            )
        )
    return samples


def normalised_cxcywh(boxes: Sequence[Sequence[float]], width: int, height: int) -> torch.Tensor:
    """COCO pixel boxes → normalised centre boxes, clipped to the image (as the model predicts them)."""
    if len(boxes) == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x0 = np.clip(array[:, 0], 0, width)
    y0 = np.clip(array[:, 1], 0, height)
    x1 = np.clip(array[:, 0] + array[:, 2], 0, width)
    y1 = np.clip(array[:, 1] + array[:, 3], 0, height)
    out = np.stack([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height], axis=1)
    return torch.from_numpy(out)


class GroundingDinoDataset(torch.utils.data.Dataset):
    """Items: ``{"image": HWC uint8, "labels": {"class_labels", "boxes"}}`` (augmented when ``augment`` is set)."""

    def __init__(self, samples: Sequence[DetectionSample], augment: Augment | None = None) -> None:
        self.samples = list(samples)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        # Upright (EXIF orientation applied), the frame the COCO boxes and width/height are in.
        image = read_rgb(sample.path, expect_size=(sample.width, sample.height))
        boxes: Sequence[Sequence[float]] = sample.boxes
        classes: Sequence[int] = sample.classes
        if self.augment is not None:
            result = self.augment(image=image, bboxes=[list(b) for b in boxes], labels=list(classes))
            image, boxes, classes = result["image"], result["bboxes"], result["labels"]
        height, width = image.shape[:2]
        return {
            "image": image,
            "labels": {
                "class_labels": torch.as_tensor(list(classes), dtype=torch.long),
                "boxes": normalised_cxcywh(boxes, width, height),
            },
        }


class GroundingDinoCollator:
    """Processor call for a list of items: pixel values + mask, the tokenised prompt, the targets."""

    def __init__(self, processor: Any, prompt_text: str) -> None:
        self.processor = processor
        self.prompt_text = prompt_text

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        images = [item["image"] for item in items]
        encoded = self.processor(images=images, text=[self.prompt_text] * len(images), return_tensors="pt")
        batch = {key: encoded[key] for key in ("pixel_values", "pixel_mask", "input_ids", "attention_mask")}
        if "token_type_ids" in encoded:
            batch["token_type_ids"] = encoded["token_type_ids"]
        batch["labels"] = [item["labels"] for item in items]
        return batch
