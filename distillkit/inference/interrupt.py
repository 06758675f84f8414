"""Ctrl-C as "stop after this picture": a camera or a stream has no end, so Ctrl-C is how a run over one ends.

The first Ctrl-C only raises a flag that the prediction loops read between images or frames; they
then return normally, so the predictions file gets its closing bracket and the annotated video its
index (an mp4 cut off mid-write does not play). A second Ctrl-C interrupts at once (for a source
that hangs): the files being written are then dropped, never left half-written.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopRequest:
    """Callable flag: ``stop()`` is True once Ctrl-C was pressed (or ``request()`` called)."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True

    def __call__(self) -> bool:
        return self.requested


@contextmanager
def graceful_interrupt() -> Iterator[StopRequest]:
    """While inside, the first SIGINT sets the returned flag; a second raises ``KeyboardInterrupt``."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.requested:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stop.request()

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
