"""The monitored metric: which value is best, and when to stop for lack of improvement."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from distillkit.errors import ConfigError


@dataclass
class MetricMonitor:
    """Tracks the best value of ``name`` and counts epochs without improvement (early stopping).

    A value improves on the best only by more than ``min_delta`` (in the direction of ``mode``); a
    non-finite value never does. ``patience`` 0 disables stopping.
    """

    name: str
    mode: str  # "max" | "min"
    patience: int = 0
    min_delta: float = 0.0
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    def value_of(self, row: dict[str, Any]) -> float:
        if self.name not in row:
            available = ", ".join(sorted(key for key in row if key != "epoch"))
            raise ConfigError(
                f"monitored metric '{self.name}' is not among this run's metrics ({available})",
                "set checkpointing.monitor to one of them",
            )
        return float(row[self.name])

    def is_improvement(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        if self.mode == "max":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def update(self, row: dict[str, Any], epoch: int) -> bool:
        """Record ``row``'s value; True when it is a new best."""
        value = self.value_of(row)
        if self.is_improvement(value):
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience
