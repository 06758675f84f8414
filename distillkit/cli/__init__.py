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


def _path_problem(exc: Exception) -> str | None:
    """One line for an OS error caused by a path the user chose (a file where a folder goes...), else None.

    Every command writes under paths from its options; checking each option for each of these cases
    would repeat itself everywhere and still miss one, so the operating system's answer is translated here.
    """
    if not isinstance(exc, (FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return None
    path = exc.filename2 or exc.filename  # os.replace(temporary, target) names the target second
    if path is None:
        return None
    if isinstance(exc, FileExistsError):
        return f"{path} exists and is not a folder; choose another output path, or remove that file"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder where a file goes; give a file path"
    if isinstance(exc, NotADirectoryError):
        return f"{path}: part of this path is a file, not a folder; choose another path"
    return f"permission denied: {path}; choose a path you can read and write"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("DISTILLKIT_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]

    from distillkit.cli.app import app

    try:
        exit_code = app(args=args, prog_name="distillkit", standalone_mode=False)
        if exit_code == 130:  # typer turns Ctrl-C into a silent Exit(130); say what happened
            raise KeyboardInterrupt
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
        resumable = bool(args) and args[0].startswith("train-")
        hint = "; continue it with the same command plus --resume" if resumable else ""
        if args and args[0] == "label":  # finished images are in the teacher-output cache
            hint = "; run the same command again to continue (finished images are kept)"
        _error_line("interrupted" + hint)
        exit_code = 130
    except Exception as exc:
        if debug:
            raise
        problem = _path_problem(exc)
        if problem is not None:
            _error_line(problem)
            sys.exit(2)
        _error_line(
            f"internal error: {type(exc).__name__}: {exc} "
            "(this is a distillkit bug; re-run with --debug and report the traceback)"
        )
        exit_code = 1
    sys.exit(exit_code if isinstance(exit_code, int) else 0)


__all__ = ["main"]
