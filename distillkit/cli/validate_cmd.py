"""`distillkit validate`: check a COCO file, repair it, report its classes, optionally split it."""

from __future__ import annotations

from pathlib import Path

import typer

from distillkit.augmentation.preview import augmentation_config, render_augmentation_preview
from distillkit.cli.common import (
    DROP_INVALID_OPTION,
    JSON_OPTION,
    NO_STRATIFY_OPTION,
    OUTPUT_DIR_OPTION,
    QUIET_OPTION,
    SEED_OPTION,
    make_output,
    refuse_overwriting_input,
    split_and_write,
    split_summary_with_paths,
)
from distillkit.cli.render import render_split_summary, render_validation
from distillkit.config import parse_overrides
from distillkit.data.images import default_image_roots
from distillkit.data.split import parse_ratios
from distillkit.data.validate import validate_dataset
from distillkit.errors import UsageError
from distillkit.io import atomic_write_json
from distillkit.paths import check_output_outside_inputs, image_folders


def validate(
    data: Path = typer.Argument(..., help="COCO annotation file (JSON).", show_default=False),
    images_dir: Path | None = typer.Option(
        None, "--images-dir", help="Folder holding the images [default: the JSON's folder and its images/]."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the repaired dataset here (only when it is valid)."
    ),
    split: str | None = typer.Option(
        None, "--split", help="Also split: 0.7,0.15,0.15 (train/val/test), 0.8,0.2, or train:0.7,val:0.3."
    ),
    seed: int = SEED_OPTION,
    output_dir: Path | None = OUTPUT_DIR_OPTION,
    no_stratify: bool = NO_STRATIFY_OPTION,
    min_per_class: int = typer.Option(
        1, "--min-per-class", min=0, help="Warn about classes with fewer annotations (and split images)."
    ),
    drop_invalid: bool = DROP_INVALID_OPTION,
    skip_images: bool = typer.Option(False, "--skip-images", help="Do not look for the image files."),
    preview_augmentation: Path | None = typer.Option(
        None, "--preview-augmentation", help="Also draw images before/after the augmentation pipeline into this PNG."
    ),
    preview_count: int = typer.Option(4, "--preview-count", min=1, help="Images in the augmentation preview."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Augmentation setting for the preview: augmentation.KEY=VALUE (repeatable)."
    ),
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Check a COCO dataset, repair what can be repaired, and report what it contains.

    Reads what CVAT, Label Studio, Roboflow, labelme2coco, COCO-Annotator and panopticapi write
    (polygons, RLE with list or string counts, crowd regions, string numbers). Missing bbox/area
    are computed from the masks with pycocotools; inconsistent ones are flagged and replaced in the
    repaired file. The input file is never modified.

    Exit code 0 when valid (warnings allowed), 1 when errors were found (then nothing is written),
    2 for a usage mistake.

    Examples:

        distillkit validate data/annotations.json

        distillkit validate data/annotations.json --split 0.7,0.15,0.15 --seed 0

        distillkit validate export.json --output clean.json --images-dir data/images --json

        distillkit validate data/annotations.json --preview-augmentation preview.png
        --set "augmentation.characteristics=[changes_shape,low_contrast]" --set augmentation.intensity=high
    """
    out = make_output(json_mode, quiet)
    ratios = parse_ratios(split) if split is not None else None  # usage errors before any work
    if images_dir is not None and not images_dir.is_dir():  # else every image is "not found" and the data passes
        what = "is not a folder" if images_dir.exists() else "does not exist"
        raise UsageError(f"--images-dir {images_dir} {what}", "give the folder that holds the images")
    if output is not None:
        refuse_overwriting_input(output, data, "--output")
    inputs = [data, *image_folders([data], images_dir)]  # nothing written onto the input or among its images
    for written, flag in ((output, "--output"), (preview_augmentation, "--preview-augmentation")):
        if written is not None:
            check_output_outside_inputs(written, inputs, flag)
    if ratios is not None and output_dir is not None:
        check_output_outside_inputs(output_dir, inputs, "--output-dir")
    augmentation = augmentation_config(parse_overrides(overrides)) if preview_augmentation is not None else None
    if augmentation is None and overrides:
        raise UsageError("--set only configures --preview-augmentation", "add --preview-augmentation PREVIEW.png")
    if augmentation is not None and skip_images:
        raise UsageError("--preview-augmentation needs the images", "drop --skip-images")

    result = validate_dataset(
        data,
        images_dir=images_dir,
        min_per_class=min_per_class,
        check_images=not skip_images,
        drop_invalid=drop_invalid,
        progress=out.progress(),
    )
    report = result.report
    document = report.to_dict()
    render_validation(out, report)
    if out.quiet and not json_mode:
        for issue in report.errors:  # --quiet still says why the exit code is 1
            out.stderr.print(f"error: [{issue.code}] {issue.message}", markup=False, highlight=False)

    if report.valid and result.dataset is not None:
        if ratios is not None:  # split first: a dataset too small to split writes nothing at all
            split_result, paths = split_and_write(
                out, result.dataset, data, ratios, seed, not no_stratify, min_per_class, output_dir
            )
            summary = split_summary_with_paths(split_result, paths)
            document["splits"] = summary
            render_split_summary(out, summary)
        if output is not None:
            atomic_write_json(output, result.dataset, indent=False)
            document["output"] = str(output)
            out.notice(f"repaired dataset written to {output}")
        if preview_augmentation is not None and augmentation is not None:
            preview = render_augmentation_preview(
                result.dataset,
                default_image_roots(data, images_dir),
                preview_augmentation,
                augmentation,
                count=preview_count,
                progress=out.progress(),
            )
            document["augmentation_preview"] = preview.to_dict()
            if preview.plan.is_empty:
                out.warning("the augmentation settings ask for nothing: set augmentation.characteristics/environment")
            out.notice(f"augmentation preview written to {preview_augmentation}")
    elif output is not None or ratios is not None or preview_augmentation is not None:
        out.notice("the dataset has errors: no repaired, split or preview file was written", style="red")

    if json_mode:
        out.emit_json(document)
    if not report.valid:
        raise typer.Exit(1)
