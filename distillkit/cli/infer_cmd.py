"""`distillkit infer`: predictions (COCO results JSON) and overlays from a trained student."""

from __future__ import annotations

from pathlib import Path

import typer

from distillkit.cli.classify_render import infer_classifier_command, is_classifier_input
from distillkit.cli.common import JSON_OPTION, QUIET_OPTION, TRUST_MODEL_FILE_OPTION, make_output
from distillkit.errors import UsageError
from distillkit.inference import PredictionRun, collect_images, load_model, predict_images, write_predictions
from distillkit.paths import check_output_apart_from_files, check_output_outside_inputs
from distillkit.safe_load import trust_model_files


def infer(
    sources: list[str] = typer.Argument(..., help="Image files, folders or glob patterns.", show_default=False),
    model: Path = typer.Option(..., "--model", "-m", help="A student checkpoint (.pt) from train-student."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for predictions.json (and vis/ overlays)."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Keep detections scored at least this."),
    iou: float = typer.Option(0.7, "--iou", min=0.0, max=1.0, help="NMS IoU threshold."),
    max_det: int = typer.Option(300, "--max-det", min=1, help="At most this many detections per image."),
    imgsz: int | None = typer.Option(None, "--imgsz", min=32, help="Input size [default: the training size]."),
    batch: int = typer.Option(1, "--batch", min=1, help="Images per forward pass."),
    device: str | None = typer.Option(None, "--device", help="cpu, 0, cuda:0, ... [default: auto]."),
    save_vis: bool = typer.Option(False, "--save-vis", help="Also write overlays to OUTPUT/vis/."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders of folder sources."),
    gradcam: Path | None = typer.Option(None, "--gradcam", help="Classifiers: Grad-CAM++ overlays go here."),
    tta: list[str] = typer.Option([], "--tta", help="Classifiers: test-time augmentation hflip/vflip/rot90 (repeat)."),
    threshold: float | None = typer.Option(
        None, "--threshold", min=0.0, max=1.0, help="Multi-label classifiers: one cut for all [default: per class]."
    ),
    trust_model_file: bool = TRUST_MODEL_FILE_OPTION,
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Predict on images with a trained student — no prompt of any kind.

    Writes OUTPUT/predictions.json: a JSON array in COCO results format, one entry per detection
    with file_name, category_id (the training data's ids), category_name, bbox (x, y, w, h),
    score and, for segmentation models, an RLE mask. Entries are written as they come, so a
    100k-image folder never sits in memory. `distillkit evaluate --predictions` matches them to
    ground truth by file name. An image that cannot be read (truncated, not an image) is skipped
    with a warning naming it and counted (`skipped` in --json); the exit code stays 0 unless no
    image could be read.

    Examples:

        distillkit infer --model exp/run1/student/best.pt data/new_images/ --output exp/run1/infer

        distillkit infer -m best.pt "line3/*.png" -o out --conf 0.4 --save-vis

        distillkit infer -m best.pt frames/ -o out --json | jq .detections

    Classifiers (train-classifier checkpoints or their ONNX exports) write per-image classes and
    probabilities to OUTPUT/predictions.json; --gradcam DIR adds Grad-CAM++ overlays. Multi-label
    models decide with their per-class thresholds (tuned ones when stored); --threshold X sets one for all.

        distillkit infer -m exp/cls/best.pt new_images/ -o exp/cls/infer --gradcam exp/cls/infer/cam
    """
    trust_model_files(trust_model_file)  # before anything reads a model file
    out = make_output(json_mode, quiet)
    images = collect_images(sources, recursive=recursive)
    _check_outputs(sources, images, model, output, save_vis, gradcam)
    if is_classifier_input([model]):  # classifier: per-image classes and probabilities instead of boxes
        infer_classifier_command(
            out, images, model, output, batch, device, json_mode, tta, gradcam=gradcam, threshold=threshold
        )
        return
    if threshold is not None:
        raise UsageError("--threshold is for multi-label classifiers", "use --conf for detections")
    loaded = load_model(model)
    run = PredictionRun()
    target = output / "predictions.json"
    predictions = predict_images(
        loaded,
        images,
        run=run,
        conf=conf,
        iou=iou,
        max_det=max_det,
        imgsz=imgsz,
        batch=batch,
        device=device,
        save_vis=output / "vis" if save_vis else None,
        progress=out.progress(),
        skip_unreadable=True,
    )
    write_predictions(predictions, target)
    for skipped in run.skipped:
        out.warning(f"skipped: {skipped['reason']}")
    summary = {
        "model": str(model),
        "task": loaded.task,
        "images": run.images,
        "detections": run.detections,
        "skipped": len(run.skipped),
        "skipped_images": run.skipped,
        "predictions": str(target),
        "median_latency_ms": round(run.median_latency_ms, 3),
        "vis": str(output / "vis") if save_vis else None,
    }
    if json_mode:
        out.emit_json(summary)
    else:
        skipped = f"; {len(run.skipped)} unreadable images skipped" if run.skipped else ""
        out.print(
            f"{run.detections} detections on {run.images} images → {target} "
            f"(median {run.median_latency_ms:.1f} ms per image{skipped})"
        )


def _check_outputs(
    sources: list[str], images: list[Path], model: Path, output: Path, save_vis: bool, gradcam: Path | None
) -> None:
    """Before the model loads: no output inside a source folder, none among the source images.

    Otherwise a second run over the same sources would read predictions and overlays as images.
    Image files given one by one (or by a glob) only forbid their own folder, not its sub-folders.
    """
    inputs = [model, *(path for path in (Path(s).expanduser() for s in sources) if path.exists())]
    written = [(output, "--output")]
    if save_vis:
        written.append((output / "vis", "--save-vis folder"))
    if gradcam is not None:
        written.append((gradcam, "--gradcam"))
    for folder, flag in written:
        check_output_outside_inputs(folder, inputs, flag)
        check_output_apart_from_files(folder, images, flag)
