"""The Typer application: global options and the list of commands.

Each command lives in its own module under ``distillkit/cli/`` and is a thin function: parse
options, call one library function, render its result. Register new commands at the bottom.
"""

from __future__ import annotations

import typer

from distillkit import __version__

app = typer.Typer(
    name="distillkit",
    help=(
        "Turn a labelled image dataset (COCO JSON) into a small, fast, prompt-free model for edge "
        "devices.\n\n"
        "Typical flow: `distillkit validate data.json --split 0.7,0.15,0.15`, then train, "
        "evaluate and export. Every command takes `--help`; reporting commands take `--json` for "
        "pipelines. Add `--debug` anywhere to see a traceback on errors."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"distillkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show full tracebacks on errors (also accepted after the command name)."
    ),
) -> None:
    """Global options."""


def _register_commands() -> None:
    # Imported here so `distillkit --version` stays fast and import errors name the command.
    from distillkit.cli import (
        checks_cmd,
        config_cmd,
        evaluate_cmd,
        infer_cmd,
        label_cmd,
        optimize_cmd,
        report_cmd,
        split_cmd,
        train_classifier_cmd,
        train_student_cmd,
        train_teacher_cmd,
        validate_cmd,
    )

    app.command(name="validate", no_args_is_help=True)(validate_cmd.validate)
    app.command(name="split", no_args_is_help=True)(split_cmd.split)
    app.command(name="train-teacher", no_args_is_help=True)(train_teacher_cmd.train_teacher)
    app.command(name="train-student", no_args_is_help=True)(train_student_cmd.train_student)
    app.command(name="train-classifier", no_args_is_help=True)(train_classifier_cmd.train_classifier)
    app.command(name="label", no_args_is_help=True)(label_cmd.label)
    app.command(name="evaluate", no_args_is_help=True)(evaluate_cmd.evaluate)
    app.command(name="infer", no_args_is_help=True)(infer_cmd.infer)
    app.command(name="optimize", no_args_is_help=True)(optimize_cmd.optimize)
    app.command(name="report", no_args_is_help=True)(report_cmd.report)
    app.command(name="config")(config_cmd.config)
    app.command(name="checks")(checks_cmd.checks)


_register_commands()
