"""`distillkit checks`: what this machine can do, before a long run finds out the hard way.

``run_checks()`` returns a ``ChecksReport`` of ``Check`` lines (section, name, status, detail, fix,
required). Only a required check that fails (a core package that does not import, a weights folder
given by the user that does not load, a visible GPU that cannot run a tensor) makes the report not ok.
"""

from distillkit.checks.model import FAIL, OK, SECTIONS, STATUSES, UNAVAILABLE, WARN, Check, ChecksReport
from distillkit.checks.network import network_attempts_on_import
from distillkit.checks.runner import run_checks

__all__ = [
    "FAIL",
    "OK",
    "SECTIONS",
    "STATUSES",
    "UNAVAILABLE",
    "WARN",
    "Check",
    "ChecksReport",
    "network_attempts_on_import",
    "run_checks",
]
