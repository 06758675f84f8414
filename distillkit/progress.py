"""The one progress interface library code reports through.

Library functions take a ``progress: Progress`` argument (default: ``NULL_PROGRESS``) and never
print. The CLI passes a rich-backed implementation (``distillkit.cli.console.RichProgress``), or,
when stderr is not a terminal, one that writes plain lines (``LineProgress``). Besides bars, a
progress takes whole lines (``log_line``): one per training epoch, with its losses and metrics, as
ultralytics prints them, so a piped or logged run shows how training goes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class ProgressTask(Protocol):
    def advance(self, amount: float = 1) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> AbstractContextManager[ProgressTask]:
        """Context manager yielding a task to ``advance``; ``total`` None means indeterminate."""
        ...

    def log(self, message: str) -> None:
        """A whole line for the person watching (printed above any bar)."""
        ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        return None


class NullProgress:
    """Reports nothing: the default for library calls from Python."""

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[ProgressTask]:
        yield _NullTask()

    def log(self, message: str) -> None:
        return None


NULL_PROGRESS: Progress = NullProgress()  # type: ignore[assignment]


def log_line(progress: Progress, message: str) -> None:
    """``progress.log(message)``, for progress objects written before ``log`` existed too."""
    log = getattr(progress, "log", None)
    if log is not None:
        log(message)


def epoch_line(epoch: int, epochs: int, values: Mapping[str, float], seconds: float | None = None) -> str:
    """``epoch 3/20  box_loss 1.234  mAP50-95 0.310  12.3s``: one training epoch on one line."""
    parts = [f"epoch {epoch}/{epochs}", values_text(values)]
    if seconds is not None:
        parts.append(f"{seconds:.1f}s")
    return "  ".join(part for part in parts if part)


def values_text(values: Mapping[str, float]) -> str:
    """``box_loss 1.2346  lr 1.00e-05``: named numbers, four decimals or scientific where that hides them."""
    parts = []
    for name, value in values.items():
        number = float(value)
        if not math.isfinite(number):
            parts.append(f"{name} {number}")
        elif number != 0 and (abs(number) < 1e-3 or abs(number) >= 1e4):
            parts.append(f"{name} {number:.2e}")
        else:
            parts.append(f"{name} {number:.4f}")
    return "  ".join(parts)
