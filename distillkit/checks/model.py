"""What one check says, and the report of a whole ``distillkit checks`` run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK = "ok"
WARN = "warn"
FAIL = "fail"
UNAVAILABLE = "unavailable"
#: Every status, best first.
STATUSES = (OK, WARN, UNAVAILABLE, FAIL)

#: Sections, in the order they are reported.
SECTIONS = ("packages", "runtimes", "devices", "weights", "offline", "resources", "commands")


@dataclass(frozen=True)
class Check:
    """One line of the report.

    ``status``: ``ok`` (works), ``warn`` (works with a caveat, or something optional is broken),
    ``unavailable`` (not possible on this machine; optional), ``fail`` (broken). Only a ``fail`` of a
    ``required`` check makes the command exit 1. ``fix`` is one line that resolves the problem.
    ``data`` holds the machine-readable facts behind ``detail`` (versions, sizes, paths).
    """

    section: str
    name: str
    status: str
    detail: str
    fix: str | None = None
    required: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown check status {self.status!r}")
        if self.section not in SECTIONS:
            raise ValueError(f"unknown check section {self.section!r}")

    @property
    def blocking(self) -> bool:
        """True when this check makes the run exit 1."""
        return self.required and self.status == FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
            "required": self.required,
            "data": self.data,
        }


@dataclass
class ChecksReport:
    """Every check of one run, plus the facts a script most often wants (versions, devices)."""

    checks: list[Check]
    versions: dict[str, str | None] = field(default_factory=dict)
    devices: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Check]:
        """The required checks that failed (the reason for exit code 1)."""
        return [check for check in self.checks if check.blocking]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        return {status: sum(check.status == status for check in self.checks) for status in STATUSES}

    def section(self, name: str) -> list[Check]:
        return [check for check in self.checks if check.section == name]

    def find(self, section: str, name: str) -> Check | None:
        return next((c for c in self.checks if c.section == section and c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "failures": [f"{check.section}: {check.name}" for check in self.failures],
            "versions": self.versions,
            "devices": self.devices,
            "checks": [check.to_dict() for check in self.checks],
            "seconds": round(self.seconds, 2),
        }
