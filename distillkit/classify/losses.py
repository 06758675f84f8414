"""Classification losses by name: cross-entropy (label smoothing), BCE (multi-label), focal.

Every loss takes logits (B, C) and targets (B, C): one-hot / mixed (mixup, cutmix) probabilities for
single-label data, 0/1 per class for multi-label data. ``focal_alpha: dynamic`` derives per-class
weights from the training label frequencies (``dynamic_alpha``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distillkit.config.schema import ClassifierConfig
from distillkit.errors import ConfigError

#: Multi-label dynamic alpha is kept inside this range so no class is ignored or weighted alone.
ALPHA_RANGE = (0.01, 0.99)


def dynamic_alpha(class_counts: np.ndarray, num_samples: int, multi_label: bool) -> np.ndarray:
    """Per-class focal alpha from training label frequencies.

    Single-label: ``N / (C * n_c)``, scikit-learn's "balanced" class weights (1 for every class of a
    balanced set, larger for rare ones). Multi-label: the positive-class alpha of the binary focal
    loss, ``1 - n_c / N`` clipped to ``ALPHA_RANGE``: rare positives weigh more than their negatives.
    Classes absent from the training set count as seen once, which keeps the weights finite.
    """
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    if multi_label:
        return np.clip(1.0 - counts / max(num_samples, 1), *ALPHA_RANGE)
    return counts.sum() / (len(counts) * counts)


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy against probability targets, with label smoothing."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets.float(), label_smoothing=self.label_smoothing)


class BCELoss(nn.Module):
    """Per-class sigmoid cross-entropy; smoothing pulls 0/1 targets towards 0.5."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        smoothed = targets.float() * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), smoothed)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017): ``alpha * (1 - p_t) ** gamma * CE``.

    Single-label: softmax over classes, ``alpha`` a per-class weight of the true class (soft
    targets weight each class's term by its target mass). Multi-label: one sigmoid per class,
    ``alpha`` the weight of positives and ``1 - alpha`` of negatives. ``alpha`` None: no weighting.
    """

    def __init__(self, gamma: float, alpha: torch.Tensor | float | None, multi_label: bool) -> None:
        super().__init__()
        self.gamma = gamma
        self.multi_label = multi_label
        if alpha is None:
            self.alpha: torch.Tensor | None = None
        else:
            self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32).reshape(-1))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        if self.multi_label:
            ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            p = torch.sigmoid(logits)
            p_t = p * targets + (1 - p) * (1 - targets)
            loss = (1 - p_t).pow(self.gamma) * ce
            if self.alpha is not None:
                alpha = self.alpha.to(logits.device)
                loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
            return loss.mean()
        log_p = F.log_softmax(logits, dim=1)
        per_class = -(1 - log_p.exp()).pow(self.gamma) * log_p * targets
        if self.alpha is not None:
            per_class = per_class * self.alpha.to(logits.device)
        return per_class.sum(dim=1).mean()


LossFactory = Callable[[ClassifierConfig, bool, np.ndarray, int], nn.Module]


def _cross_entropy(config: ClassifierConfig, multi_label: bool, counts: np.ndarray, n: int) -> nn.Module:
    if multi_label:
        raise ConfigError(
            "the data is multi-label (images with no label or several) but classifier.loss is cross_entropy",
            "set classifier.loss=bce or classifier.loss=focal",
        )
    return CrossEntropyLoss(config.label_smoothing)


def _bce(config: ClassifierConfig, multi_label: bool, counts: np.ndarray, n: int) -> nn.Module:
    return BCELoss(config.label_smoothing)


def _focal(config: ClassifierConfig, multi_label: bool, counts: np.ndarray, n: int) -> nn.Module:
    alpha: torch.Tensor | float | None
    if config.focal_alpha == "dynamic":
        alpha = torch.as_tensor(dynamic_alpha(counts, n, multi_label), dtype=torch.float32)
    else:
        alpha = config.focal_alpha
    return FocalLoss(config.focal_gamma, alpha, multi_label)


LOSSES: dict[str, LossFactory] = {"cross_entropy": _cross_entropy, "bce": _bce, "focal": _focal}


def build_loss(config: ClassifierConfig, multi_label: bool, class_counts: np.ndarray, num_samples: int) -> nn.Module:
    """The loss named by ``config.loss``, sized from the training label counts."""
    try:
        factory = LOSSES[config.loss]
    except KeyError:
        raise ConfigError(f"unknown classifier.loss '{config.loss}'", f"choose one of {', '.join(LOSSES)}") from None
    return factory(config, multi_label, np.asarray(class_counts), num_samples)
