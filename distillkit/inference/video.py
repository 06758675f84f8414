"""Predicting on video files, streams and cameras, frame by frame, in bounded memory.

Frames are read through ``cv2.VideoCapture`` (what ultralytics uses too; FFmpeg inside the
opencv-python wheel) one at a time: at most ``batch`` frames are in memory, whatever the length of
the video, and a camera can run for days. ``capture_factory`` replaces ``cv2.VideoCapture`` (tests
drive the stream path with a fake capture; anything with ``isOpened/grab/retrieve/get/release``).

Per frame the predictions carry ``file_name`` (the video, URL or camera number), ``frame_index``
(the position in the source, counting frames skipped by ``vid_stride``) and ``timestamp_s``
(``frame_index / fps`` for files; seconds since the source was opened for live sources). A frame
that cannot be decoded is skipped, named and counted (``run.skipped``), never fatal. The annotated
video (``save_video``) is an mp4 at the source's frame rate divided by ``vid_stride`` (so it lasts
as long as the source), written beside its target and renamed into place when the run ends,
also when it ends by Ctrl-C (``stop``), so it is always a complete, playable file.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from distillkit.errors import DataError, UsageError
from distillkit.inference.detections import Detections
from distillkit.inference.predictor import LoadedModel, PredictionRun, array_predictor, prediction_arguments
from distillkit.inference.slicing import SliceSpec, predict_sliced
from distillkit.inference.sources import VideoSource
from distillkit.progress import NULL_PROGRESS, Progress

#: The frame rate written for a source that does not report one (many webcams and some streams).
FALLBACK_FPS = 25.0
#: A live source that fails this many reads in a row is taken as closed.
LIVE_READ_RETRIES = 50
_RETRY_PAUSE_S = 0.1
_CAP_PROP_FPS = 5  # cv2.CAP_PROP_FPS, cv2.CAP_PROP_FRAME_COUNT: numbered here so fakes need no cv2
_CAP_PROP_FRAME_COUNT = 7


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` used here."""

    def isOpened(self) -> bool: ...  # OpenCV's names
    def grab(self) -> bool: ...
    def retrieve(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


CaptureFactory = Callable[[str | int], Capture]


@dataclass
class Frame:
    index: int  # position in the source, 0-based
    timestamp_s: float
    pixels: np.ndarray  # BGR, H x W x 3


def open_capture(source: VideoSource, capture_factory: CaptureFactory | None = None) -> Capture:
    """The opened capture of ``source``; a ``UsageError`` naming it when it cannot be opened."""
    if capture_factory is None:
        import cv2

        capture_factory = cv2.VideoCapture
    capture = capture_factory(source.target)
    if not capture.isOpened():
        capture.release()
        hints = {
            "file": "check that it is a video OpenCV's FFmpeg can read (mp4, avi, mov, mkv...)",
            "stream": "check the URL, the network and the credentials",
            "camera": "check the camera number (0 is the first camera) and that no other program holds it",
        }
        raise UsageError(f"cannot open {source.kind} {source.name}", hints[source.kind])
    return capture


def frame_rate(capture: Capture) -> float | None:
    """Frames per second as the source reports it; None when it does not (0, NaN, absurd values)."""
    fps = float(capture.get(_CAP_PROP_FPS) or 0.0)
    return fps if math.isfinite(fps) and 0.0 < fps < 1000.0 else None


def read_frames(
    capture: Capture,
    source: VideoSource,
    vid_stride: int = 1,
    max_frames: int | None = None,
    run: PredictionRun | None = None,
    stop: Callable[[], bool] | None = None,
) -> Iterator[Frame]:
    """Every ``vid_stride``-th frame (at most ``max_frames``), one at a time; undecodable ones go to ``run.skipped``.

    ``grab`` moves to the next frame without decoding it (skipped frames cost almost nothing);
    ``retrieve`` decodes the frames kept. A file ends when ``grab`` fails; a live source only after
    ``LIVE_READ_RETRIES`` failures in a row (a stream drops frames; a camera may stall a moment).
    """
    if vid_stride < 1:
        raise UsageError(f"--vid-stride {vid_stride} is below 1", "1 reads every frame, 2 every other one")
    fps = frame_rate(capture)
    opened = time.monotonic()
    index, kept, failures = -1, 0, 0
    while max_frames is None or kept < max_frames:
        if stop is not None and stop():
            if run is not None:
                run.interrupted = True
            return
        if not capture.grab():
            if not source.live:
                return
            failures += 1
            if failures >= LIVE_READ_RETRIES:
                return
            time.sleep(_RETRY_PAUSE_S)
            continue
        failures = 0
        index += 1
        if index % vid_stride:
            continue
        timestamp = time.monotonic() - opened if source.live or fps is None else index / fps
        ok, pixels = capture.retrieve()
        if not ok or pixels is None or pixels.ndim != 3 or pixels.size == 0:
            if run is not None:
                run.skipped.append(
                    {"file_name": source.name, "frame_index": index, "reason": f"cannot decode frame {index}"}
                )
            continue
        kept += 1
        yield Frame(index, round(timestamp, 3), pixels)


class VideoOut:
    """An mp4 written frame by frame beside ``target``, renamed into place when closed (Ctrl-C included).

    Opened at the first frame (its size is known then). ``cv2.VideoWriter`` picks the container
    from the file name, so the temporary file ends in ``.mp4`` too. ``mp4v`` is the codec every
    opencv-python build can write (H.264 needs an OpenCV built against a licensed encoder).
    """

    def __init__(self, target: Path, fps: float) -> None:
        self.target = target
        self.fps = fps
        self.frames = 0
        self._writer: Any = None
        self._temporary: Path | None = None

    def write(self, frame_bgr: np.ndarray) -> None:
        if self._writer is None:
            import cv2

            self.target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.target.stem}.", suffix=".tmp.mp4", dir=self.target.parent)
            os.close(fd)
            self._temporary = Path(name)
            height, width = frame_bgr.shape[:2]
            self._writer = cv2.VideoWriter(name, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                self._temporary.unlink(missing_ok=True)
                raise DataError(f"cannot write the video {self.target}", "check the folder is writable")
        self._writer.write(np.ascontiguousarray(frame_bgr))
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        """Finish the file (its index is written on release) and move it into place, or drop it."""
        if self._writer is None or self._temporary is None:
            return
        self._writer.release()
        self._writer = None
        if keep and self.frames:
            os.replace(self._temporary, self.target)
        else:
            self._temporary.unlink(missing_ok=True)
        self._temporary = None

    def __enter__(self) -> VideoOut:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        # a consumer that stops early (GeneratorExit) or Ctrl-C still leaves a playable video of what was seen
        self.close(keep=kind is None or issubclass(kind, (KeyboardInterrupt, GeneratorExit)))


def predict_video(
    loaded: LoadedModel,
    source: VideoSource | str,
    run: PredictionRun | None = None,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    imgsz: int | None = None,
    batch: int = 1,
    device: str | None = None,
    vid_stride: int = 1,
    max_frames: int | None = None,
    save_video: Path | None = None,
    slicing: SliceSpec | None = None,
    progress: Progress = NULL_PROGRESS,
    stop: Callable[[], bool] | None = None,
    capture_factory: CaptureFactory | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield COCO-results detections frame by frame (``frame_index``, ``timestamp_s`` in each entry).

    ``run.images`` counts the frames predicted, ``run.latencies_ms`` their time each (model and
    merge, not decoding). ``source``: a ``VideoSource`` or a video path.
    """
    if loaded.task == "classify":
        raise UsageError(f"{loaded.path.name} is a classifier", "detections come from detection or segmentation models")
    if isinstance(source, str):
        source = VideoSource(source, "file")
    run = run if run is not None else PredictionRun()
    arguments = prediction_arguments(conf, iou, max_det, imgsz, batch, device)
    predict = array_predictor(loaded, arguments)
    capture = open_capture(source, capture_factory)
    try:
        fps = frame_rate(capture)
        total = None if source.live else int(capture.get(_CAP_PROP_FRAME_COUNT) or 0)
        if total is not None:
            total = -(-total // vid_stride) if total > 0 else None
            if total is not None and max_frames is not None:
                total = min(total, max_frames)
        out = VideoOut(save_video, (fps or FALLBACK_FPS) / vid_stride) if save_video is not None else None
        frames = read_frames(capture, source, vid_stride, max_frames, run, stop)
        with progress.task(f"predicting on {source.name}", total=total) as bar, out or _NoVideo():
            pending: list[Frame] = []
            for frame in _then_none(frames):
                if frame is not None:
                    pending.append(frame)
                    if len(pending) < batch:
                        continue
                if not pending:
                    break
                started = time.perf_counter()
                found = _predict_frames([f.pixels for f in pending], predict, slicing, max_det)
                elapsed_ms = (time.perf_counter() - started) * 1000 / len(pending)
                for item, detections in zip(pending, found, strict=True):
                    run.images += 1
                    run.latencies_ms.append(elapsed_ms)
                    height, width = item.pixels.shape[:2]
                    head = {"file_name": source.name, "frame_index": item.index, "timestamp_s": item.timestamp_s}
                    for entry in detections.entries(loaded.names, loaded.category_ids, height, width, head):
                        run.detections += 1
                        yield entry
                    if out is not None:
                        out.write(detections.plot(item.pixels, loaded.names))
                    bar.advance()
                pending = []
    finally:
        capture.release()


def _predict_frames(
    pictures: list[np.ndarray],
    predict: Callable[[list[np.ndarray]], list[Detections]],
    slicing: SliceSpec | None,
    max_det: int,
) -> list[Detections]:
    if slicing is None:
        return predict(pictures)
    return [predict_sliced(picture, predict, slicing, max_det=max_det) for picture in pictures]


def _then_none(frames: Iterator[Frame]) -> Iterator[Frame | None]:
    """The frames, then one ``None``: the signal to predict the last, partial batch."""
    yield from frames
    yield None


class _NoVideo:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
