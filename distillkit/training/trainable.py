"""Which parts of a model the loop trains: trainable modules, their state, frozen BatchNorm.

A module counts as *trainable* when it owns a parameter with ``requires_grad``; a module that owns
no parameters (a BatchNorm with ``affine=False``, a container) counts as trainable when its parent
holds any trainable parameter. The *tracked* state is every trainable parameter plus the buffers of
trainable modules: exactly what changes during training, and so what checkpoints and the EMA keep.
A LoRA model with a frozen backbone of 170 M parameters then saves and averages only the adapters.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


def _has_trainable(module: nn.Module) -> bool:
    return any(param.requires_grad for param in module.parameters())


def trainable_module_names(model: nn.Module) -> set[str]:
    """Qualified names of the trainable modules (see the module docstring); the root is ``""``."""
    names: set[str] = set()
    subtree_trainable: dict[str, bool] = {}
    for name, module in model.named_modules():
        subtree_trainable[name] = _has_trainable(module)
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own:
            if any(param.requires_grad for param in own):
                names.add(name)
        else:
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            if subtree_trainable.get(parent if name else "", False):
                names.add(name)
    return names


def tracked_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(state-dict key, tensor) of every trainable parameter and every buffer of a trainable module."""
    trainable = trainable_module_names(model)
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                yield prefix + name, param
        if module_name in trainable:
            for name, buffer in module.named_buffers(recurse=False):
                if buffer is not None and id(buffer) not in seen and name not in module._non_persistent_buffers_set:
                    seen.add(id(buffer))
                    yield prefix + name, buffer


def tracked_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tracked tensors, detached copies on CPU (a checkpoint's ``model`` entry)."""
    return {key: tensor.detach().to("cpu", copy=True) for key, tensor in tracked_tensors(model)}


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: tensor.detach().to("cpu", copy=True) for key, tensor in model.state_dict().items()}


def frozen_norm_modules(model: nn.Module) -> list[nn.Module]:
    """BatchNorm modules outside the trainable part: their running statistics must not move."""
    trainable = trainable_module_names(model)
    return [
        module for name, module in model.named_modules() if isinstance(module, _NORM_TYPES) and name not in trainable
    ]


def set_train_mode(model: nn.Module, frozen_norms: list[nn.Module]) -> None:
    """``model.train()``, except frozen BatchNorm layers, which stay in eval mode (statistics fixed)."""
    model.train()
    for module in frozen_norms:
        module.eval()
