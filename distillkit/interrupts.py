"""A Ctrl-C that stops a training loop promptly at a safe point, whatever the loop's library does with it.

A ``KeyboardInterrupt`` raised wherever the main thread happens to be can land inside a finalizer or
a library's ``except Exception`` / ``__del__`` and be swallowed ("Exception ignored in: ..."), and
the loop then goes on. ``deferred_interrupt`` replaces the SIGINT handler for the duration of a
loop: the first Ctrl-C only records the request (and puts back the default action, so a second
Ctrl-C kills the process outright); the loop calls ``check()`` at its safe points (a batch boundary:
the last checkpoint on disk stays the one to resume from) and that raises ``KeyboardInterrupt`` in
plain code where nothing swallows it. Until ``defer()`` is called (set-up work with no safe points
yet), the first Ctrl-C raises at once, as usual.

Data-loader worker processes share the terminal's process group and get every Ctrl-C too; they
call ``ignore_in_worker()`` so only the main process decides.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class InterruptRequest:
    """The state of one ``deferred_interrupt`` block."""

    def __init__(self) -> None:
        self.requested = False
        self.deferring = False

    def defer(self, enabled: bool = True) -> None:
        """From now on a Ctrl-C waits for the next ``check()`` (``False``: raise at once again)."""
        self.deferring = enabled
        if not enabled:
            self.check()

    def check(self, *_: Any) -> None:
        """Raise ``KeyboardInterrupt`` if a Ctrl-C came in; usable directly as a training callback."""
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends the process at once
        self.requested = True
        if not self.deferring:
            self.check()


@contextmanager
def deferred_interrupt() -> Iterator[InterruptRequest]:
    """Install the recording SIGINT handler for the block (a no-op outside the main thread)."""
    request = InterruptRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signal handlers belong to the main thread; Ctrl-C is not ours to handle here
        return
    previous = signal.signal(signal.SIGINT, request._handle)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)


def ignore_in_worker() -> None:
    """In a data-loader worker: leave Ctrl-C to the main process (it stops the workers itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
