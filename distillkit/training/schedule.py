"""Learning-rate schedules, stepped once per optimiser step: linear warm-up, then the chosen shape."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

ONECYCLE_DEFAULT_WARMUP = 0.3  # torch's OneCycleLR pct_start, used when warmup_epochs is 0


def lr_factor_fn(
    kind: str, total_steps: int, warmup_steps: int, warmup_lr_ratio: float, min_lr_ratio: float
) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimiser step ``s`` (0-based) for ``total_steps`` steps in all.

    - constant: warm-up, then 1.
    - linear: warm-up, then a straight line from 1 down to ``min_lr_ratio`` at the last step.
    - cosine: warm-up, then a half cosine from 1 down to ``min_lr_ratio``.
    - onecycle: a cosine rise from ``warmup_lr_ratio`` to 1 (over the warm-up, or 30 % of the run
      when there is none) then a cosine fall to ``min_lr_ratio``, as torch's OneCycleLR.
    Warm-up (all but onecycle) rises linearly from ``warmup_lr_ratio`` to 1 over ``warmup_steps``.
    """
    total_steps = max(1, total_steps)
    if kind == "onecycle" and warmup_steps == 0:
        warmup_steps = max(1, round(ONECYCLE_DEFAULT_WARMUP * total_steps))
    warmup_steps = min(warmup_steps, total_steps)
    decay_steps = max(1, total_steps - warmup_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            progress = step / warmup_steps
            if kind == "onecycle":
                return warmup_lr_ratio + (1 - warmup_lr_ratio) * 0.5 * (1 - math.cos(math.pi * progress))
            return warmup_lr_ratio + (1 - warmup_lr_ratio) * progress
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        if kind == "linear":
            return 1.0 - (1.0 - min_lr_ratio) * progress
        if kind in ("cosine", "onecycle"):
            return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        raise ValueError(f"unknown scheduler '{kind}'")

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    total_steps: int,
    warmup_steps: int,
    warmup_lr_ratio: float,
    min_lr_ratio: float,
) -> LambdaLR:
    """A LambdaLR over every parameter group; its lr at step 0 is already the warm-up start.

    The factor is a closure (not a callable object) on purpose: LambdaLR then saves only its step
    count, so a resumed run follows the schedule of the current config rather than a stale copy.
    """
    return LambdaLR(optimizer, lr_factor_fn(kind, total_steps, warmup_steps, warmup_lr_ratio, min_lr_ratio))
