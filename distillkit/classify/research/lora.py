"""LoRA adapters (peft) on a classifier backbone: backbone frozen, only the adapters (and the head) train.

``inject_lora`` puts peft LoRA layers on every ``nn.Linear`` and dense ``nn.Conv2d`` of the backbone
except the classification head, through ``peft.inject_adapter_in_model`` (the module keeps its own
API, so the timm forward paths still work), then freezes everything but the adapters and the head.
The adapters are saved apart, peft-style (``adapter_config.json`` + ``adapter_model.safetensors``),
by ``save_lora_adapter`` and can be put back on a freshly built model with ``load_lora_adapter``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from distillkit.io import atomic_write_bytes, atomic_write_text

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float | None = None  # None: 2 * rank (a scaling of 2, the common choice)
    dropout: float = 0.0

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else 2 * self.rank)


def lora_target_modules(model: nn.Module, head_prefixes: tuple[str, ...]) -> list[str]:
    """Full names of the Linear / dense Conv2d layers outside the head (depthwise convs are skipped)."""
    names = []
    for name, module in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in head_prefixes):
            continue
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
            names.append(name)
    return names


def inject_lora(model: nn.Module, settings: LoraSettings, head_prefixes: tuple[str, ...]) -> list[str]:
    """Add LoRA adapters in place; freeze all but adapters and head; return the adapted layer names."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_target_modules(model, head_prefixes)
    if not targets:
        raise ValueError("the model has no Linear or Conv2d layer outside its head to put LoRA adapters on")
    config = LoraConfig(
        r=settings.rank, lora_alpha=settings.lora_alpha, lora_dropout=settings.dropout, target_modules=targets
    )
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        in_head = any(name.startswith(p + ".") for p in head_prefixes)
        param.requires_grad_("lora_" in name or in_head)
    model._lora_config = config  # type: ignore[assignment]
    return targets


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in get_peft_model_state_dict(model).items()}


def save_lora_adapter(model: nn.Module, folder: str | os.PathLike[str]) -> Path:
    """Write the adapters of ``model`` (peft layout) into ``folder``; return the folder."""
    from safetensors.torch import save

    config = getattr(model, "_lora_config", None)
    if config is None:
        raise ValueError("the model carries no LoRA adapters (inject_lora was not applied)")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    weights = lora_state_dict(model)
    atomic_write_bytes(target / ADAPTER_WEIGHTS, save(weights))
    data = config.to_dict()
    data["target_modules"] = sorted(data.get("target_modules") or [])
    atomic_write_text(target / ADAPTER_CONFIG, json.dumps(data, indent=2, default=str) + "\n")
    return target


def load_lora_adapter(model: nn.Module, folder: str | os.PathLike[str]) -> None:
    """Load saved adapter weights into a model that already carries adapters of the same layout."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(Path(folder) / ADAPTER_WEIGHTS)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"adapter weights do not fit the model: {unexpected[:3]}")
