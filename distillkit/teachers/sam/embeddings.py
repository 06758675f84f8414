"""The frozen image encoder's embeddings, computed once per image and reused.

SAM's ViT image encoder is ~95% of its compute, and with it frozen its output for a given image
never changes, so training the mask decoder for many epochs needs one encoder pass per image, not
one per image per epoch. That holds only while the pixels the encoder sees are the same every
epoch, which gives the rule implemented by ``cache_decision``:

- validation images are never augmented: their embeddings are cached whenever the encoder is
  frozen and ``cache_image_embeddings`` is on;
- training images are cached under the same condition **and** when the augmentation section plans
  no transform at all (``intensity: none``, or nothing in the data's description calls for one).
  Any image augmentation draws new pixels every epoch, and an embedding per (image, draw) would
  be used once, so the encoder then runs on every augmented training batch instead. Box-prompt
  jitter (``box_prompt_jitter``) is not image augmentation: it changes the prompts only and is
  applied on top of cached embeddings.

Embeddings are kept on the CPU in float16 (SAM ViT-B: 2 MiB per image instead of 4; the relative
rounding, ~5e-4, is far below what LoRA training notices) and moved to the device per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillkit.augmentation.plan import describe_pipeline
from distillkit.config.schema import AugmentationConfig, SamLoraConfig
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.teachers.sam.model import sam_core

STORE_DTYPE = torch.float16


@dataclass(frozen=True)
class CacheDecision:
    train: bool
    val: bool
    reason: str


def cache_decision(config: SamLoraConfig, augmentation: AugmentationConfig) -> CacheDecision:
    """Whether training and validation embeddings are cached, and why (see the module docstring)."""
    if not config.cache_image_embeddings:
        return CacheDecision(False, False, "cache_image_embeddings is off")
    if not config.freeze_image_encoder:
        return CacheDecision(False, False, "the image encoder is trained, so its embeddings change")
    plan = describe_pipeline(augmentation.characteristics, augmentation.environment, augmentation.intensity)
    if not plan.is_empty:
        return CacheDecision(
            False,
            True,
            f"augmentation ({', '.join(step.name for step in plan.steps)}) changes the training pixels every epoch: "
            "training embeddings are recomputed, validation embeddings cached",
        )
    return CacheDecision(True, True, "frozen encoder and no image augmentation: every embedding is computed once")


def preprocess_images(processor: Any, images: Sequence[np.ndarray]) -> torch.Tensor:
    """(B, 3, pad, pad) pixel values for RGB uint8 images, with the processor's own resize/normalise/pad."""
    return processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]


def image_embeddings(model: torch.nn.Module, pixel_values: torch.Tensor, trainable: bool = False) -> torch.Tensor:
    """The image encoder's output; with gradients only when the encoder is trained."""
    core = sam_core(model)
    if trainable:
        return core.vision_encoder(pixel_values).last_hidden_state
    with torch.no_grad():
        return core.get_image_embeddings(pixel_values)


class EmbeddingCache:
    """Image-encoder outputs by key (an int per image), on the CPU in ``STORE_DTYPE``."""

    def __init__(self) -> None:
        self._store: dict[int, torch.Tensor] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __len__(self) -> int:
        return len(self._store)

    def put(self, key: int, embedding: torch.Tensor) -> None:
        self._store[int(key)] = embedding.detach().to("cpu", STORE_DTYPE).contiguous()

    def get(self, keys: Sequence[int] | torch.Tensor, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """(B, C, h, w) embeddings of ``keys`` on ``device`` in ``dtype``."""
        if isinstance(keys, torch.Tensor):
            keys = keys.tolist()
        stacked = torch.stack([self._store[int(key)] for key in keys])
        return stacked.to(device=device, dtype=dtype, non_blocking=True)

    def nbytes(self) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in self._store.values())


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(sam_core(model).mask_decoder.parameters()).dtype


@torch.no_grad()
def encode_into(
    cache: EmbeddingCache,
    model: torch.nn.Module,
    processor: Any,
    items: Sequence[tuple[int, Path, int, int]],
    device: torch.device,
    batch_size: int,
    read_image: Any,
    progress: Progress = NULL_PROGRESS,
    description: str = "SAM: encoding images",
) -> None:
    """Encode every ``(key, path, width, height)`` not yet in ``cache``, ``batch_size`` images at a time."""
    todo = [item for item in items if item[0] not in cache]
    if not todo:
        return
    model.eval()
    with progress.task(description, total=len(todo)) as task:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            images = [read_image(path, width, height) for _, path, width, height in chunk]
            pixels = preprocess_images(processor, images).to(device)
            embeddings = image_embeddings(model, pixels)
            for (key, *_), embedding in zip(chunk, embeddings, strict=True):
                cache.put(key, embedding)
            task.advance(len(chunk))
