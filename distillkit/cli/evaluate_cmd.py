"""`distillkit evaluate`: COCO metrics of detections against ground truth."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from distillkit.cli.classifier_commands import evaluate_classifiers_command, is_classifier_input
from distillkit.cli.common import (
    JSON_OPTION,
    QUIET_OPTION,
    SLICE_FULL_OPTION,
    SLICE_MATCH_OPTION,
    SLICE_MERGE_OPTION,
    SLICE_OPTION,
    SLICE_OVERLAP_OPTION,
    TRUST_MODEL_FILE_OPTION,
    make_output,
    slice_spec,
)
from distillkit.cli.console import Output
from distillkit.cli.render import display_path
from distillkit.errors import UsageError
from distillkit.evaluation import EvaluationResult, evaluate_predictions
from distillkit.evaluation.coco_metrics import STAT_KEYS
from distillkit.inference.slicing import SliceSpec
from distillkit.paths import check_output_outside_inputs, image_folders
from distillkit.safe_load import trust_model_files


def evaluate(
    data: Path = typer.Option(..., "--data", "-d", help="Ground truth: a COCO annotation file."),
    predictions: Path | None = typer.Option(
        None, "--predictions", "-p", help="Detections in COCO results format (from `infer` or another tool)."
    ),
    models: list[Path] = typer.Option(
        [], "--model", "-m", help="A trained model (.pt) to run on the ground truth's images (repeatable)."
    ),
    teacher_dir: Path | None = typer.Option(
        None, "--teacher-dir", help="Experiment folder of train-teacher: score its Grounding DINO / SAM teachers."
    ),
    iou_type: str = typer.Option("auto", "--iou-type", help="bbox, segm, both, or auto (segm too when masks exist)."),
    min_score: float = typer.Option(0.0, "--min-score", min=0.0, help="Leave out detections scored below this."),
    images_dir: Path | None = typer.Option(None, "--images-dir", help="Folder of the ground truth's images (--model)."),
    imgsz: int | None = typer.Option(None, "--imgsz", min=32, help="Inference size for --model [default: training]."),
    device: str | None = typer.Option(None, "--device", help="Device for --model: cpu, 0, cuda:0, ..."),
    slice_tile: str | None = SLICE_OPTION,
    slice_overlap: float = SLICE_OVERLAP_OPTION,
    slice_full: bool = SLICE_FULL_OPTION,
    slice_merge: str = SLICE_MERGE_OPTION,
    slice_match: float = SLICE_MATCH_OPTION,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Folder for metrics.json, per_class.csv, PR-curve and confusion-matrix PNGs."
    ),
    tta: list[str] = typer.Option([], "--tta", help="Classifiers: test-time augmentation hflip/vflip/rot90 (repeat)."),
    top_k: list[int] = typer.Option([], "--top-k", min=1, help="Classifiers: top-k accuracies to report (repeat)."),
    threshold: float | None = typer.Option(
        None, "--threshold", min=0.0, max=1.0, help="Multi-label classifiers: one cut for all [default: per class]."
    ),
    trust_model_file: bool = TRUST_MODEL_FILE_OPTION,
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Score detections with COCO metrics, exactly as pycocotools computes them.

    Give either --predictions (a COCO results file) or one or more --model checkpoints, which are
    run on the ground truth's images first. Reports AP, AP50, AP75, APs/m/l and AR1/10/100,
    ARs/m/l per iou type (fractions; -1 where pycocotools gives -1, e.g. no small objects),
    per-class AP, precision/recall/F1 at the confidence that maximises F1, and for masks the mean
    IoU of matched pairs. Several models get a side-by-side table: size, parameters, median latency
    per image on this machine, AP/AP50 and ratios to the first model. Detections are matched to
    images by image_id, or by file_name when they have none; masks are scored with mask areas.

    Examples:

        distillkit evaluate --data data/test.json --predictions exp/run1/infer/predictions.json

        distillkit evaluate -d data/test.json -m exp/teacher/best.pt -m exp/run1/student/best.pt

        distillkit evaluate -d data/val.json -p detections.json --iou-type both --output exp/run1/eval --json

        distillkit evaluate --teacher-dir exp/run1 --data data/val.json   # teacher quality (DINO mAP, SAM mask AP)

    --slice WxH (with --model) runs sliced inference, as `infer --slice` does, so the AP gained by
    tiles on small objects is measured (compare APs and the per-class AP with and without it):

        distillkit evaluate -d data/test.json -m best.pt --slice 320x320 --slice-overlap 0.2 --slice-full

    Classifiers (train-classifier checkpoints or their ONNX exports): --data takes the training
    sources (class folders, CSV, COCO); reports accuracy, top-k, ECE with a reliability diagram,
    per-class P/R/F1, macro/micro F1 (multi-label: hamming loss, subset accuracy, per-class
    thresholds) and a confusion matrix; several --model are averaged as an ensemble. Multi-label
    decisions use the (first) model's per-class thresholds, tuned ones when stored; --threshold X sets one for all.

        distillkit evaluate -d data/test_tree -m exp/cls/best.pt --tta hflip --output exp/cls/eval
    """
    trust_model_files(trust_model_file)  # before anything reads a model file
    out = make_output(json_mode, quiet)
    slicing = slice_spec(slice_tile, slice_overlap, slice_full, slice_merge, slice_match)
    if slicing is not None and (not models or predictions is not None or teacher_dir is not None):
        raise UsageError("--slice runs the models given by --model", "give --model, not --predictions/--teacher-dir")
    if output is not None:  # before any work: evaluation files never land on or among the inputs
        annotations = [data] if data.suffix.lower() == ".json" else []
        check_output_outside_inputs(output, [data, predictions, *models, *image_folders(annotations, images_dir)])
    if teacher_dir is not None:
        _evaluate_teachers(out, data, teacher_dir, images_dir, device, output, json_mode)
        return
    if predictions is None and is_classifier_input(models):  # classifier checkpoints / ONNX: own metrics
        if slicing is not None:
            raise UsageError("--slice is for detection and segmentation models", "leave it out for classifiers")
        evaluate_classifiers_command(
            out, data, models, images_dir, device, output, json_mode, tta, top_k, threshold=threshold
        )
        return
    if threshold is not None:
        raise UsageError("--threshold is for multi-label classifiers", "use --min-score for detections")
    if (predictions is None) == (not models):
        raise UsageError("give either --predictions or --model (not both, not neither)")
    if models and (data.is_dir() or data.suffix.lower() == ".csv"):  # classifier data, detector model
        raise UsageError(
            f"{models[0]} is not a classifier checkpoint, and --data {data} is classification data",
            "give a detector its COCO JSON as --data, or a train-classifier best.pt as --model",
        )
    if models:
        _evaluate_models(out, data, models, iou_type, images_dir, imgsz, device, output, json_mode, slicing)
        return
    assert predictions is not None
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


