"""`distillkit infer`: predictions (COCO results JSON) and overlays from a trained student, on images and video."""

from __future__ import annotations

from pathlib import Path

import typer

from distillkit.cli.classifier_commands import infer_classifier_command, is_classifier_input
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
from distillkit.errors import UsageError
from distillkit.inference import (
    PredictionRun,
    collect_images,
    collect_sources,
    graceful_interrupt,
    load_model,
    predict_sources,
    write_predictions,
)
from distillkit.paths import check_output_apart_from_files, check_output_outside_inputs
from distillkit.safe_load import trust_model_files


def infer(
    sources: list[str] = typer.Argument(
        ...,
        help="Image or video files, folders, glob patterns, stream URLs (rtsp://, http://...) or camera numbers (0).",
        show_default=False,
    ),
    model: Path = typer.Option(..., "--model", "-m", help="A student checkpoint (.pt) from train-student."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for predictions.json (and vis/ overlays)."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Keep detections scored at least this."),
    iou: float = typer.Option(0.7, "--iou", min=0.0, max=1.0, help="NMS IoU threshold."),
    max_det: int = typer.Option(300, "--max-det", min=1, help="At most this many detections per image."),
    imgsz: int | None = typer.Option(None, "--imgsz", min=32, help="Input size [default: the training size]."),
    batch: int = typer.Option(1, "--batch", min=1, help="Images per forward pass."),
    device: str | None = typer.Option(None, "--device", help="cpu, 0, cuda:0, ... [default: auto]."),
    save_vis: bool = typer.Option(
        False, "--save-vis", help="Also write overlays to OUTPUT/vis/ (images: .jpg, videos and streams: .mp4)."
    ),
    vid_stride: int = typer.Option(1, "--vid-stride", min=1, help="Videos, streams: predict every N-th frame."),
    max_frames: int | None = typer.Option(
        None, "--max-frames", min=1, help="Videos, streams: stop after this many predicted frames (each source)."
    ),
    slice_tile: str | None = SLICE_OPTION,
    slice_overlap: float = SLICE_OVERLAP_OPTION,
    slice_full: bool = SLICE_FULL_OPTION,
    slice_merge: str = SLICE_MERGE_OPTION,
    slice_match: float = SLICE_MATCH_OPTION,
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
    """Predict on images, videos, streams and cameras with a trained student — no prompt of any kind.

    Writes OUTPUT/predictions.json: a JSON array in COCO results format, one entry per detection
    with file_name, category_id (the training data's ids), category_name, bbox (x, y, w, h),
    score and, for segmentation models, an RLE mask. Entries are written as they come, so a
    100k-image folder or a day of camera frames never sits in memory. `distillkit evaluate
    --predictions` matches them to ground truth by file name. An image that cannot be read
    (truncated, not an image), a video frame that cannot be decoded or a video file that cannot be
    opened is skipped with a warning naming it and counted (`skipped` in --json); the exit code
    stays 0 unless no image could be read.

    Videos (.mp4 .avi .mov .mkv ...), stream URLs (rtsp://, http(s)://...) and camera numbers
    (0 is the first camera) are read frame by frame: their entries add frame_index and
    timestamp_s (seconds), and file_name is the video, URL or camera number. --vid-stride N
    predicts every N-th frame, --max-frames stops early; with --save-vis an annotated mp4 per
    source goes to OUTPUT/vis/. Ctrl-C stops after the current frame or image and keeps
    everything written so far valid (predictions.json complete, the video playable; `interrupted`
    in --json); a second Ctrl-C stops at once and keeps nothing.

    --slice 320x320 predicts on overlapping tiles (--slice-overlap) mapped back and merged (SAHI's
    method): small objects in large images stay visible. --slice-full adds the whole-image pass;
    --slice-merge nmm fuses boxes and masks cut by tile borders instead of keeping the best one.

    Examples:

        distillkit infer --model exp/run1/student/best.pt data/new_images/ --output exp/run1/infer

        distillkit infer -m best.pt "line3/*.png" -o out --conf 0.4 --save-vis

        distillkit infer -m best.pt frames/ -o out --json | jq .detections

        distillkit infer -m best.pt line3.mp4 -o out --vid-stride 5 --save-vis

        distillkit infer -m best.pt rtsp://camera-7/stream -o out --max-frames 1000

        distillkit infer -m best.pt wafers/ -o out --slice 640x640 --slice-overlap 0.25 --slice-full

    Classifiers (train-classifier checkpoints or their ONNX exports) write per-image classes and
    probabilities to OUTPUT/predictions.json; --gradcam DIR adds Grad-CAM++ overlays. Multi-label
    models decide with their per-class thresholds (tuned ones when stored); --threshold X sets one for all.

        distillkit infer -m exp/cls/best.pt new_images/ -o exp/cls/infer --gradcam exp/cls/infer/cam
    """
    trust_model_files(trust_model_file)  # before anything reads a model file
    out = make_output(json_mode, quiet)
    slicing = slice_spec(slice_tile, slice_overlap, slice_full, slice_merge, slice_match)
    sources_found = collect_sources(sources, recursive=recursive)
    _check_outputs(sources, [*sources_found.images, *sources_found.video_files], model, output, save_vis, gradcam)
    if is_classifier_input([model]):  # classifier: per-image classes and probabilities instead of boxes
        if slicing is not None:
            raise UsageError("--slice is for detection and segmentation models", "leave it out for classifiers")
        images = collect_images(sources, recursive=recursive)  # images only: videos in its folders are ignored
        infer_classifier_command(
            out, images, model, output, batch, device, json_mode, tta, gradcam=gradcam, threshold=threshold
        )
        return
    if threshold is not None:
        raise UsageError("--threshold is for multi-label classifiers", "use --conf for detections")
    loaded = load_model(model)
    run = PredictionRun()
    target = output / "predictions.json"
    with graceful_interrupt() as stop:
        predictions = predict_sources(
            loaded,
            sources_found,
            run=run,
            conf=conf,
            iou=iou,
            max_det=max_det,
            imgsz=imgsz,
            batch=batch,
            device=device,
            vis_dir=output / "vis" if save_vis else None,
            slicing=slicing,
            vid_stride=vid_stride,
            max_frames=max_frames,
            progress=out.progress(),
            stop=stop,
        )
        write_predictions(predictions, target)
    _warn_skipped(out, run)
    summary = {
        "model": str(model),
        "task": loaded.task,
        "images": run.images,
        "detections": run.detections,
        "skipped": len(run.skipped),
        "skipped_images": run.skipped,
        "interrupted": run.interrupted,
        "predictions": str(target),
        "median_latency_ms": round(run.median_latency_ms, 3),
        "slicing": slicing.describe() if slicing is not None else None,
        "vis": str(output / "vis") if save_vis else None,
    }
    if json_mode:
        out.emit_json(summary)
    else:
        skipped = f"; {len(run.skipped)} unreadable images or frames skipped" if run.skipped else ""
        stopped = "; stopped by Ctrl-C" if run.interrupted else ""
        latency = f"median {run.median_latency_ms:.1f} ms per image" if run.images else "nothing was predicted"
        out.print(f"{run.detections} detections on {run.images} images/frames → {target} ({latency}{skipped}{stopped})")


def _warn_skipped(out: Output, run: PredictionRun, shown: int = 20) -> None:
    """One warning per skipped image or frame, at most ``shown`` of them (a broken video may have thousands)."""
    for skipped in run.skipped[:shown]:
        where = f"{skipped['file_name']}: " if "frame_index" in skipped else ""
        out.warning(f"skipped: {where}{skipped['reason']}")
    if len(run.skipped) > shown:
        out.warning(f"skipped: {len(run.skipped) - shown} more (all listed under skipped_images in --json)")


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
