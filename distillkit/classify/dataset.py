"""Turning image files into normalised tensors for classifiers: one preprocessing for training,
evaluation, inference and export calibration.

Images are read as RGB by ``distillkit.images.read_rgb`` (EXIF orientation applied, as every
command reads them), resized to the model's (height, width) — or kept at their own size with
``keep_full_resolution`` — then (training only) augmented, scaled to [0, 1] and normalised with the
checkpoint's mean/std. Small datasets are decoded once and kept in memory (uint8, already resized),
since decoding thousands of small files every epoch would dominate CPU training time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from distillkit.errors import DataError
from distillkit.images import image_size, read_rgb

_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
#: Decoded images are kept in memory when they need at most this many bytes together.
CACHE_LIMIT_BYTES = 512 * 1024 * 1024

Augment = Callable[..., dict[str, Any]]


def resize(image: np.ndarray, size: tuple[int, int] | None, interpolation: str = "bilinear") -> np.ndarray:
    """Resize HWC to (height, width); None keeps the image as it is."""
    if size is None or image.shape[:2] == tuple(size):
        return image
    height, width = size
    shrinking = height * width < image.shape[0] * image.shape[1]
    flag = cv2.INTER_AREA if shrinking and interpolation in ("bilinear", "area") else _INTERPOLATION[interpolation]
    return cv2.resize(image, (width, height), interpolation=flag)


def to_tensor(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """HWC uint8 → CHW float32 normalised."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (pixels - mean_t) / std_t


def common_image_size(paths: Sequence[Path]) -> tuple[int, int]:
    """The (height, width) shared by all images (full-resolution training needs one size)."""
    sizes: dict[tuple[int, int], Path] = {}
    for path in paths:
        width, height = image_size(path)  # as displayed, the size read_rgb gives
        sizes.setdefault((height, width), path)
        if len(sizes) > 1:
            (first, a), (second, b) = list(sizes.items())[:2]
            raise DataError(
                f"keep_full_resolution needs one image size, but {a.name} is {first[0]}x{first[1]} "
                f"and {b.name} is {second[0]}x{second[1]} (height x width)",
                "set classifier.imgsz=[H, W] to resize instead",
            )
    if not sizes:
        raise DataError("no image to read a size from")
    return next(iter(sizes))


class ClassificationDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(image tensor, multi-hot target) pairs; ``augment`` (training only) is called as ``augment(image=HWC)``."""

    def __init__(
        self,
        paths: Sequence[Path],
        targets: np.ndarray,
        size: tuple[int, int] | None,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
        augment_factory: Callable[[int], Augment] | None = None,
        cache: bool | None = None,
    ) -> None:
        self.paths = list(paths)
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        self.size = size
        self.mean = list(mean)
        self.std = list(std)
        self.interpolation = interpolation
        # Built per data-loader worker with its own seed, so workers do not repeat each other.
        self._augment_factory = augment_factory
        self._augment: Augment | None = None
        self._augment_worker: int | None = None
        if cache is None:
            cache = size is not None and len(self.paths) * size[0] * size[1] * 3 <= CACHE_LIMIT_BYTES
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def cached(self) -> bool:
        """Whether decoded images are kept in memory."""
        return self._cache is not None

    def load(self, index: int) -> np.ndarray:
        """The resized uint8 image (before augmentation)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image = resize(read_rgb(self.paths[index]), self.size, self.interpolation)
        if self._cache is not None:
            self._cache[index] = image
        return image

    def _augmenter(self) -> Augment | None:
        if self._augment_factory is None:
            return None
        worker = torch.utils.data.get_worker_info()
        key = -1 if worker is None else worker.id
        if self._augment is None or self._augment_worker != key:
            seed = 0 if worker is None else int(worker.seed % (2**31))
            self._augment, self._augment_worker = self._augment_factory(seed), key
        return self._augment

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.load(index)
        augment = self._augmenter()
        if augment is not None:
            image = augment(image=image)["image"]
            if self.size is not None and image.shape[:2] != tuple(self.size):
                image = resize(image, self.size, self.interpolation)
        return to_tensor(image, self.mean, self.std), self.targets[index]
