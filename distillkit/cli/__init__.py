"""Command-line entry point: runs the Typer app and turns every failure into one line + an exit code.

Exit codes: 0 success, 1 bad data or a failed check, 2 bad usage, 130 interrupted.
``--debug`` (anywhere on the command line) or ``DISTILLKIT_DEBUG=1`` re-raises with a traceback.
"""

from __future__ import annotations

import os
import sys

import typer

from distillkit.errors import DistillkitError


def _error_line(message: str) -> None:
    # Plain write (not rich) so the line is never wrapped or decorated in pipelines.
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()


def _usage_hint(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.parent is not None:
        return f" (see 'distillkit {ctx.info_name} --help')"
    return " (see 'distillkit --help')"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("DISTILLKIT_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]

    from distillkit.cli.app import app

    try:
        exit_code = app(args=args, prog_name="distillkit", standalone_mode=False)
    except typer.TyperException as exc:  # typer's (vendored click) usage and parameter errors
        if type(exc).__name__ == "NoArgsIsHelpError":
            # `distillkit` or `distillkit validate` alone: the help text, on stdout, like --help.
            sys.stdout.write(exc.format_message() + "\n")
            exit_code = 0
        elif debug:
            raise
        else:
            usage = getattr(exc, "exit_code", 1) == 2
            _error_line(exc.format_message() + (_usage_hint(exc) if usage else ""))
            exit_code = getattr(exc, "exit_code", 1)
    except typer.Abort:
        _error_line("interrupted")
        exit_code = 130
    except DistillkitError as exc:
        if debug:
            raise
        _error_line(exc.one_line())
        exit_code = exc.exit_code
    except KeyboardInterrupt:
        _error_line("interrupted")
        exit_code = 130
    except Exception as exc:
        if debug:
            raise
        _error_line(
            f"internal error: {type(exc).__name__}: {exc} "
            "(this is a distillkit bug; re-run with --debug and report the traceback)"
        )
        exit_code = 1
    sys.exit(exit_code if isinstance(exit_code, int) else 0)


__all__ = ["main"]
