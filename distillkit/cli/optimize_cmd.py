"""`distillkit optimize`: ONNX / INT8 / FP16 / TensorRT / TFLite artefacts of a model, measured and guarded."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from distillkit.cli.common import JSON_OPTION, TRUST_MODEL_FILE_OPTION, make_output
from distillkit.cli.console import Output
from distillkit.cli.render import display_path
from distillkit.export.optimize import OptimizeOptions, OptimizeResult, optimize_model
from distillkit.export.quantize import DEFAULT_RECIPE
from distillkit.safe_load import trust_model_files


def optimize(
    model: Path = typer.Option(..., "--model", "-m", help="A .pt from train-student or train-classifier."),
    formats: list[str] = typer.Option(
        ["onnx"],
        "--format",
        "-f",
        help="onnx, openvino (needs distillkit[openvino]), tflite (needs distillkit[tflite]), engine (TensorRT); "
        "repeatable.",
    ),
    quantize: list[str] = typer.Option(
        ["int8"], "--quantize", "-q", help="int8 (static, calibrated), int8-dynamic, fp16, none (repeatable)."
    ),
    int8_recipes: list[str] = typer.Option(
        [DEFAULT_RECIPE],
        "--int8-recipe",
        help="Static INT8 recipe: fast (default), conv, full; more than one writes model_int8_<recipe>.onnx too.",
    ),
    calib_data: Path | None = typer.Option(None, "--calib-data", help="COCO file whose images calibrate INT8."),
    calib_dir: Path | None = typer.Option(None, "--calib-dir", help="Folder of calibration images."),
    calib_images: int = typer.Option(100, "--calib-images", min=1, help="At most this many calibration images."),
    val_data: Path | None = typer.Option(
        None, "--val-data", help="COCO file to measure mAP50-95 (or accuracy) of every artefact and guard it."
    ),
    images_dir: Path | None = typer.Option(
        None, "--images-dir", help="Folder of the images of --calib-data and --val-data."
    ),
    max_drop: float = typer.Option(2.0, "--max-drop", min=0.0, help="Largest accepted drop in points."),
    force: bool = typer.Option(False, "--force", help="Exit 0 even when an artefact fails the accuracy guard."),
    imgsz: int | None = typer.Option(None, "--imgsz", min=32, help="Input size [default: the training size]."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch (and image size) in the ONNX graph."),
    prune: float | None = typer.Option(None, "--prune", help="Structured channel pruning ratio, e.g. 0.2."),
    prune_finetune_epochs: int = typer.Option(0, "--prune-finetune-epochs", min=0, help="Fine-tune after pruning."),
    prune_data: Path | None = typer.Option(None, "--prune-data", help="Train COCO file for the fine-tuning."),
    qat_epochs: int = typer.Option(
        0,
        "--qat-epochs",
        min=0,
        help="When a static INT8 file fails the accuracy guard: quantization-aware fine-tuning for N epochs.",
    ),
    qat_data: Path | None = typer.Option(
        None, "--qat-data", help="Train COCO file for --qat-epochs (images found like --images-dir's)."
    ),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads for latency [default: all]."),
    latency_rounds: int = typer.Option(
        5, "--latency-rounds", min=1, help="Interleaved timing rounds (6 runs of each artefact per round)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output folder [default: <model dir>/optimized]."),
    trust_model_file: bool = TRUST_MODEL_FILE_OPTION,
    json_mode: bool = JSON_OPTION,
    # -q is --quantize here (the examples use it), so --quiet has no short form in this command.
    quiet: bool = typer.Option(False, "--quiet", help="Print nothing but errors."),
) -> None:
    """Export a trained model to ONNX (prompt-free: one input, `images`), quantize it, measure everything.

    Writes model.onnx (verified single input, onnx.checker clean, onnxslim-simplified, class names,
    category ids, task, imgsz and preprocessing in its metadata), model_int8.onnx (static QDQ INT8
    calibrated on real images), model_fp16.onnx, model_int8_dynamic.onnx; with -f openvino the
    OpenVINO folders model_openvino_model/ (fp32), model_fp16_openvino_model/ and
    model_int8_openvino_model/ (NNCF INT8 on the same calibration images); with -f tflite
    model_fp16.tflite / model_int8.tflite (LiteRT, detectors, segmenters and classifiers; static INT8 on the
    same calibration images); TensorRT .engine files where tensorrt and a CUDA GPU exist;
    class_mapping.yaml and report.json. The report gives, per file: size, median and p90 latency
    per image on this machine (batch 1, --threads, warm-up), max abs difference of outputs against
    the PyTorch model on real images, mAP50-95 (accuracy for classifiers) with --val-data, and
    ratios to the source. With --val-data, an artefact losing more than --max-drop points is marked
    failed and the command exits 1 (unless --force).
    With --qat-epochs N --qat-data train.json, a static INT8 file that fails gets a short
    quantization-aware fine-tune instead: model_int8_qat.onnx, measured like the others; when it
    passes, the failed row reads "failed (replaced by qat)" and the command exits 0.
    `distillkit infer` and `distillkit evaluate` take the .onnx, OpenVINO and .tflite files as they take the .pt.

    Examples:

        distillkit optimize -m exp/run1/student/best.pt --calib-data data/train.json --val-data data/val.json

        distillkit optimize -m best.pt -q int8 -q fp16 --calib-dir images/ --calib-images 200 --imgsz 320

        distillkit optimize -m best.pt -f onnx -f openvino -q int8 --calib-data train.json --val-data val.json

        distillkit optimize -m best.pt -f onnx -f engine -q fp16 --calib-dir images/ --json

        distillkit optimize -m best.pt -f onnx -f tflite -q int8 -q fp16 --calib-data data/val.json

        distillkit optimize -m best.pt --calib-data train.json --val-data val.json --qat-epochs 3 --qat-data train.json
    """
    trust_model_files(trust_model_file)  # before anything reads a model file
    out = make_output(json_mode, quiet)
    options = OptimizeOptions(
        formats=formats,
        quantize=quantize,
        int8_recipes=int8_recipes,
        calib_data=calib_data,
        calib_dir=calib_dir,
        calib_images=calib_images,
        val_data=val_data,
        images_dir=images_dir,
        max_drop=max_drop,
        force=force,
        imgsz=imgsz,
        dynamic=dynamic,
        prune=prune,
        prune_finetune_epochs=prune_finetune_epochs,
        prune_data=prune_data,
        qat_epochs=qat_epochs,
        qat_data=qat_data,
        output=output,
        threads=threads,
        latency_rounds=latency_rounds,
    )
    result = optimize_model(model, options, progress=out.progress())
    for notice in result.notices:
        out.notice(notice)
    if json_mode:
        out.emit_json(result.to_dict())
    else:
        render_optimize(out, result)
    for artefact in result.failed:
        out.warning(f"{artefact.name} ({artefact.path.name}) failed the accuracy guard: {'; '.join(artefact.notes)}")
    if not result.passed:
        raise typer.Exit(1)


def render_optimize(out: Output, result: OptimizeResult) -> None:
    rows = result.to_dict()["artefacts"]
    table = Table(
        title=f"{result.task} model, {result.imgsz} px; latency: batch 1, {result.threads} threads (ratios to PyTorch)",
        title_justify="left",
        show_edge=False,
    )
    for column in ("artefact", "file", "size MB", "median ms", "p90 ms", "parity", "metric", "status"):
        table.add_column(column, justify="left" if column in ("artefact", "file", "status") else "right")
    for row in rows:
        latency = row["latency"] or {}
        parity = row["parity_max_abs_diff"]
        parity_text = ", ".join(f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}" for k, v in parity.items())
        metric = "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        if "accuracy_drop_points" in row:
            metric += f" ({-row['accuracy_drop_points']:+.2f})"
        table.add_row(
            row["name"],
            display_path(row["file"]),
            _with_ratio(row["size_mb"], row.get("size_ratio"), ".2f"),
            _with_ratio(latency.get("median_ms"), row.get("latency_ratio"), ".1f"),
            "-" if latency.get("p90_ms") is None else f"{latency['p90_ms']:.1f}",
            parity_text or "-",
            metric,
            row["status"],
        )
    out.print(table)
    metric_name = next((row["metric"] for row in rows if row["metric"]), None)
    if metric_name:
        out.print(f"metric: {metric_name} on the validation data; parity: max abs difference of outputs")
    out.print(f"report: {display_path(str(result.report_path))}")


def _with_ratio(value: float | None, ratio: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    text = format(value, fmt)
    return f"{text} ({ratio:.2f}x)" if ratio is not None else text
