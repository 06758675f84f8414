"""The optimiser and its default parameter groups."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distillkit.config.schema import TrainingDynamicsConfig
from distillkit.errors import UsageError


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """All trainable parameters; biases and normalisation weights (1-D tensors) get no weight decay.

    Decaying a norm layer's scale or a bias towards zero only fights the normalisation, so the usual
    practice (timm, ultralytics) exempts every parameter with fewer than two dimensions.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(groups: list[dict[str, Any]], dynamics: TrainingDynamicsConfig) -> torch.optim.Optimizer:
    """AdamW (``momentum`` as beta1) or SGD with Nesterov momentum; groups without an lr get ``dynamics.lr``."""
    if not any(group["params"] for group in groups):
        raise UsageError("the model has no trainable parameters", "leave requires_grad=True on the parameters to train")
    if dynamics.optimizer == "adamw":
        return torch.optim.AdamW(
            groups, lr=dynamics.lr, betas=(dynamics.momentum, 0.999), weight_decay=dynamics.weight_decay
        )
    if dynamics.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=dynamics.lr,
            momentum=dynamics.momentum,
            nesterov=dynamics.momentum > 0,
            weight_decay=dynamics.weight_decay,
        )
    raise UsageError(f"unknown training_dynamics.optimizer '{dynamics.optimizer}'", "use adamw or sgd")
