"""LoRA adapters (peft) on a classifier backbone: backbone frozen, only the adapters (and the head) train.

The same peft stack as the teachers (``distillkit/training/lora.py``): the adapter settings are a
``lora`` section of the teachers' shape (``r``, ``alpha`` = 2 r, ``dropout`` 0, ``bias`` none,
``target_modules``: every ``nn.Linear`` and dense ``nn.Conv2d`` of the backbone except the
classification head), turned into peft's ``LoraConfig`` by ``peft_lora_config``. ``inject_lora``
applies it with ``peft.get_peft_model``, which puts the LoRA layers into the backbone itself: the
backbone keeps its own module tree and API (the timm forward paths, the state-dict keys of the
classifier checkpoints) and the ``PeftModel`` over it stays reachable through ``peft_view`` (an
unregistered attribute: not a submodule, not in the state dict). Everything but the adapters and
the head is frozen.

``save_lora_adapter`` writes the adapters apart with peft's own ``save_pretrained`` (through the
teachers' ``save_adapter``: ``adapter_config.json`` + ``adapter_model.safetensors``, readable by
``PeftModel.from_pretrained``); ``load_lora_adapter`` puts them back on a freshly built model. A
folder of the earlier hand-written layout (keys without peft's ``base_model.model.`` prefix) still
loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from distillkit.config.schema import LoraConfig as LoraSection
from distillkit.training.lora import peft_lora_config, save_adapter

PEFT_VIEW = "_peft_model"  # the attribute holding the PeftModel over an adapted backbone
PEFT_PREFIX = "base_model.model."  # how peft's saved keys name the layers of the base model


def lora_section(rank: int, targets: list[str]) -> LoraSection:
    """The classifier's adapters in the teachers' ``lora`` shape: alpha 2 r (a scaling of 2), no dropout."""
    return LoraSection(r=rank, alpha=2 * rank, dropout=0.0, bias="none", target_modules=list(targets))


def lora_target_modules(model: nn.Module, head_prefixes: tuple[str, ...]) -> list[str]:
    """Full names of the Linear / dense Conv2d layers outside the head (depthwise convs are skipped)."""
    names = []
    for name, module in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in head_prefixes):
            continue
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
            names.append(name)
    return names


def inject_lora(model: nn.Module, rank: int, head_prefixes: tuple[str, ...]) -> list[str]:
    """Add LoRA adapters to ``model`` in place; freeze all but adapters and head; return the adapted layer names."""
    from peft import get_peft_model

    targets = lora_target_modules(model, head_prefixes)
    if not targets:
        raise ValueError("the model has no Linear or Conv2d layer outside its head to put LoRA adapters on")
    peft_model = get_peft_model(model, peft_lora_config(lora_section(rank, targets)))
    # Not a submodule (the PeftModel holds `model`: registering it would make a cycle in the module tree).
    object.__setattr__(model, PEFT_VIEW, peft_model)
    for name, param in model.named_parameters():
        in_head = any(name.startswith(p + ".") for p in head_prefixes)
        param.requires_grad_("lora_" in name or in_head)
    return targets


def peft_view(model: nn.Module) -> Any:
    """The ``PeftModel`` over a backbone that ``inject_lora`` adapted."""
    view = model.__dict__.get(PEFT_VIEW)
    if view is None:
        raise ValueError("the model carries no LoRA adapters (inject_lora was not applied)")
    return view


def save_lora_adapter(model: nn.Module, folder: str | os.PathLike[str]) -> Path:
    """Write the adapters of ``model`` into ``folder`` with peft's ``save_pretrained``; return the folder."""
    return save_adapter(peft_view(model), Path(folder))


def load_lora_adapter(model: nn.Module, folder: str | os.PathLike[str]) -> None:
    """Load saved adapter weights into a model that already carries adapters of the same layout."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    weights = load_peft_weights(str(folder), device="cpu")
    if weights and not any(key.startswith(PEFT_PREFIX) for key in weights):  # the earlier hand-written layout
        weights = {PEFT_PREFIX + key: value for key, value in weights.items()}
    result = set_peft_model_state_dict(peft_view(model), weights)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"adapter weights do not fit the model: {unexpected[:3]}")
