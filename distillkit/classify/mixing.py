"""Batch mixing for every classifier run, one mixer: timm's ``Mixup`` (MixUp, CutMix) and TokenMix.

- MixUp (Zhang et al., 2018) and CutMix (Yun et al., 2019) are ``timm.data.Mixup`` in its ``batch``
  mode: one ``lam ~ Beta(alpha, alpha)`` per batch, image ``i`` paired with its mirror ``B-1-i``;
  with both alphas set each batch uses one of the two (``switch_prob``: 0.5, equal odds). For CutMix
  ``lam`` is the share of the image that stayed (timm's ``correct_lam``).
- TokenMix (Liu et al., ECCV 2022) mixes at the granularity of ViT patches: a random set of
  patch-grid cells of the paired image replaces the same cells of the image, so the mixed region is
  scattered over the image instead of one box and every token is entirely one image or the other.
  The targets are mixed by the share of tokens taken (the paper's area-based variant; its
  teacher-attention re-weighting needs a pretrained teacher and is not used here). timm has no
  TokenMix; it pairs images the same way.

``mix`` returns a ``MixedBatch``: the mixed images, the two target sets and the share ``lam`` of the
first, so a loss can use the soft targets ``lam * a + (1 - lam) * b`` (cross-entropy, focal, BCE,
evidential) or the two hard labels weighted by ``lam`` (margin heads, which need one true class).
The (B, C) targets are mixed here, the way timm's ``mixup_target`` mixes its one-hot targets, so
soft and multi-hot targets mix too (timm one-hot encodes class indices); timm mixes a two-class
probe alongside the images (image 0 of class 1, the others of class 0), whose mixed row 0 reads
back ``lam``.

timm's batch mode needs an even batch: the last image of an odd batch stays unmixed (paired with
itself, its target stays its own). Label smoothing is the loss's (``classifier.label_smoothing``),
so timm's is 0. timm draws from numpy's global generator, TokenMix from torch's: both are seeded by
the training loop and saved with its resume state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distillkit.config.schema import ClassifierConfig

STRATEGIES = ("none", "mixup", "cutmix", "tokenmix")
NO_PATCHES = 16  # TokenMix cell side on a model without ViT patches


@dataclass
class MixedBatch:
    images: torch.Tensor
    targets_a: torch.Tensor
    targets_b: torch.Tensor
    lam: float

    @property
    def soft_targets(self) -> torch.Tensor:
        if self.lam == 1.0:
            return self.targets_a
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


class BatchMixer:
    """MixUp / CutMix (timm's ``Mixup``, switching per batch when both are on) or TokenMix; see the module docstring."""

    def __init__(
        self,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        *,
        tokenmix_alpha: float = 0.0,
        patch_size: int = NO_PATCHES,
        switch_prob: float = 0.5,
    ) -> None:
        if tokenmix_alpha > 0 and (mixup_alpha > 0 or cutmix_alpha > 0):
            raise ValueError("TokenMix is a strategy of its own: it does not combine with mixup or cutmix")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.tokenmix_alpha = float(tokenmix_alpha)
        self.patch_size = int(patch_size)
        self.switch_prob = float(switch_prob)
        self._timm: Any = None
        if self.mixup_alpha > 0 or self.cutmix_alpha > 0:
            from timm.data import Mixup

            self._timm = Mixup(
                mixup_alpha=self.mixup_alpha,
                cutmix_alpha=self.cutmix_alpha,
                switch_prob=self.switch_prob,
                mode="batch",
                correct_lam=True,
                label_smoothing=0.0,
                num_classes=2,  # the lam probe's two classes (see the module docstring)
            )

    @classmethod
    def strategy(cls, name: str, alpha: float = 1.0, patch_size: int = NO_PATCHES) -> BatchMixer:
        """The mixer of one named strategy (``classifier.mixing``) with ``lam ~ Beta(alpha, alpha)``."""
        if name not in STRATEGIES:
            raise ValueError(f"unknown mixing strategy '{name}'; choose from {', '.join(STRATEGIES)}")
        if name == "none" or alpha <= 0:
            return cls()
        return cls(
            mixup_alpha=alpha if name == "mixup" else 0.0,
            cutmix_alpha=alpha if name == "cutmix" else 0.0,
            tokenmix_alpha=alpha if name == "tokenmix" else 0.0,
            patch_size=patch_size,
        )

    @property
    def enabled(self) -> bool:
        return self._timm is not None or self.tokenmix_alpha > 0

    def __repr__(self) -> str:
        return (
            f"BatchMixer(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
            f"tokenmix_alpha={self.tokenmix_alpha}, patch_size={self.patch_size}, switch_prob={self.switch_prob})"
        )

    def mix(self, images: torch.Tensor, targets: torch.Tensor) -> MixedBatch:
        """Mix ``images`` (B, C, H, W) and their (B, K) targets; the input tensors are left untouched."""
        size = images.shape[0]
        count = size - size % 2  # the even part timm's batch mode pairs
        if not self.enabled or count < 2:
            return MixedBatch(images, targets, targets, 1.0)
        order = torch.arange(size, device=images.device)
        order[:count] = order[:count].flip(0)  # image i with image count-1-i; an odd last one with itself
        if self._timm is not None:
            probe = torch.zeros(count, dtype=torch.long, device=images.device)
            probe[0] = 1
            head, probe_mixed = self._timm(images[:count].clone(), probe)  # timm mixes its input in place
            lam = float(probe_mixed[0, 1])
            mixed = torch.cat([head, images[count:]]) if count < size else head
        else:
            drawn = float(torch.distributions.Beta(self.tokenmix_alpha, self.tokenmix_alpha).sample())
            mixed, lam = tokenmix(images, order, drawn, self.patch_size)
        return MixedBatch(mixed, targets, targets[order], lam)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed images, mixed soft targets)."""
        mixed = self.mix(images, targets)
        return mixed.images, mixed.soft_targets


def patch_size_of(model: nn.Module) -> int | None:
    """The ViT patch size of ``model`` (a ViT backbone or a hybrid's ViT stream); None when it has none."""
    for module in model.modules():
        size = getattr(getattr(module, "patch_embed", None), "patch_size", None)
        if size is not None:
            return int(size[0] if isinstance(size, tuple | list) else size)
    return None


def build_mixer(settings: ClassifierConfig, multi_label: bool, model: nn.Module) -> tuple[BatchMixer, list[str]]:
    """The mixer of a ``classifier`` config section, and its notices.

    ``mixing: auto`` uses ``mixup_alpha`` / ``cutmix_alpha`` (both on: switching per batch), off for
    multi-label data; a named ``mixing`` strategy uses ``mixing_alpha`` and also mixes multi-hot targets.
    """
    notices: list[str] = []
    if settings.mixing == "auto":
        mixer = BatchMixer(settings.mixup_alpha, settings.cutmix_alpha)
        if multi_label and mixer.enabled:
            notices.append("mixup/cutmix are for single-label data: off for this multi-label set")
            mixer = BatchMixer()
        return mixer, notices
    patch = patch_size_of(model)
    if settings.mixing == "tokenmix" and patch is None:
        notices.append(f"tokenmix on a model without ViT patches: using {NO_PATCHES}-pixel cells")
    return BatchMixer.strategy(settings.mixing, settings.mixing_alpha, patch or NO_PATCHES), notices
