"""Random augmented views of a normalised image batch, on the tensor itself (for SupCon's ``num_views``).

The data pipeline yields one augmented image per sample; contrastive learning needs several
different views of each. Producing them from the batch tensor keeps the dataset untouched: each
view gets its own random resized crop (scale 0.5-1, aspect 3/4-4/3), horizontal flip and
brightness / contrast jitter, drawn per image from the torch global RNG.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_views(images: torch.Tensor, num_views: int, min_scale: float = 0.5, jitter: float = 0.4) -> torch.Tensor:
    """(B, C, H, W) -> (B, V, C, H, W)."""
    return torch.stack([_one_view(images, min_scale, jitter) for _ in range(num_views)], dim=1)


def _one_view(images: torch.Tensor, min_scale: float, jitter: float) -> torch.Tensor:
    batch = images.shape[0]
    device, dtype = images.device, images.dtype
    area = torch.empty(batch).uniform_(min_scale, 1.0)
    log_ratio = torch.empty(batch).uniform_(math.log(3 / 4), math.log(4 / 3))
    ratio = log_ratio.exp()
    sx = (area * ratio).sqrt().clamp(max=1.0)
    sy = (area / ratio).sqrt().clamp(max=1.0)
    tx = (torch.rand(batch) * 2 - 1) * (1 - sx)
    ty = (torch.rand(batch) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(batch) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta.to(device, dtype), list(images.shape), align_corners=False)
    view = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    contrast = (1 + (torch.rand(batch, 1, 1, 1) * 2 - 1) * jitter).to(device, dtype)
    brightness = ((torch.rand(batch, 1, 1, 1) * 2 - 1) * jitter).to(device, dtype)
    mean = view.mean(dim=(1, 2, 3), keepdim=True)
    return (view - mean) * contrast + mean + brightness
