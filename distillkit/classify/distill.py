"""Knowledge distillation between classifiers: temperature-scaled logits + pooled-feature imitation.

    total = (1 - kd_alpha) * hard + kd_alpha * kd + feature_weight * feature

``kd`` is Hinton's KL(teacher || student) of the temperature-softened distributions, times T**2 so
its gradients keep their scale as T changes; for multi-label models it is the per-class binary KL
of the softened sigmoids. ``feature`` is the MSE between the student's pooled features, linearly
projected to the teacher's width, and the teacher's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kd_logit_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, multi_label: bool
) -> torch.Tensor:
    """Temperature-scaled KL divergence from the teacher's to the student's predictions (times T**2)."""
    s = student_logits.float() / temperature
    t = teacher_logits.detach().float() / temperature
    if multi_label:
        q = torch.sigmoid(t)
        log_q, log_not_q = F.logsigmoid(t), F.logsigmoid(-t)
        kl = q * (log_q - F.logsigmoid(s)) + (1 - q) * (log_not_q - F.logsigmoid(-s))
        return kl.mean() * temperature**2
    return F.kl_div(F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), reduction="batchmean", log_target=True) * (
        temperature**2
    )


def feature_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, projector: nn.Module) -> torch.Tensor:
    """MSE between projected student features and (fixed) teacher features."""
    return F.mse_loss(projector(student_features.float()), teacher_features.detach().float())


def distillation_total(
    hard: torch.Tensor,
    kd: torch.Tensor | None,
    feature: torch.Tensor | None,
    kd_alpha: float,
    feature_weight: float,
) -> torch.Tensor:
    """Combine the terms with the weights of ``defaults/classifier.yaml``."""
    total = hard if kd is None else (1.0 - kd_alpha) * hard + kd_alpha * kd
    if feature is not None:
        total = total + feature_weight * feature
    return total
