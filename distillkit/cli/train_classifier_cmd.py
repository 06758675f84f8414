"""`distillkit train-classifier`: a timm image classifier (multi-class or multi-label) from labelled images."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.table import Table

from distillkit.cli.common import (
    JSON_OPTION,
    QUIET_OPTION,
    TRUST_MODEL_FILE_OPTION,
    command_overrides,
    make_output,
)
from distillkit.errors import UsageError
from distillkit.safe_load import trust_model_files

_SIZE = re.compile(r"^\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?$")


def _imgsz_override(text: str) -> int | list[int]:
    """``224`` → ``224``; ``256x1600`` / ``256,1600`` (height x width) → ``[256, 1600]``."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"--imgsz {text!r} is not a size", "give pixels (224) or HEIGHTxWIDTH (256x1600)")
    height, width = match.group(1), match.group(2)
    return int(height) if width is None else [int(height), int(width)]


def train_classifier(
    data: Path | None = typer.Option(
        None, "--data", "-d", help="Training labels: a class-per-folder tree, a CSV or a COCO JSON."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Experiment folder."),
    val: Path | None = typer.Option(
        None, "--val", "-v", help="Validation labels (same forms) [default: a stratified split of --data]."
    ),
    model: str | None = typer.Option(
        None, "--model", help="timm model name or a classifier checkpoint [default: classifier.model]."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Training epochs [default: training_dynamics]."),
    batch: int | None = typer.Option(None, "--batch", min=1, help="Images per batch [default: training_dynamics]."),
    imgsz: str | None = typer.Option(
        None, "--imgsz", help="Input size: pixels (224) or HEIGHTxWIDTH (256x1600) [default: classifier.imgsz]."
    ),
    full_resolution: bool = typer.Option(
        False, "--full-resolution", help="Train at the images' own size, no resizing (all images must match)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, 0, cuda:0, ... [default: auto]."),
    teacher: Path | None = typer.Option(
        None, "--teacher", help="A classifier checkpoint to distil from (KD weights in classifier.kd_*)."
    ),
    images_dir: Path | None = typer.Option(
        None, "--images-dir", help="Folder of the images named in a CSV / COCO file [default: next to it]."
    ),
    val_fraction: float = typer.Option(
        0.2, "--val-fraction", min=0.01, max=0.99, help="Share of --data held out when --val is not given."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --output."),
    overrides: list[str] = typer.Option([], "--set", help="Config override section.key=value (repeatable)."),
    list_models: bool = typer.Option(
        False, "--list-models", help="List the model names that can be built (filter with --model 'pattern*')."
    ),
    trust_model_file: bool = TRUST_MODEL_FILE_OPTION,
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train an image classifier: any timm backbone, optional CBAM, multi-class or multi-label.

    Data: a folder with one sub-folder per class; a CSV of image paths with a label column (several
    rows or labels per image allowed, e.g. Severstal's ImageId,ClassId) or one 0/1 column per
    class; or a COCO JSON (an image's labels are the categories present). Multi-label is detected
    from the data and switches to a sigmoid loss (bce, or focal). Without --val a seeded, stratified
    split is made with the splitter of `distillkit split`. Pretrained weights are read only from
    disk (classifier.weights, or the Hugging Face / torch hub cache); nothing is downloaded.

    OUTPUT receives best.pt and last.pt (self-contained: classes, input size, normalisation and a
    calibrated temperature inside), results.json (config, best metrics, per-epoch history),
    metrics.csv, training_curves.png, tensorboard/ and checkpoints/ (full state for --resume).

    Examples:

        distillkit train-classifier --data data/digits --output exp/digits --model resnet18 --epochs 30

        distillkit train-classifier -d train.csv -o exp/steel --imgsz 256x1600 --set classifier.loss=focal

        distillkit train-classifier -d data/train -v data/val -o exp/small --model resnet10t --teacher exp/big/best.pt

        distillkit train-classifier --list-models --model 'efficientnet*'
    """
    trust_model_files(trust_model_file)  # before anything reads a model file
    out = make_output(json_mode, quiet)
    if list_models:
        from distillkit.classify.models import list_models as names

        found = names(model or "*")
        if json_mode:
            out.emit_json({"models": found})
        elif not quiet:
            for name in found:
                typer.echo(name)
        return
    if data is None or output is None:
        raise UsageError("--data and --output are required", "e.g. distillkit train-classifier -d data/ -o exp/cls")
    settings = command_overrides(
        overrides,
        {
            "classifier.model": model,
            "training_dynamics.epochs": epochs,
            "training_dynamics.batch_size": batch,
            "classifier.imgsz": _imgsz_override(imgsz) if imgsz is not None else None,
            "training_dynamics.device": device,
            "classifier.keep_full_resolution": True if full_resolution else None,
        },
    )
    from distillkit.classify.train import train_classifier as run_training

    result = run_training(
        data,
        output,
        val=val,
        overrides=settings,
        images_dir=images_dir,
        val_fraction=val_fraction,
        teacher=teacher,
        resume=resume,
        progress=out.progress(),
    )
    for notice in result.notices:
        out.notice(notice, style="yellow")
    if json_mode:
        out.emit_json(result.to_dict())
        return
    table = Table(
        title=(
            f"{result.model} on {result.train_images} images ({len(result.class_names)} classes"
            f"{', multi-label' if result.multi_label else ''}), {result.epochs_run} epochs, "
            f"best epoch {result.best_epoch}"
        ),
        title_justify="left",
        show_edge=False,
    )
    table.add_column(f"validation ({result.val_images} images)")
    table.add_column("value", justify="right")
    metrics = result.metrics
    table.add_row("accuracy", f"{metrics['accuracy']:.4f}")
    for k, value in metrics.get("top_k", {}).items():
        if k != "1":
            table.add_row(f"top-{k}", f"{value:.4f}")
    table.add_row("macro F1", f"{metrics['macro_f1']:.4f}")
    if result.ece_before is not None:
        table.add_row("ECE before calibration", f"{result.ece_before:.4f}")
    table.add_row(f"ECE (temperature {result.temperature:.3f})", f"{result.ece_after:.4f}")
    if result.thresholds:  # classifier.tune_thresholds on multi-label data
        table.add_row("tuned thresholds", ", ".join(f"{name} {cut:.3f}" for name, cut in result.thresholds.items()))
    out.print(table)
    out.print(f"best weights: {result.best}")
