"""A Ctrl-C that stops a training loop promptly at a safe point, whatever the loop's library does with it.

A ``KeyboardInterrupt`` raised wherever the main thread happens to be can land inside a finalizer or
a library's ``except Exception`` / ``__del__`` and be swallowed ("Exception ignored in: ..."), and
the loop then goes on. ``deferred_interrupt`` replaces the SIGINT handler for the duration of a
loop: the first Ctrl-C only records the request (a second one raises ``KeyboardInterrupt`` at once,
for a loop that hangs, and gives Ctrl-C back to Python); the loop calls ``check()`` at its safe
points (a batch boundary: the last checkpoint on disk stays the one to resume from) and that raises
``KeyboardInterrupt`` in plain code where nothing swallows it. Until ``defer()`` is called (set-up
work with no safe points yet), the first Ctrl-C raises at once, as usual.

``graceful_interrupt`` is the same handler for loops that end by themselves when asked (``infer`` over
a camera: the request is a flag ``stop()`` read between frames, so the files being written are closed
properly).

Data-loader worker processes share the terminal's process group and get every Ctrl-C too; they
call ``ignore_in_worker()`` so only the main process decides.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
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

    def request(self) -> None:
        self.requested = True

    def __call__(self) -> bool:
        """Whether a Ctrl-C came in (the ``stop`` flag of ``graceful_interrupt`` loops)."""
        return self.requested

    def check(self, *_: Any) -> None:
        """Raise ``KeyboardInterrupt`` if a Ctrl-C came in; usable directly as a training callback."""
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # a second Ctrl-C: stop at once, and later ones are Python's again
            signal.signal(signal.SIGINT, self._previous)
            raise KeyboardInterrupt
        self.requested = True
        if not self.deferring:
            self.check()

    _previous: Any = signal.default_int_handler


@contextmanager
def deferred_interrupt(defer: bool = False) -> Iterator[InterruptRequest]:
    """Install the recording SIGINT handler for the block (a no-op outside the main thread)."""
    request = InterruptRequest()
    request.deferring = defer
    if threading.current_thread() is not threading.main_thread():
        yield request  # signal handlers belong to the main thread; Ctrl-C is not ours to handle here
        return
    request._previous = signal.signal(signal.SIGINT, request._handle)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, request._previous)


def graceful_interrupt() -> AbstractContextManager[InterruptRequest]:
    """While inside, the first Ctrl-C only sets the returned flag (``stop()``); a second raises."""
    return deferred_interrupt(defer=True)


StopRequest = InterruptRequest  # the flag's name where loops read it as ``stop()``


def ignore_in_worker() -> None:
    """In a data-loader worker: leave Ctrl-C to the main process (it stops the workers itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
