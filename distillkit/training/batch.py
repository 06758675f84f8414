"""Moving a collated batch onto the training device."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Tensors inside dicts, lists and tuples (named ones too) are moved, recursively; other objects
    pass through unchanged. Mapping types with their own ``.to`` (transformers' BatchEncoding /
    BatchFeature) are moved with it.
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        moved = {key: move_to_device(value, device, non_blocking) for key, value in batch.items()}
        if type(batch) is dict:
            return moved
        try:
            return type(batch)(moved)
        except TypeError:
            return moved
    if isinstance(batch, Mapping) and callable(getattr(batch, "to", None)):
        return batch.to(device)
    if isinstance(batch, tuple):
        items = [move_to_device(value, device, non_blocking) for value in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    if isinstance(batch, list):
        return [move_to_device(value, device, non_blocking) for value in batch]
    return batch
