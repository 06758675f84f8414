"""Training samples for the SAM mask decoder: box prompts and low-resolution mask targets per image.

Two datasets share one sample format (``key``, ``boxes`` in the model's input frame, ``targets``
as uint8 soft masks at the decoder's resolution, and ``pixel_values`` when the encoder must run):

- ``PreparedSamDataset``: targets and prompts computed once; the image's embedding comes from the
  cache, so items carry no pixels and reading them costs nothing;
- ``AugmentedSamDataset``: every item reads its image, draws an augmentation, and recomputes the
  prompts (tight boxes of the augmented masks) and targets; the encoder runs on its pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from distillkit.teachers.sam.data import SamImageRecord, decode_rles, read_rgb
from distillkit.teachers.sam.embeddings import preprocess_images
from distillkit.teachers.sam.geometry import SamGeometry, tight_boxes

Sample = dict[str, Any]


# Full-resolution masks decoded and resized per step: a few dozen masks of a 12 MP image at once
# would need gigabytes as floats.
MASK_CHUNK = 8


def _quantised(targets: torch.Tensor) -> torch.Tensor:
    # Soft targets as uint8: 4x less memory than float32 for a whole training set held in memory.
    return (targets * 255.0).round_().to(torch.uint8)


def make_sample(
    key: int, masks: np.ndarray, boxes_xyxy: np.ndarray, height: int, width: int, geometry: SamGeometry
) -> Sample:
    """A sample from full-resolution masks (K, H, W) and their pixel box prompts (K, 4)."""
    parts = [geometry.masks_to_low(masks[start : start + MASK_CHUNK]) for start in range(0, len(masks), MASK_CHUNK)]
    targets = torch.cat(parts) if parts else torch.zeros((0, geometry.low, geometry.low))
    return {
        "key": int(key),
        "boxes": torch.from_numpy(geometry.boxes_to_input(boxes_xyxy, height, width)),
        "targets": _quantised(targets),
    }


def record_sample(key: int, record: SamImageRecord, geometry: SamGeometry) -> Sample:
    """A sample straight from an un-augmented record, decoding its masks a few at a time."""
    rles = record.rles()
    parts = [
        geometry.masks_to_low(decode_rles(rles[start : start + MASK_CHUNK]).transpose(2, 0, 1))
        for start in range(0, len(rles), MASK_CHUNK)
    ]
    targets = torch.cat(parts) if parts else torch.zeros((0, geometry.low, geometry.low))
    return {
        "key": int(key),
        "boxes": torch.from_numpy(geometry.boxes_to_input(record.prompt_boxes(), record.height, record.width)),
        "targets": _quantised(targets),
    }


class PreparedSamDataset(Dataset[Sample]):
    """Samples computed up front (masks decoded once, no pixels read); embeddings come from the cache by ``key``."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    @classmethod
    def from_records(cls, records: Sequence[SamImageRecord], geometry: SamGeometry) -> PreparedSamDataset:
        return cls([record_sample(key, record, geometry) for key, record in enumerate(records)])


Augment = Callable[..., dict[str, Any]]


class AugmentedSamDataset(Dataset[Sample]):
    """Reads, augments and preprocesses an image per item; prompts are the augmented masks' tight boxes."""

    def __init__(
        self, records: Sequence[SamImageRecord], processor: Any, geometry: SamGeometry, augment: Augment | None
    ) -> None:
        self.records = list(records)
        self.processor = processor
        self.geometry = geometry
        self.augment = augment

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        image = read_rgb(record.path, record.width, record.height)
        masks = record.masks()
        boxes = record.prompt_boxes()
        if self.augment is not None:
            image, masks = self._augmented(image, masks, boxes, record.category_ids)
            boxes = tight_boxes(masks)
        height, width = image.shape[:2]
        sample = make_sample(index, masks, boxes, height, width, self.geometry)
        sample["pixel_values"] = preprocess_images(self.processor, [image])[0]
        return sample

    def _augmented(
        self, image: np.ndarray, masks: np.ndarray, boxes: np.ndarray, labels: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.augment is not None
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        out = self.augment(image=image, masks=list(masks), bboxes=xywh.tolist(), labels=list(labels))
        new_image = np.asarray(out["image"], dtype=np.uint8)
        height, width = new_image.shape[:2]
        new_masks = [np.asarray(mask, dtype=np.uint8) for mask in out.get("masks", [])]
        # An instance cropped or rotated out of the picture leaves an empty mask: no prompt for it.
        kept = [mask for mask in new_masks if mask.shape == (height, width) and mask.any()]
        stacked = np.stack(kept) if kept else np.zeros((0, height, width), dtype=np.uint8)
        return new_image, stacked


def collate_sam(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Pad every image's prompts to the batch's largest count; ``valid`` marks the real ones."""
    count = max(1, max(int(sample["boxes"].shape[0]) for sample in samples))
    low = int(samples[0]["targets"].shape[-1])
    batch = len(samples)
    boxes = torch.zeros((batch, count, 4), dtype=torch.float32)
    targets = torch.zeros((batch, count, low, low), dtype=torch.uint8)
    valid = torch.zeros((batch, count), dtype=torch.bool)
    for row, sample in enumerate(samples):
        k = int(sample["boxes"].shape[0])
        if k:
            boxes[row, :k] = sample["boxes"]
            targets[row, :k] = sample["targets"]
            valid[row, :k] = True
        else:
            boxes[row, :] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # a harmless prompt, masked out of the loss
    out = {
        "keys": torch.tensor([sample["key"] for sample in samples], dtype=torch.int64),
        "boxes": boxes,
        "targets": targets,
        "valid": valid,
    }
    if "pixel_values" in samples[0]:
        out["pixel_values"] = torch.stack([sample["pixel_values"] for sample in samples])
    return out
