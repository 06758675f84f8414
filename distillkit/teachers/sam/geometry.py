"""Coordinates and masks between the original image, SAM's input and its low-resolution masks.

SAM's processor resizes an image so its long side is ``longest_edge``, then pads it at the bottom
and right to a ``pad`` x ``pad`` square. The mask decoder predicts ``low`` x ``low`` logits
(``low = 4 x`` the embedding grid) covering that padded square. The two directions used here are
exact mirrors of each other and of the processor's ``post_process_masks``:

- training targets: original mask -> resized to the processor's resized size -> padded -> ``low``;
- predictions: ``low`` logits -> ``pad`` -> crop the resized size -> original size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distillkit.errors import UsageError


def _size_value(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


@dataclass(frozen=True)
class SamGeometry:
    longest_edge: int  # long side of the resized image
    pad: int  # side of the padded square the model sees
    low: int  # side of the low-resolution mask logits

    @classmethod
    def from_processor(cls, processor: Any, model_config: Any) -> SamGeometry:
        """Read the sizes from a ``SamProcessor``; a mismatch with the model is a UsageError."""
        image_processor = processor.image_processor
        longest = _size_value(image_processor.size, "longest_edge")
        pad_h = _size_value(image_processor.pad_size, "height")
        pad_w = _size_value(image_processor.pad_size, "width")
        side = int(model_config.vision_config.image_size)
        if longest is None or pad_h is None or pad_h != pad_w:
            raise UsageError(
                "the SAM preprocessing stored with the weights is not SAM's (longest_edge resize + square padding)",
                "remove preprocessor_config.json from the weights folder to use defaults/preprocessing.yaml",
            )
        if pad_h != side or longest > side:
            raise UsageError(
                f"the SAM preprocessing stored with the weights pads to {pad_h} px but the model expects {side} px",
                f"set size.longest_edge and pad_size to {side} in its preprocessor_config.json",
            )
        return cls(longest_edge=longest, pad=side, low=4 * int(model_config.prompt_encoder_config.image_embedding_size))

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after the processor's resize, rounded as ``SamImageProcessor`` rounds."""
        scale = self.longest_edge / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def boxes_to_input(self, boxes_xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
        """Pixel boxes of the original image -> boxes in the model's input frame (as the processor does)."""
        new_h, new_w = self.resized_shape(height, width)
        scale = np.array([new_w / width, new_h / height, new_w / width, new_h / height], dtype=np.float32)
        return np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4) * scale

    def masks_to_low(self, masks: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(K, H, W) binary masks -> (K, low, low) float targets in [0, 1] (soft at the edges).

        Soft values keep thin structures (a 1 px scratch) present at the low resolution, where a
        nearest-neighbour resize would drop them.
        """
        tensor = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
        tensor = tensor.to(torch.float32)
        if tensor.ndim != 3:
            raise ValueError("masks must have shape (K, H, W)")
        if tensor.shape[0] == 0:
            return torch.zeros((0, self.low, self.low), dtype=torch.float32)
        height, width = int(tensor.shape[1]), int(tensor.shape[2])
        new_h, new_w = self.resized_shape(height, width)
        resized = F.interpolate(
            tensor[:, None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
        )
        padded = F.pad(resized, (0, self.pad - new_w, 0, self.pad - new_h))
        low = F.interpolate(padded, size=(self.low, self.low), mode="bilinear", align_corners=False, antialias=True)
        return low[:, 0].clamp_(0.0, 1.0)

    def low_to_image(self, logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(K, low, low) logits -> (K, H, W) logits in the original image (``post_process_masks``)."""
        if logits.shape[0] == 0:
            return logits.new_zeros((0, height, width))
        new_h, new_w = self.resized_shape(height, width)
        up = F.interpolate(logits[:, None].float(), size=(self.pad, self.pad), mode="bilinear", align_corners=False)
        up = up[..., :new_h, :new_w]
        return F.interpolate(up, size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) binary masks -> (K, 4) xyxy boxes enclosing their pixels (pixel edges, so x2 = last + 1).

    This is COCO's box of a mask (``toBbox``), in corner form. An empty mask gives a zero box.
    """
    masks = np.asarray(masks, dtype=bool)
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for index, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size and cols.size:
            boxes[index] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def jitter_boxes(boxes: torch.Tensor, fraction: float, limit: float) -> torch.Tensor:
    """Move each box edge by up to ``fraction`` of the box's width/height, clipped to [0, limit].

    Draws from torch's global generator, which the training loop seeds per run and saves in every
    checkpoint, so a resumed run draws the same noise as an uninterrupted one.
    """
    if fraction <= 0 or boxes.numel() == 0:
        return boxes
    sizes = boxes[..., 2:] - boxes[..., :2]  # (w, h)
    scale = torch.cat([sizes, sizes], dim=-1)
    noise = (torch.rand(boxes.shape, device=boxes.device, dtype=boxes.dtype) * 2 - 1) * fraction * scale
    moved = (boxes + noise).clamp(0.0, limit)
    # Keep x1 < x2 and y1 < y2 whatever the noise did.
    low = torch.minimum(moved[..., :2], moved[..., 2:])
    high = torch.maximum(moved[..., :2], moved[..., 2:])
    return torch.cat([low, high], dim=-1)
