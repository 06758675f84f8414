"""Mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) on a batch, single-label data only.

Both draw ``lam ~ Beta(alpha, alpha)`` and pair every image with another of the same batch (a
random permutation); targets are mixed in the same proportion (for CutMix: the pasted area's). With
both enabled each batch uses one of the two, chosen with equal odds. The torch global generator is
used, so the training loop's seeding and resume make the draws reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchMixer:
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.enabled or images.shape[0] < 2:
            return images, targets
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or bool(torch.rand(()) < 0.5))
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(images.shape[0]).to(images.device)
        if use_cutmix:
            images, lam = cutmix(images, perm, lam)
        else:
            images = lam * images + (1.0 - lam) * images[perm]
        return images, lam * targets + (1.0 - lam) * targets[perm]


def cutmix(images: torch.Tensor, perm: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Paste a box of area ``(1 - lam)`` from the paired images; return the images and the kept share."""
    height, width = images.shape[-2:]
    cut = (1.0 - lam) ** 0.5
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    y1, y2 = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    x1, x2 = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    mixed = images.clone()
    mixed[..., y1:y2, x1:x2] = images[perm][..., y1:y2, x1:x2]
    kept = 1.0 - (y2 - y1) * (x2 - x1) / float(height * width)
    return mixed, kept
