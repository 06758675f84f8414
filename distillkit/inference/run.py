"""`infer`'s whole run over mixed sources: images first, then each video, stream or camera, one entry stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from distillkit.errors import UsageError
from distillkit.inference.predictor import LoadedModel, PredictionRun, predict_images
from distillkit.inference.slicing import SliceSpec
from distillkit.inference.sources import Sources
from distillkit.inference.video import CaptureFactory, open_capture, predict_video
from distillkit.progress import NULL_PROGRESS, Progress


def predict_sources(
    loaded: LoadedModel,
    sources: Sources,
    run: PredictionRun | None = None,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    imgsz: int | None = None,
    batch: int = 1,
    device: str | None = None,
    vis_dir: Path | None = None,
    slicing: SliceSpec | None = None,
    vid_stride: int = 1,
    max_frames: int | None = None,
    progress: Progress = NULL_PROGRESS,
    stop: Callable[[], bool] | None = None,
    capture_factory: CaptureFactory | None = None,
) -> Iterator[dict[str, Any]]:
    """COCO-results entries for every image, then every frame kept of each video (``predict_video``).

    Unreadable images and frames, and video files that cannot be opened, are skipped and listed in
    ``run.skipped``; a stream or camera that cannot be opened is a ``UsageError`` (a wrong URL or
    number). Overlays go to ``vis_dir``: ``<image stem>.jpg`` and ``<video stem>.mp4``.
    ``max_frames`` applies to each video source.
    """
    run = run if run is not None else PredictionRun()
    stopping = stop if stop is not None else (lambda: False)
    common: dict[str, Any] = {"conf": conf, "iou": iou, "max_det": max_det, "imgsz": imgsz, "batch": batch}
    common.update(device=device, slicing=slicing, progress=progress, stop=stopping)
    if sources.images:
        yield from predict_images(loaded, sources.images, run=run, save_vis=vis_dir, skip_unreadable=True, **common)
    used_stems: set[str] = set()
    for video in sources.videos:
        if stopping() or run.interrupted:
            run.interrupted = True
            return
        if not video.live:
            try:
                open_capture(video, capture_factory).release()
            except UsageError as error:
                run.skipped.append({"file_name": video.name, "reason": error.message})
                continue
        target = None
        if vis_dir is not None:
            stem, number = video.stem, 1
            while stem in used_stems:  # two clips named alike in different folders: both kept
                number += 1
                stem = f"{video.stem}_{number}"
            used_stems.add(stem)
            target = vis_dir / f"{stem}.mp4"
        yield from predict_video(
            loaded,
            video,
            run=run,
            vid_stride=vid_stride,
            max_frames=max_frames,
            save_video=target,
            capture_factory=capture_factory,
            **common,
        )
