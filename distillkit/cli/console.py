"""Where CLI output goes, and the rich-backed progress.

Rules every command follows:
- the human report (tables) goes to stdout, unless ``--json`` (then stdout carries exactly one JSON
  document) or ``--quiet`` (then only errors are printed);
- warnings, notices and progress bars go to stderr, so pipelines can read stdout safely;
- colour follows rich's detection, which honours ``NO_COLOR`` and non-terminals.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgressBar

from distillkit.io import dumps_json
from distillkit.progress import ProgressTask

# Whether this run wrote its JSON document: the entry point then adds no error document (one per run).
_json_written = False


def json_document_written(reset: bool = False) -> bool:
    """Whether a ``--json`` document went to stdout in this run; ``reset`` starts a new run."""
    global _json_written
    written = _json_written
    if reset:
        _json_written = False
    return written


@dataclass
class Output:
    """Per-command output settings, built from the ``--json`` / ``--quiet`` options."""

    json_mode: bool = False
    quiet: bool = False
    stdout: Console = field(default_factory=lambda: Console(soft_wrap=False))
    stderr: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))

    @property
    def show_report(self) -> bool:
        return not (self.json_mode or self.quiet)

    @property
    def show_progress(self) -> bool:
        return not self.quiet and self.stderr.is_terminal

    def print(self, *objects: Any) -> None:
        """Print part of the human report (stdout)."""
        if self.show_report:
            self.stdout.print(*objects)

    def notice(self, message: str, style: str = "dim") -> None:
        """A side remark on stderr (suppressed by --quiet)."""
        if not self.quiet:
            self.stderr.print(message, style=style, markup=False, highlight=False)

    def warning(self, message: str) -> None:
        if not self.quiet:
            self.stderr.print(f"warning: {message}", style="yellow", markup=False, highlight=False)

    def emit_json(self, document: Any) -> None:
        """Write the single JSON document of a ``--json`` run to stdout."""
        global _json_written
        sys.stdout.write(dumps_json(document, indent=True).decode("utf-8") + "\n")
        sys.stdout.flush()
        _json_written = True

    def progress(self) -> RichProgress | LineProgress | QuietProgress:
        if self.quiet:
            return QuietProgress()
        # piped or logged: no bars (they would be escape codes), but the per-epoch lines, as they come
        return RichProgress(self.stderr) if self.show_progress else LineProgress(self.stderr)


class _RichTask:
    def __init__(self, bar: RichProgressBar, task_id: Any) -> None:
        self._bar = bar
        self._task_id = task_id

    def advance(self, amount: float = 1) -> None:
        self._bar.advance(self._task_id, amount)


class RichProgress:
    """Progress bars on stderr; each ``task`` is one bar, removed when done."""

    def __init__(self, console: Console) -> None:
        self._console = console

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[ProgressTask]:
        columns = [
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with RichProgressBar(*columns, console=self._console, transient=True) as bar:
            task_id = bar.add_task(description, total=total)
            yield _RichTask(bar, task_id)

    def log(self, message: str) -> None:
        self._console.print(message, markup=False, highlight=False)  # rich keeps live bars below it


class _SilentTask:
    def advance(self, amount: float = 1) -> None:
        return None


class QuietProgress:
    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[ProgressTask]:
        yield _SilentTask()

    def log(self, message: str) -> None:
        return None


class LineProgress(QuietProgress):
    """stderr is not a terminal: no bars, but every logged line, flushed at once (tail -f, CI logs)."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def log(self, message: str) -> None:
        self._console.print(message, markup=False, highlight=False, soft_wrap=True)
        self._console.file.flush()
