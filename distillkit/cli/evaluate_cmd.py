"""`distillkit evaluate`: COCO metrics of detections against ground truth."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from distillkit.cli.common import JSON_OPTION, QUIET_OPTION, make_output
from distillkit.cli.console import Output
from distillkit.evaluation import EvaluationResult, evaluate_predictions
from distillkit.evaluation.coco_metrics import STAT_KEYS


def evaluate(
    data: Path = typer.Option(..., "--data", "-d", help="Ground truth: a COCO annotation file."),
    predictions: Path = typer.Option(
        ..., "--predictions", "-p", help="Detections in COCO results format (from `infer` or another tool)."
    ),
    iou_type: str = typer.Option("auto", "--iou-type", help="bbox, segm, both, or auto (segm too when masks exist)."),
    min_score: float = typer.Option(0.0, "--min-score", min=0.0, help="Leave out detections scored below this."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Folder for metrics.json, per_class.csv, PR-curve and confusion-matrix PNGs."
    ),
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Score detections with COCO metrics, exactly as pycocotools computes them.

    Reports AP, AP50, AP75, APs/m/l and AR1/10/100, ARs/m/l per iou type (fractions; -1 where
    pycocotools gives -1, e.g. no small objects), per-class AP, precision/recall/F1 at the
    confidence that maximises F1, and for masks the mean IoU of matched pairs. Detections are
    matched to images by image_id, or by file_name when they have none. Masks are scored with mask
    areas (a detection's box is not used for segm), as COCO intends.

    Examples:

        distillkit evaluate --data data/test.json --predictions exp/run1/predictions.json

        distillkit evaluate -d data/val.json -p detections.json --iou-type both --output exp/run1/eval

        distillkit evaluate -d data/val.json -p detections.json --json | jq .bbox.AP
    """
    out = make_output(json_mode, quiet)
    result = evaluate_predictions(data, predictions, iou_types=iou_type, min_score=min_score, progress=out.progress())
    document = result.to_dict()
    for warning in result.warnings:
        out.warning(warning)
    if output is not None:
        written = write_evaluation_files(result, output)
        document["outputs"] = {name: str(path) for name, path in written.items()}
        out.notice(f"evaluation written to {output}")
    if json_mode:
        out.emit_json(document)
    else:
        render_evaluation(out, result)


def write_evaluation_files(result: EvaluationResult, output: Path) -> dict[str, Path]:
    from distillkit.evaluation.report import write_evaluation  # matplotlib is imported only when writing

    return write_evaluation(result, output)


def render_evaluation(out: Output, result: EvaluationResult) -> None:
    summary = Table(
        title=f"{result.num_detections} detections on {result.num_images} images", title_justify="left", show_edge=False
    )
    summary.add_column("metric")
    for iou_type in result.metrics:
        summary.add_column(iou_type, justify="right")
    rows = [*STAT_KEYS, "precision", "recall", "f1", "confidence"]
    for key in rows:
        cells = []
        for metrics in result.metrics.values():
            value = metrics.stats.get(key) if key in metrics.stats else getattr(metrics, key)
            cells.append("-" if value is None or value < 0 else f"{value:.3f}")
        summary.add_row(key, *cells)
    if "segm" in result.metrics and result.metrics["segm"].mean_mask_iou is not None:
        summary.add_row(
            "mean mask IoU",
            *["" if t != "segm" else f"{result.metrics['segm'].mean_mask_iou:.3f}" for t in result.metrics],
        )
    out.print(summary)
    for iou_type, metrics in result.metrics.items():
        table = Table(title=f"per class ({iou_type})", title_justify="left", show_edge=False)
        for column in ("class", "gt", "det", "AP", "AP50", "P", "R", "F1"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for c in metrics.per_class:
            if c.gt_instances == 0 and c.detections == 0:
                continue
            table.add_row(
                c.name,
                str(c.gt_instances),
                str(c.detections),
                _fmt(c.AP),
                _fmt(c.AP50),
                f"{c.precision:.3f}",
                f"{c.recall:.3f}",
                f"{c.f1:.3f}",
            )
        out.print(table)


def _fmt(value: float) -> str:
    return "-" if value < 0 else f"{value:.3f}"
