"""Command-line entry point: runs the Typer app and turns every failure into one line + an exit code.

Exit codes: 0 success, 1 bad data or a failed check, 2 bad usage, 130 interrupted.
``--debug`` (anywhere on the command line) or ``DISTILLKIT_DEBUG=1`` re-raises with a traceback.
With ``--json`` an error is also one JSON document on stdout: ``{"error", "hint", "exit_code"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys

import typer

from distillkit.errors import DistillkitError


def _error_line(message: str) -> None:
    # Plain write (not rich) so the line is never wrapped or decorated in pipelines.
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()


def _json_error(enabled: bool, error: str, hint: str | None, exit_code: int) -> None:
    """Under ``--json``, the error as the run's one JSON document on stdout (unless the command wrote one)."""
    from distillkit.cli.console import json_document_written

    if not enabled or json_document_written():
        return

    def clean(text: str) -> str:
        return " ".join(str(text).rstrip(". ").split())

    document = {"error": clean(error), "hint": clean(hint) if hint else None, "exit_code": exit_code}
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _wants_json(args: list[str]) -> bool:
    options = args[: args.index("--")] if "--" in args else args
    return "--json" in options


def _usage_hint(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.parent is not None:
        return f" (see 'distillkit {ctx.info_name} --help')"
    return " (see 'distillkit --help')"


def _path_problem(exc: Exception) -> tuple[str, str] | None:
    """(what, fix) for an OS error caused by a path the user chose (a file where a folder goes...), else None.

    Every command writes under paths from its options; checking each option for each of these cases
    would repeat itself everywhere and still miss one, so the operating system's answer is translated here.
    """
    if not isinstance(exc, (FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return None
    path = exc.filename2 or exc.filename  # os.replace(temporary, target) names the target second
    if path is None:
        return None
    if isinstance(exc, FileExistsError):
        return f"{path} exists and is not a folder", "choose another output path, or remove that file"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder where a file goes", "give a file path"
    if isinstance(exc, NotADirectoryError):
        return f"{path}: part of this path is a file, not a folder", "choose another path"
    return f"permission denied: {path}", "choose a path you can read and write"


def _tolerant_streams() -> None:
    """Text that cannot be encoded (a lone surrogate from a JSON escape in a file name or class name) is
    printed escaped instead of failing the run halfway through its report."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):  # a stream that cannot change its handler now
                reconfigure(errors="backslashreplace")


def _quiet_library_loggers() -> None:
    # Libraries imported on the way log warnings meant for their own developers onto the user's
    # stderr, where scripts read distillkit's one-line errors: torchao (pulled in by transformers
    # when the tflite extra is installed) registers enums that torch 2.14 calls deprecated, once per import.
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def _interrupted(args: list[str], json_mode: bool) -> int:
    """Say how to go on after Ctrl-C; the exit code 130."""
    resumable = bool(args) and args[0].startswith("train-")
    hint = "; continue it with the same command plus --resume" if resumable else ""
    if args and args[0] == "label":  # finished images are in the teacher-output cache
        hint = "; run the same command again to continue (finished images are kept)"
    _error_line("interrupted" + hint)
    _json_error(json_mode, "interrupted", hint.removeprefix("; ") or None, 130)
    return 130


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is behind ``exc`` (Python wraps one raised in ``__set_name__``, say)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _exit_now(code: int, argv: list[str] | None) -> None:
    if argv is None:
        _exit_process(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    _tolerant_streams()
    _quiet_library_loggers()
    debug = "--debug" in args or os.environ.get("DISTILLKIT_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    json_mode = _wants_json(args)
    from distillkit.safe_load import trust_model_files

    trust_model_files(False)  # each run decides anew: --trust-model-file of the commands that read models

    try:
        # Imported inside: a Ctrl-C during the seconds torch and ultralytics take to import is a plain "interrupted".
        from distillkit.cli.app import app
        from distillkit.cli.console import json_document_written

        json_document_written(reset=True)
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
            hint = _usage_hint(exc).strip(" ()") if usage else None
            _json_error(json_mode, exc.format_message(), hint, exit_code)
    except typer.Abort:
        _error_line("interrupted")
        exit_code = 130
        _json_error(json_mode, "interrupted", None, exit_code)
    except DistillkitError as exc:
        if debug:
            raise
        _error_line(exc.one_line())
        exit_code = exc.exit_code
        _json_error(json_mode, exc.message, exc.hint, exit_code)
    except KeyboardInterrupt:
        exit_code = _interrupted(args, json_mode)
    except MemoryError:
        if debug:
            raise
        # Not a bug in the command: the input (or what it asks for) needs more memory than there is.
        hint = "free memory, or give the command a smaller input"
        _error_line(f"out of memory; {hint}")
        exit_code = 1
        _json_error(json_mode, "out of memory", hint, exit_code)
    except Exception as exc:
        if debug:
            raise
        if _caused_by_interrupt(exc):  # e.g. Ctrl-C inside a class body while a module imports
            _exit_now(_interrupted(args, json_mode), argv)
        problem = _path_problem(exc)
        if problem is not None:
            _error_line("; ".join(problem))
            _json_error(json_mode, *problem, 2)
            sys.exit(2)
        _error_line(
            f"internal error: {type(exc).__name__}: {exc} "
            "(this is a distillkit bug; re-run with --debug and report the traceback)"
        )
        exit_code = 1
        _json_error(
            json_mode,
            f"internal error: {type(exc).__name__}: {exc}",
            "this is a distillkit bug; re-run with --debug and report the traceback",
            exit_code,
        )
    code = exit_code if isinstance(exit_code, int) else 0
    _exit_now(code, argv)  # the real process (not an in-process call): its work is done and written


def _exit_process(code: int) -> None:
    """End the process with ``code`` such that a Ctrl-C from here on gives exit 130, never death by SIGINT.

    After ``main``, Python joins threads, runs atexit handlers, then tears the interpreter down
    (torch and CUDA libraries take a while) — and in that last phase it has already put SIGINT back to
    the system default, so a Ctrl-C there killed the process by the signal (exit -2): a Makefile or
    pipeline saw a crash although every file was complete. Here the threads are joined and the exit
    handlers run with a handler that exits 130, and the teardown, which has nothing left to write,
    is skipped with ``os._exit``.
    """
    import atexit
    import threading

    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()

    flush()
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))
    except ValueError:  # not the main thread: leave the exit to Python
        sys.exit(code)
    for thread in threading.enumerate():  # what Python's own shutdown waits for
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # temporary folders, multiprocessing, loggers: what they do at a normal exit
    flush()
    os._exit(code)


__all__ = ["main"]
