"""`distillkit split`: stratified, seeded train/val/test files from one COCO file."""

from __future__ import annotations

from pathlib import Path

import typer

from distillkit.cli.common import (
    DROP_INVALID_OPTION,
    JSON_OPTION,
    NO_STRATIFY_OPTION,
    OUTPUT_DIR_OPTION,
    QUIET_OPTION,
    SEED_OPTION,
    make_output,
    split_and_write,
    split_summary_with_paths,
)
from distillkit.cli.render import render_split_summary
from distillkit.data.split import parse_ratios
from distillkit.data.validate import load_valid_dataset
from distillkit.paths import check_output_outside_inputs, image_folders


def split(
    data: Path = typer.Argument(..., help="COCO annotation file (JSON).", show_default=False),
    ratios: str = typer.Option(
        "0.7,0.15,0.15", "--ratios", "-r", help="0.7,0.15,0.15 (train/val/test), 0.8,0.2, or train:0.8,val:0.2."
    ),
    seed: int = SEED_OPTION,
    output_dir: Path | None = OUTPUT_DIR_OPTION,
    no_stratify: bool = NO_STRATIFY_OPTION,
    min_per_class: int = typer.Option(
        1, "--min-per-class", min=0, help="Warn when a class has fewer images in a split."
    ),
    drop_invalid: bool = DROP_INVALID_OPTION,
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Split a COCO file into train/val(/test) files, stratified by class, reproducible by seed.

    Images are assigned by iterative multi-label stratification over which classes each image
    contains, so rare classes land in every split in proportion; images without annotations are
    spread in proportion too. The data goes through the same checks and repairs as
    `distillkit validate` (which it must pass), and the same seed gives the same files as
    `distillkit validate --split`. Each output is a complete COCO file: its images, their
    annotations, all categories, info and licenses.

    Examples:

        distillkit split data/annotations.json

        distillkit split data/annotations.json --ratios 0.8,0.2 --seed 7 --output-dir data/splits

        distillkit split data/annotations.json -r train:0.6,val:0.2,test:0.2 --json | jq .splits
    """
    out = make_output(json_mode, quiet)
    parsed = parse_ratios(ratios)
    if output_dir is not None:  # before any work: split files never land among the images
        check_output_outside_inputs(output_dir, [data, *image_folders([data])], "--output-dir")
    result = load_valid_dataset(data, drop_invalid=drop_invalid, progress=out.progress())
    assert result.dataset is not None
    split_result, paths = split_and_write(
        out, result.dataset, data, parsed, seed, not no_stratify, min_per_class, output_dir
    )
    summary = split_summary_with_paths(split_result, paths)
    if json_mode:
        out.emit_json(summary)
    else:
        render_split_summary(out, summary)
