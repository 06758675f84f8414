"""Exceptions that carry a one-line, user-facing message and the exit code the CLI should use.

Library code raises these for user mistakes and bad data; the CLI prints ``error: <message>`` on
stderr and exits with ``exit_code``. Anything else is a bug and is reported as such.
"""

from __future__ import annotations


class DistillkitError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is the one-line message."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message.rstrip(". ")
        if self.hint:
            text += f"; {self.hint.rstrip('. ')}"
        return " ".join(text.split())  # guarantee a single line whatever the parts contained


class DataError(DistillkitError):
    """The data (a file's content) is wrong: exit code 1."""

    exit_code = 1


class UsageError(DistillkitError):
    """The command line is wrong (bad option value, missing file, unknown config key): exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration key or value is wrong."""
