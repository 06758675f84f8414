"""Exponential moving average of the trained weights.

Only the tracked state (trainable parameters and the buffers of trainable modules, see
``trainable.py``) is averaged: the frozen rest of the model is identical in the average anyway, so
copying it would only cost memory. Evaluation swaps the averaged tensors into the live model and
back, bit-exactly, instead of keeping a second model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from distillkit.training.trainable import tracked_tensors

EMA_WARMUP_STEPS = 2000.0  # the decay ramps up as decay * (1 - exp(-updates / this)), as in ultralytics


class ModelEma:
    """``ema = d * ema + (1 - d) * live`` after every optimiser step, ``d`` ramping up to ``decay``.

    The ramp keeps early (random-ish) weights from dominating a short run's average. Integer buffers
    (e.g. BatchNorm's ``num_batches_tracked``) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float, warmup_steps: float = EMA_WARMUP_STEPS) -> None:
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.updates = 0
        self._live = dict(tracked_tensors(model))
        self.shadow: dict[str, torch.Tensor] = {key: tensor.detach().clone() for key, tensor in self._live.items()}

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.warmup_steps))

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = self.current_decay()
        floats = [key for key, tensor in self.shadow.items() if tensor.is_floating_point()]
        if floats:
            shadow = [self.shadow[key] for key in floats]
            live = [self._live[key].detach() for key in floats]
            torch._foreach_lerp_(shadow, live, 1.0 - decay)
        for key, tensor in self.shadow.items():
            if not tensor.is_floating_point():
                tensor.copy_(self._live[key])

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within the block the live model holds the averaged weights; its own come back after."""
        with torch.no_grad():
            backup = {key: tensor.detach().clone() for key, tensor in self._live.items()}
            for key, tensor in self._live.items():
                tensor.copy_(self.shadow[key])
        try:
            yield
        finally:
            with torch.no_grad():
                for key, tensor in self._live.items():
                    tensor.copy_(backup[key])

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "updates": self.updates,
            "shadow": {key: tensor.detach().to("cpu", copy=True) for key, tensor in self.shadow.items()},
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        shadow = state["shadow"]
        missing = sorted(set(self.shadow) - set(shadow))
        if missing:
            raise KeyError(f"EMA state lacks {', '.join(missing[:5])}")
        for key, tensor in self.shadow.items():
            tensor.copy_(shadow[key])
