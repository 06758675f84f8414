"""The one progress interface library code reports through.

Library functions take a ``progress: Progress`` argument (default: ``NULL_PROGRESS``) and never
print. The CLI passes a rich-backed implementation (``distillkit.cli.console.RichProgress``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class ProgressTask(Protocol):
    def advance(self, amount: float = 1) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> AbstractContextManager[ProgressTask]:
        """Context manager yielding a task to ``advance``; ``total`` None means indeterminate."""
        ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        return None


class NullProgress:
    """Reports nothing: the default for library calls from Python."""

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[ProgressTask]:
        yield _NullTask()


NULL_PROGRESS: Progress = NullProgress()  # type: ignore[assignment]
