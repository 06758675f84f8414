"""`distillkit report`: one self-contained HTML page for one experiment, or a comparison of many."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from distillkit.cli.common import JSON_OPTION, QUIET_OPTION, TRUST_MODEL_FILE_OPTION, make_output
from distillkit.cli.console import Output
from distillkit.errors import UsageError
from distillkit.paths import check_output_outside_inputs
from distillkit.safe_load import trust_model_files


def report(
    experiments: list[Path] = typer.Argument(
        ..., help="Experiment folders: the --output of train-student or train-classifier (one or more)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="The HTML file to write (e.g. report.html)."),
    data: Path | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Score every run on this data (a test split: COCO JSON; classifiers: folder/CSV/COCO) "
        "[default: each run's own validation split].",
    ),
    images_dir: Path | None = typer.Option(None, "--images-dir", help="Folder of the evaluation images."),
    device: str | None = typer.Option(None, "--device", help="Device for the evaluation: cpu, 0, cuda:0, ..."),
    samples: int = typer.Option(12, "--samples", min=0, help="Sample pictures per experiment, worst first."),
    sample_size: int = typer.Option(320, "--sample-size", min=64, help="Longest side of a sample picture, pixels."),
    no_eval: bool = typer.Option(
        False, "--no-eval", help="Run no model: read the folders only (metrics from the training log, no samples)."
    ),
    trust_model_file: bool = TRUST_MODEL_FILE_OPTION,
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Build one HTML page that shows an experiment, or compares several.

    One experiment: what ran (data, classes, student, teacher, every setting that differs from the
    shipped defaults, versions), training curves, validation metrics with per-class AP, PR curves and
    the confusion matrix, the distillation components and what each measured, the `optimize` matrix
    (format x precision: size, latency, accuracy, drop, status) and sample predictions against the
    ground truth, worst images first (lowest per-image F1). Classifiers: accuracy, ECE, the
    reliability diagram and Grad-CAM++ samples, least confident in the true class first.

    Several experiments add a sortable table (metric, size, latency, training time, student, teacher,
    key settings), metric-vs-latency with the Pareto front, and the settings that differ side by side.

    Each run's best.pt is scored once by the report, on the run's own validation split, or on
    --data for every run (a test split: the fair comparison). The page is one file: images are
    inlined, nothing is fetched from the network, and it reads without JavaScript. Its numbers are
    those of the document `--json` prints.

    Examples:

        distillkit report exp/run1/student --output report.html

        distillkit report exp/a exp/b exp/c --data data/test.json -o compare.html

        distillkit report exp/cls --json | jq '.experiments[0].evaluation.accuracy'
    """
    trust_model_files(trust_model_file)  # before anything reads a model file
    from distillkit.report import build_report, render_html
    from distillkit.report.document import report_inputs

    out = make_output(json_mode, quiet)
    if output is None and not json_mode:
        raise UsageError("nothing to write", "pass --output report.html (and/or --json)")
    if output is not None:  # before any work: the page never lands on or among what the report reads
        if output.is_dir():
            raise UsageError(f"--output {output} is a folder", "pass the HTML file to write, e.g. report.html")
        check_output_outside_inputs(output, report_inputs(experiments, data, images_dir))
    result = build_report(
        experiments,
        data=data,
        images_dir=images_dir,
        device=device,
        evaluate=not no_eval,
        samples=samples,
        max_side=sample_size,
        progress=out.progress(),
    )
    if output is not None:
        from distillkit.io import atomic_write_text

        try:
            atomic_write_text(output, render_html(result))
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror or exc}", "check the --output path") from exc
        out.notice(f"report written to {output} ({output.stat().st_size / 1e6:.2f} MB)")
    if json_mode:
        out.emit_json(result.document)
        return
    _render(out, result.document)


def _render(out: Output, document: dict[str, Any]) -> None:
    table = Table(title="experiments", title_justify="left", show_edge=False)
    for column in ("experiment", "student", "metric", "value", "size MB", "latency ms", "training s"):
        table.add_column(column, justify="left" if column in ("experiment", "student", "metric") else "right")
    front = set((document.get("comparison") or {}).get("pareto") or [])
    for experiment in document["experiments"]:
        s = experiment["summary"]
        table.add_row(
            str(s["name"]) + (" *" if s["name"] in front else ""),
            str(s["student"]),
            str(s["metric_name"]),
            _fmt(s["metric"], ".3f"),
            _fmt(s["size_mb"], ".2f"),
            _fmt(s["latency_ms"], ".1f"),
            _fmt(s["training_time_s"], ".1f"),
        )
    out.print(table)
    if front:
        out.print("* on the Pareto front (no other run is both more accurate and faster)")


def _fmt(value: object, spec: str) -> str:
    return "-" if not isinstance(value, (int, float)) else format(value, spec)
