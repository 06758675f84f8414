"""Batch mixing strategies by name: none, mixup, cutmix, tokenmix.

Each returns a ``MixedBatch``: the mixed images, the two target sets and the share ``lam`` of the
first, so a loss can use the soft targets ``lam * a + (1 - lam) * b`` (cross-entropy, focal,
evidential) or the two hard labels weighted by ``lam`` (margin heads, which need one true class).

TokenMix (Liu et al., ECCV 2022) mixes at the granularity of ViT patches: a random set of patch-grid
cells of the paired image replaces the same cells of the image, so the mixed region is scattered
over the image instead of one box and every token is entirely one image or the other. The targets
are mixed by the share of tokens taken (the paper's area-based variant; its teacher-attention
re-weighting needs a pretrained teacher and is not used here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distillkit.classify.mixing import cutmix

STRATEGIES = ("none", "mixup", "cutmix", "tokenmix")


@dataclass
class MixedBatch:
    images: torch.Tensor
    targets_a: torch.Tensor
    targets_b: torch.Tensor
    lam: float

    @property
    def soft_targets(self) -> torch.Tensor:
        return self.lam * self.targets_a + (1.0 - self.lam) * self.targets_b


def tokenmix(images: torch.Tensor, perm: torch.Tensor, lam: float, patch_size: int) -> tuple[torch.Tensor, float]:
    """Replace ``round((1 - lam) * cells)`` random patch cells with the paired images'; return (images, kept share)."""
    height, width = images.shape[-2:]
    rows, cols = max(1, height // patch_size), max(1, width // patch_size)
    cells = rows * cols
    taken = round((1.0 - lam) * cells)
    mask = torch.zeros(cells, dtype=torch.bool)
    mask[torch.randperm(cells)[:taken]] = True
    grid = mask.view(rows, cols)
    pixel_mask = grid.repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    full = torch.zeros(height, width, dtype=torch.bool)
    full[: pixel_mask.shape[0], : pixel_mask.shape[1]] = pixel_mask[:height, :width]
    full = full.to(images.device)
    mixed = torch.where(full, images[perm], images)
    kept = 1.0 - float(full.sum()) / float(height * width)
    return mixed, kept


@dataclass(frozen=True)
class Mixer:
    """``strategy`` with ``lam ~ Beta(alpha, alpha)``; draws from the torch global RNG (seeded, resumable)."""

    strategy: str = "none"
    alpha: float = 1.0
    patch_size: int = 16

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown mixing strategy '{self.strategy}'; choose from {', '.join(STRATEGIES)}")

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> MixedBatch:
        if self.strategy == "none" or self.alpha <= 0 or images.shape[0] < 2:
            return MixedBatch(images, targets, targets, 1.0)
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        perm = torch.randperm(images.shape[0]).to(images.device)
        if self.strategy == "mixup":
            mixed = lam * images + (1.0 - lam) * images[perm]
        elif self.strategy == "cutmix":
            mixed, lam = cutmix(images, perm, lam)
        else:
            mixed, lam = tokenmix(images, perm, lam, self.patch_size)
        return MixedBatch(mixed, targets, targets[perm], lam)
