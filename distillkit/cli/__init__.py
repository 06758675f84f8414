"""Command-line entry point: runs the Typer app and turns every failure into one line + an exit code.

Exit codes: 0 success, 1 bad data or a failed check, 2 bad usage, 130 interrupted.
``--debug`` (anywhere on the command line) or ``DISTILLKIT_DEBUG=1`` re-raises with a traceback.
"""

from __future__ import annotations

import os
import sys

import click

from distillkit.errors import DistillkitError


def _error_line(message: str) -> None:
    # Plain write (not rich) so the line is never wrapped or decorated in pipelines.
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("DISTILLKIT_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]

    from distillkit.cli.app import app

    try:
        exit_code = app(args=args, prog_name="distillkit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        # `distillkit validate` with nothing else: show help on stdout, exit 0 like `--help`.
        click.echo(exc.ctx.get_help())
        exit_code = 0
    except click.UsageError as exc:
        if debug:
            raise
        hint = f" (see 'distillkit {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else (
            " (see 'distillkit --help')"
        )
        _error_line(exc.format_message() + hint)
        exit_code = 2
    except click.exceptions.Abort:
        _error_line("interrupted")
        exit_code = 130
    except click.ClickException as exc:
        if debug:
            raise
        _error_line(exc.format_message())
        exit_code = exc.exit_code
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
