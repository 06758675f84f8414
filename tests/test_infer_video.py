"""`infer` on videos, streams and cameras: frames streamed, per-frame entries, annotated mp4, clean Ctrl-C.

Video files are real (a few frames written by cv2 here); streams and cameras cannot be reached from
a test, so their path runs on a fake capture injected through ``capture_factory``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from distillkit.errors import UsageError
from distillkit.inference import (
    PredictionRun,
    Sources,
    StopRequest,
    VideoSource,
    collect_sources,
    graceful_interrupt,
    load_model,
    predict_sources,
    predict_video,
    write_predictions,
)
from distillkit.inference import video as video_module
from tests.optimize_helpers import make_checkpoint, make_images
from tests.test_cli import run


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("video_model") / "best.pt", imgsz=64, score_logit=0.0)


def shape_frame(index: int, size: tuple[int, int] = (96, 80)) -> np.ndarray:
    """A BGR frame: a red square moving right, a blue disc moving down."""
    width, height = size
    frame = np.full((height, width, 3), 30, dtype=np.uint8)
    x = (5 + 6 * index) % (width - 25)
    cv2.rectangle(frame, (x, 10), (x + 20, 30), (60, 60, 240), -1)
    cv2.circle(frame, (60, (20 + 5 * index) % (height - 12) + 6), 10, (240, 60, 60), -1)
    return frame


def write_video(path: Path, frames: int, fps: float = 10.0, size: tuple[int, int] = (96, 80)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for index in range(frames):
        writer.write(shape_frame(index, size))
    writer.release()
    return path


def video_facts(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frames actually decodable, fps, (width, height)) of a video file."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    fps = capture.get(cv2.CAP_PROP_FPS)
    count, size = 0, (0, 0)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count += 1
        size = (frame.shape[1], frame.shape[0])
    capture.release()
    return count, fps, size


class FakeCapture:
    """A ``cv2.VideoCapture`` stand-in for a live stream: frames made on demand, scripted failures.

    ``undecodable``: frame positions whose ``retrieve`` fails; ``dropped``: how many ``grab`` calls fail
    (a stream hiccup) before the frame at each listed position; the stream closes after ``frames``.
    """

    def __init__(
        self,
        frames: int,
        undecodable: frozenset[int] = frozenset(),
        dropped: dict[int, int] | None = None,
        opened: bool = True,
        on_frame: object = None,
    ) -> None:
        self.frames = frames
        self.undecodable = undecodable
        self.dropped = dict(dropped or {})
        self.opened = opened
        self.on_frame = on_frame
        self.position = -1
        self.released = False
        self.alive = 0  # frames handed out and still referenced somewhere (bounded memory)
        self.most_alive = 0
        self.grabs = 0

    def isOpened(self) -> bool:  # OpenCV's name
        return self.opened

    def grab(self) -> bool:
        self.grabs += 1
        upcoming = self.position + 1
        if self.dropped.get(upcoming, 0) > 0:
            self.dropped[upcoming] -= 1
            return False
        if upcoming >= self.frames:
            return False
        self.position = upcoming
        if callable(self.on_frame):
            self.on_frame(self.position)
        return True

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        if self.position in self.undecodable:
            return False, None
        frame = _Tracked(shape_frame(self.position), self)
        return True, frame

    def get(self, prop: int) -> float:
        return 0.0  # live: no frame count, no frame rate

    def release(self) -> None:
        self.released = True


class _Tracked(np.ndarray):
    """A frame that tells its capture when it is created and freed: how many frames are in memory at once."""

    def __new__(cls, array: np.ndarray, capture: FakeCapture) -> _Tracked:
        obj = np.asarray(array).view(cls)
        obj._capture = capture  # type: ignore[attr-defined]
        capture.alive += 1
        capture.most_alive = max(capture.most_alive, capture.alive)
        return obj

    def __array_finalize__(self, obj: object) -> None:
        self._capture = None  # views and copies made from a frame are not frames handed out

    def __del__(self) -> None:
        if getattr(self, "_capture", None) is not None:
            self._capture.alive -= 1


# --- sources ------------------------------------------------------------------------------------------------------


def test_sources_are_sorted_into_images_videos_streams_and_cameras(tmp_path: Path) -> None:
    images = make_images(tmp_path / "media", count=2, size=(64, 64))
    clip = write_video(tmp_path / "media" / "clip.mp4", frames=2)
    found = collect_sources([str(tmp_path / "media"), "rtsp://cam-7/stream", "0", "HTTPS://host/mjpg"])
    assert found.images == [p.resolve() for p in images]
    assert found.videos == [
        VideoSource(str(clip.resolve()), "file"),
        VideoSource("rtsp://cam-7/stream", "stream"),
        VideoSource("0", "camera"),
        VideoSource("HTTPS://host/mjpg", "stream"),
    ]
    assert found.videos[2].target == 0 and found.videos[2].live and not found.videos[0].live
    assert found.videos[1].stem == "stream_cam-7_stream" and found.videos[2].stem == "camera0"
    with pytest.raises(UsageError, match="neither an image file, a video"):
        collect_sources([str(tmp_path / "missing.mp4")])
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UsageError, match="is not an image file"):
        collect_sources([str(tmp_path / "notes.txt")])


# --- video files, for real ----------------------------------------------------------------------------------------


def test_infer_on_a_video_file_streams_frames_with_stride_and_writes_an_annotated_mp4(
    tmp_path: Path, checkpoint: Path, torch_one_thread: None
) -> None:
    clip = write_video(tmp_path / "clip.mp4", frames=12, fps=10.0)
    code, stdout, stderr = run(
        "infer", str(clip), "-m", str(checkpoint), "-o", str(tmp_path / "out"),
        "--vid-stride", "2", "--max-frames", "5", "--save-vis", "--conf", "0.01", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["images"] == 5 and summary["skipped"] == 0 and summary["interrupted"] is False
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert predictions, "the test model must produce detections"
    assert {p["frame_index"] for p in predictions} <= {0, 2, 4, 6, 8}
    for entry in predictions:
        assert entry["file_name"] == str(clip.resolve()) and "image_id" not in entry
        assert entry["timestamp_s"] == pytest.approx(entry["frame_index"] / 10.0)
    frames, fps, size = video_facts(tmp_path / "out" / "vis" / "clip.mp4")
    assert frames == 5 and fps == pytest.approx(5.0) and size == (96, 80)  # fps / stride: it lasts as long
    assert not list((tmp_path / "out" / "vis").glob(".*"))  # no temporary file left behind


def test_images_and_videos_together_and_an_unopenable_video_is_skipped(
    tmp_path: Path, checkpoint: Path, torch_one_thread: None
) -> None:
    images = make_images(tmp_path / "media", count=2, size=(64, 64))
    write_video(tmp_path / "media" / "a.mp4", frames=3)
    (tmp_path / "media" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video")
    code, stdout, stderr = run(
        "infer", str(tmp_path / "media"), "-m", str(checkpoint), "-o", str(tmp_path / "out"), "--conf", "0.01", "--json"
    )  # fmt: skip
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["images"] == 2 + 3 and summary["skipped"] == 1
    assert "broken.mp4" in summary["skipped_images"][0]["file_name"]
    assert "skipped: cannot open file" in stderr and "broken.mp4" in stderr
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    names = {Path(p["file_name"]).name for p in predictions}
    assert {p.name for p in images} <= names and "a.mp4" in names
    assert all("frame_index" not in p for p in predictions if not p["file_name"].endswith(".mp4"))


# --- streams and cameras, on a fake capture -----------------------------------------------------------------------


def test_stream_frames_are_streamed_in_bounded_memory_with_undecodable_frames_skipped(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, torch_one_thread: None
) -> None:
    monkeypatch.setattr(video_module, "_RETRY_PAUSE_S", 0.0)
    fake = FakeCapture(frames=40, undecodable=frozenset({3, 17}), dropped={10: 4})
    loaded = load_model(checkpoint)
    source = VideoSource("rtsp://cam/1", "stream")
    result = PredictionRun()
    entries = predict_video(
        loaded, source, run=result, conf=0.01, batch=2, save_video=tmp_path / "vis" / "cam.mp4",
        capture_factory=lambda target: fake,
    )  # fmt: skip
    written = write_predictions(entries, tmp_path / "predictions.json", keep=True)
    assert result.images == 38 and fake.released
    assert [s["frame_index"] for s in result.skipped] == [3, 17]
    assert all(s["file_name"] == "rtsp://cam/1" and "cannot decode" in s["reason"] for s in result.skipped)
    assert 1 <= fake.most_alive <= 6  # a batch of 2 (and what ultralytics holds of the last): never all 40 frames
    frames_seen = sorted({e["frame_index"] for e in written})
    assert 3 not in frames_seen and 17 not in frames_seen
    timestamps = [e["timestamp_s"] for e in written]
    assert timestamps == sorted(timestamps)  # seconds since the stream opened, in frame order
    assert fake.grabs == 40 + 4 + video_module.LIVE_READ_RETRIES  # dropped grabs retried; closed after the retries
    frames, fps, _ = video_facts(tmp_path / "vis" / "cam.mp4")
    assert frames == 38 and fps == pytest.approx(video_module.FALLBACK_FPS)  # no fps reported: the fallback


def test_ctrl_c_on_a_camera_stops_cleanly_and_keeps_valid_files(
    tmp_path: Path, checkpoint: Path, torch_one_thread: None
) -> None:
    stop = StopRequest()
    fake = FakeCapture(frames=10_000, on_frame=lambda position: stop.request() if position == 6 else None)
    result = PredictionRun()
    entries = predict_sources(
        load_model(checkpoint), Sources(videos=[VideoSource("0", "camera")]), run=result, conf=0.01,
        vis_dir=tmp_path / "vis", stop=stop, capture_factory=lambda target: fake,
    )  # fmt: skip
    write_predictions(entries, tmp_path / "predictions.json")
    assert result.interrupted and result.images == 7  # frames 0..6: the one in hand is finished
    predictions = json.loads((tmp_path / "predictions.json").read_text())  # complete JSON
    assert max(p["frame_index"] for p in predictions) <= 6
    frames, _, _ = video_facts(tmp_path / "vis" / "camera0.mp4")  # the mp4 has its index: playable
    assert frames == 7


def test_a_stream_that_cannot_be_opened_is_a_usage_error(tmp_path: Path, checkpoint: Path) -> None:
    fake = FakeCapture(frames=1, opened=False)
    entries = predict_sources(
        load_model(checkpoint), Sources(videos=[VideoSource("rtsp://nowhere/x", "stream")]),
        capture_factory=lambda target: fake,
    )  # fmt: skip
    with pytest.raises(UsageError, match="cannot open stream rtsp://nowhere/x"):
        write_predictions(entries, tmp_path / "predictions.json")
    assert not (tmp_path / "predictions.json").exists() and fake.released


@pytest.mark.usefixtures("python_sigint")
def test_first_ctrl_c_asks_to_stop_the_second_interrupts() -> None:
    with graceful_interrupt() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop()  # the first: a request, no exception
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the signal is delivered between bytecodes
                pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
