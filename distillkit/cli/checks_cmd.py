"""`distillkit checks`: what this machine can do (versions, devices, weights, offline state, commands)."""

from __future__ import annotations

import sys

import typer
from rich.table import Table
from rich.text import Text

from distillkit.checks import FAIL, OK, UNAVAILABLE, WARN, ChecksReport, run_checks
from distillkit.checks.model import SECTIONS
from distillkit.cli.common import JSON_OPTION, QUIET_OPTION, make_output
from distillkit.cli.console import Output

_STYLES = {OK: "green", WARN: "yellow", UNAVAILABLE: "dim", FAIL: "bold red"}


def render_checks(out: Output, report: ChecksReport) -> None:
    table = Table(show_edge=False, pad_edge=False, expand=False, show_lines=False)
    table.add_column("check", style="cyan", no_wrap=True, max_width=34)
    table.add_column("status", no_wrap=True)
    table.add_column("detail (→ fix)", overflow="fold", ratio=1)
    for section in SECTIONS:
        lines = report.section(section)
        if not lines:
            continue
        table.add_row(Text(section, style="bold"), "", "")
        for index, check in enumerate(lines):
            status = Text(check.status + (" (required)" if check.blocking else ""), style=_STYLES[check.status])
            detail = Text(check.detail)
            if check.fix and check.status != OK:
                detail.append(f"\n→ {check.fix}", style="yellow")
            table.add_row(Text(f"  {check.name}"), status, detail, end_section=index == len(lines) - 1)
    out.print(table)
    counts = report.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in (OK, WARN, UNAVAILABLE, FAIL))
    verdict = (
        Text("every required part works", style="bold green")
        if report.ok
        else Text(f"{len(report.failures)} required check(s) failed", style="bold red")
    )
    out.print(Text.assemble(verdict, f"  ({summary}; {report.seconds:.1f} s)"))


def checks(
    dino_weights: str | None = typer.Option(
        None,
        "--dino-weights",
        metavar="DIR",
        help="Grounding DINO weights folder to check (as train-teacher takes it) [default: the hub cache].",
        show_default=False,
    ),
    sam_weights: str | None = typer.Option(
        None,
        "--sam-weights",
        metavar="DIR",
        help="SAM weights folder to check (as train-teacher takes it) [default: the hub cache].",
        show_default=False,
    ),
    no_import_probe: bool = typer.Option(
        False,
        "--no-import-probe",
        help="Skip importing the stack in a fresh Python process to catch network attempts (saves ~10 s).",
    ),
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Check what this machine can do before a long run fails: run it first on a new server.

    Reports versions (distillkit, Python, torch and its CUDA build, torchvision, ultralytics,
    transformers, peft, timm, onnxruntime and its providers; TensorRT, OpenVINO, LiteRT, Ray when
    installed), devices (CUDA GPUs with memory and compute capability, a tensor round-trip and AMP on
    each; CPU cores and INT8 instruction sets: AVX2, VNNI, AMX), teacher weights (given folders or the
    Hugging Face cache, HF_HUB_OFFLINE honoured; each must load its config) and ultralytics .pt files,
    the offline state (what distillkit turns off in ultralytics; whether importing the stack tries the
    network), disk and memory, and for each long command whether it can run here and the line that
    fixes it. Nothing is downloaded.

    Exit code 0 when every required part works (missing optional runtimes are fine), 1 when one is
    broken: a core package that does not import, a --dino-weights / --sam-weights folder that does not
    load, a visible GPU that cannot run a tensor.

    Examples:

        distillkit checks

        distillkit checks --dino-weights /models/grounding-dino-tiny --sam-weights /models/sam-vit-base

        HF_HUB_OFFLINE=1 distillkit checks --json | jq '.checks[] | select(.status != "ok")'
    """
    out = make_output(json_mode, quiet)
    report = run_checks(dino_weights, sam_weights, import_probe=not no_import_probe)
    if json_mode:
        out.emit_json(report.to_dict())
    else:
        render_checks(out, report)
    if not report.ok:
        # One line on stderr, whatever the mode: what is broken and how to fix it.
        first = report.failures[0]
        more = f" (+{len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
        fix = f"; {first.fix}" if first.fix else ""
        message = f"error: {first.section} {first.name}: {first.detail}{more}{fix}"
        sys.stderr.write(" ".join(message.split()) + "\n")  # plain: never wrapped or decorated
        sys.stderr.flush()
        raise typer.Exit(1)