def _evaluate_models(
    out: Output,
    data: Path,
    models: list[Path],
    iou_type: str,
    images_dir: Path | None,
    imgsz: int | None,
    device: str | None,
    output: Path | None,
    json_mode: bool,
    slicing: SliceSpec | None,
) -> None:
    from distillkit.evaluation.models import evaluate_models

    evaluations = evaluate_models(
        data,
        models,
        images_dir=images_dir,
        iou_types=iou_type,
        imgsz=imgsz,
        device=device,
        predictions_dir=output,
        progress=out.progress(),
        slicing=slicing,
    )
    reference = evaluations[0]
    rows = [e.summary(reference if index else None) for index, e in enumerate(evaluations)]
    document: dict[str, object] = {"models": rows, "results": [e.result.to_dict() for e in evaluations]}
    document["slicing"] = slicing.describe() if slicing is not None else None
    if output is not None:
        for evaluation in evaluations:
            folder = output if len(evaluations) == 1 else output / evaluation.model.stem
            write_evaluation_files(evaluation.result, folder)
        out.notice(f"evaluation written to {output}")
    if json_mode:
        out.emit_json(document)
        return
    for evaluation in evaluations:
        out.print(f"[bold]{evaluation.model}[/bold]")
        render_evaluation(out, evaluation.result)
    table = Table(title="models side by side (ratios to the first)", title_justify="left", show_edge=False)
    for column in ("model", "size MB", "params", "latency ms", "AP", "AP50"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(
            display_path(str(row["model"])),
            _cell(row, "size_mb", ".2f"),
            _cell(row, "parameters", ",d"),
            _cell(row, "median_latency_ms", ".1f"),
            _cell(row, "AP", ".3f"),
            _cell(row, "AP50", ".3f"),
        )
    out.print(table)


def _evaluate_teachers(
    out: Output,
    data: Path,
    teacher_dir: Path,
    images_dir: Path | None,
    device: str | None,
    output: Path | None,
    json_mode: bool,
) -> None:
    from distillkit.teachers.evaluation import evaluate_teachers

    evaluation = evaluate_teachers(teacher_dir, data, device=device, images_dir=images_dir, progress=out.progress())
    for name, result in evaluation.results.items():
        if output is not None:
            write_evaluation_files(result, output / name)
        if not json_mode:
            out.print(f"[bold]{name}[/bold] ({result.predictions})")
            render_evaluation(out, result)
    if output is not None:
        out.notice(f"evaluation written to {output}")
    if json_mode:
        out.emit_json(evaluation.to_dict())


def _cell(row: dict[str, object], key: str, fmt: str) -> str:
    text = format(row[key], fmt)
    ratio = row.get(f"{key}_ratio")
    return f"{text} ({ratio:.2f}x)" if isinstance(ratio, float) else text


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
