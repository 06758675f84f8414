"""Cosine classifier head and the angular-margin losses trained through it: ArcFace, AdaFace, CurricularFace.

The model's head is ``CosineHead``: logits ``s * cos(theta_j)`` between the L2-normalised pooled
feature and each normalised class weight, so inference (and ONNX export) needs no labels and the
logits are ordinary logits. The margin only exists in training: a ``MarginLoss`` receives the
cosines (``logits / s``), the labels and, for AdaFace, the feature norms, moves the true class's
cosine by its margin and takes the cross-entropy of ``s * modified cosines``.

- ArcFace (Deng et al., CVPR 2019): target ``cos(theta_y + m)``; past ``theta_y > pi - m`` it falls back to
  ``cos(theta_y) - m sin(m)`` so the target stays monotone in theta.
- AdaFace (Kim et al., CVPR 2022): the margin follows image quality, read from the feature norm
  standardised by running batch statistics: ``z = clip((|f| - mu) / (sigma / h), -1, 1)``; the
  target is ``cos(theta_y - m z) - (m z + m)``: high-norm (easy) images get an angular margin, low-norm
  (hard) ones an additive margin that demands less.
- CurricularFace (Huang et al., CVPR 2020): ArcFace's target plus a curriculum on the negatives: a
  negative harder than the target (``cos_j > cos(theta_y + m)``) becomes ``cos_j (t + cos_j)`` where
  ``t`` is a running mean of the target cosine, so hard negatives weigh more as training matures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


class CosineHead(nn.Module):
    """``scale * normalize(f) @ normalize(W).T``: (B, D) -> (B, C) logits bounded by ``±scale``."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = num_classes
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).t()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(features)


class MarginLoss(nn.Module):
    """Base: cross-entropy of ``scale * margin_cosines(...)`` against integer labels."""

    def __init__(self, scale: float, margin: float) -> None:
        super().__init__()
        self.scale = float(scale)
        self.margin = float(margin)

    def margin_cosines(
        self, cosine: torch.Tensor, labels: torch.Tensor, feature_norms: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, cosine: torch.Tensor, labels: torch.Tensor, feature_norms: torch.Tensor | None = None
    ) -> torch.Tensor:
        adjusted = self.margin_cosines(cosine.float().clamp(-1 + EPS, 1 - EPS), labels, feature_norms)
        return F.cross_entropy(self.scale * adjusted, labels)


def _arc_target(cos_y: torch.Tensor, margin: float) -> torch.Tensor:
    """cos(theta + m), with the monotone fallback ``cos - m sin(m)`` past ``theta > pi - m``."""
    sin_y = (1.0 - cos_y.pow(2)).clamp_min(0).sqrt()
    phi = cos_y * math.cos(margin) - sin_y * math.sin(margin)
    return torch.where(cos_y > math.cos(math.pi - margin), phi, cos_y - math.sin(math.pi - margin) * margin)


class ArcFaceLoss(MarginLoss):
    def margin_cosines(
        self, cosine: torch.Tensor, labels: torch.Tensor, feature_norms: torch.Tensor | None = None
    ) -> torch.Tensor:
        cos_y = cosine.gather(1, labels[:, None])
        return cosine.scatter(1, labels[:, None], _arc_target(cos_y, self.margin))


class CurricularFaceLoss(MarginLoss):
    """``t`` (a buffer, so it is checkpointed) follows the batch-mean target cosine with momentum 0.01."""

    def __init__(self, scale: float, margin: float, momentum: float = 0.01) -> None:
        super().__init__(scale, margin)
        self.momentum = momentum
        self.register_buffer("t", torch.zeros(()))

    def margin_cosines(
        self, cosine: torch.Tensor, labels: torch.Tensor, feature_norms: torch.Tensor | None = None
    ) -> torch.Tensor:
        cos_y = cosine.gather(1, labels[:, None])
        target = _arc_target(cos_y, self.margin)
        if self.training:
            with torch.no_grad():
                self.t.mul_(1 - self.momentum).add_(self.momentum * cos_y.mean())
        hard = cosine > target
        adjusted = torch.where(hard, cosine * (self.t.to(cosine.dtype) + cosine), cosine)
        return adjusted.scatter(1, labels[:, None], target)


class AdaFaceLoss(MarginLoss):
    """Running mean / std of the feature norms are buffers (updated in training mode, checkpointed)."""

    def __init__(self, scale: float, margin: float, h: float = 0.333, momentum: float = 0.01) -> None:
        super().__init__(scale, margin)
        self.h = h
        self.momentum = momentum
        self.register_buffer("batch_mean", torch.full((), 20.0))
        self.register_buffer("batch_std", torch.full((), 100.0))

    def norm_z(self, feature_norms: torch.Tensor) -> torch.Tensor:
        """The standardised, clipped feature norm ``z`` in [-1, 1] (updates the running stats in training)."""
        norms = feature_norms.detach().float().clamp(0.001, 100.0)
        if self.training:
            with torch.no_grad():
                std = norms.std() if norms.numel() > 1 else torch.zeros((), device=norms.device)
                self.batch_mean.mul_(1 - self.momentum).add_(self.momentum * norms.mean())
                self.batch_std.mul_(1 - self.momentum).add_(self.momentum * std)
        return ((norms - self.batch_mean) / (self.batch_std / self.h + EPS)).clamp(-1, 1)

    def margin_cosines(
        self, cosine: torch.Tensor, labels: torch.Tensor, feature_norms: torch.Tensor | None = None
    ) -> torch.Tensor:
        if feature_norms is None:
            raise ValueError("AdaFace needs the feature norms")
        z = self.norm_z(feature_norms)[:, None]
        cos_y = cosine.gather(1, labels[:, None])
        theta = cos_y.acos()
        target = (theta - self.margin * z).clamp(EPS, math.pi - EPS).cos() - (self.margin * z + self.margin)
        return cosine.scatter(1, labels[:, None], target)


MARGIN_LOSSES: dict[str, type[MarginLoss]] = {
    "arcface": ArcFaceLoss,
    "adaface": AdaFaceLoss,
    "curricularface": CurricularFaceLoss,
}


def build_margin_loss(name: str, scale: float, margin: float) -> MarginLoss:
    try:
        return MARGIN_LOSSES[name](scale, margin)
    except KeyError:
        raise ValueError(f"unknown margin head '{name}'; choose from {', '.join(MARGIN_LOSSES)}") from None
