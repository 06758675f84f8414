"""Benchmark: sliced (tiled) inference vs one full-image pass on BCCD, and video throughput (issue 16).

1. Trains a yolov8n from scratch on BCCD's own train split at 320 px (``--epochs``; the run is kept
   in ``--workdir`` and reused, ``--fresh`` retrains), or scores ``--model`` instead.
2. Scores it on BCCD's test split (72 images, 640x480) through ``evaluate_models``, once per
   setting: full image at ``--imgsz`` (default 640: full resolution), full image at the training
   size, sliced into ``--tile`` tiles (``--overlap``) at the training size, sliced plus the full
   image pass (SAHI's "standard prediction" merge), and tiles resized to the scale the model was
   trained at (320 px tiles at 160 for a 320 px model: objects as large as in training). Prints
   COCO AP, AP_small, the Platelets AP and the median time per image of each.
3. Writes a video of ``--video-frames`` generated 640x480 frames and runs ``predict_video`` over it:
   frames/s, and the resident memory after the first 10 % of the frames and its maximum after that (flat:
   frames are streamed, never held).

    .venv/bin/python tests/bench/bench_sliced_inference.py --epochs 12
    .venv/bin/python tests/bench/bench_sliced_inference.py --model exp/run1/student/best.pt --video-frames 300
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

BCCD = REPO.parent / "shared" / "data" / "bccd"


def make_splits(bccd: Path, work: Path) -> dict[str, Path]:
    """train/val/test COCO files from BCCD's ImageSets/Main lists (invalid boxes dropped, as validate does)."""
    from distillkit.data.validate import validate_dataset
    from distillkit.io import atomic_write_text

    result = validate_dataset(bccd / "annotations.json", drop_invalid=True)
    assert result.dataset is not None
    dataset = result.dataset
    paths = {}
    for split in ("train", "val", "test"):
        stems = set((bccd / "ImageSets" / "Main" / f"{split}.txt").read_text().split())
        images = [i for i in dataset["images"] if Path(i["file_name"]).stem in stems]
        ids = {i["id"] for i in images}
        coco = {**dataset, "images": images, "annotations": [a for a in dataset["annotations"] if a["image_id"] in ids]}
        paths[split] = work / f"{split}.json"
        text = json.dumps(coco)
        if not paths[split].exists() or paths[split].read_text() != text:
            atomic_write_text(paths[split], text)  # several runs may share the workdir side by side
    return paths


def train(splits: dict[str, Path], images: Path, out: Path, settings: list[str], fresh: bool) -> tuple[Path, float]:
    from distillkit.students.train import train_student

    marker = out / "bench_done.json"
    if marker.exists() and not fresh:
        return out / "best.pt", json.loads(marker.read_text())["seconds"]
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = train_student(splits["train"], splits["val"], out, overrides=settings, images_dir=images)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps({"seconds": seconds, "settings": settings}))
    return result.best, seconds


def score(model: Path, test: Path, images: Path, imgsz: int, slicing: Any) -> dict[str, float]:
    from distillkit.evaluation.models import evaluate_models

    evaluation = evaluate_models(test, [model], images_dir=images, imgsz=imgsz, slicing=slicing)[0]
    metrics = evaluation.result.metrics["bbox"]
    platelets = next(c for c in metrics.per_class if c.name == "Platelets")
    return {
        "AP": metrics.stats["AP"],
        "AP50": metrics.stats["AP50"],
        "AP_small": metrics.stats["APs"],
        "AP_platelets": platelets.AP,
        "ms_per_image": evaluation.median_latency_ms,
    }


def video_throughput(model: Path, work: Path, frames: int, imgsz: int) -> dict[str, float]:
    """frames/s of ``predict_video`` on a generated 640x480 video; resident memory at 10 % and at the end."""
    import cv2
    import numpy as np

    from distillkit.inference import PredictionRun, load_model
    from distillkit.inference.video import predict_video

    path = work / f"bench_{frames}.mp4"
    if not path.exists():
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 480))
        rng = np.random.default_rng(0)
        for index in range(frames):
            frame = np.full((480, 640, 3), 40, np.uint8)
            for _ in range(12):
                x, y = int(rng.integers(0, 600)), int(rng.integers(0, 440))
                cv2.circle(frame, (x, y), int(rng.integers(5, 30)), (80, 60, 200), -1)
            cv2.putText(frame, str(index), (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
            writer.write(frame)
        writer.release()
    loaded = load_model(model)
    run = PredictionRun()
    memory = _MemoryProbe(frames)
    start = time.perf_counter()
    for _entry in predict_video(
        loaded, str(path), run=run, imgsz=imgsz, save_video=work / "bench_vis.mp4", progress=memory
    ):
        pass
    seconds = time.perf_counter() - start
    return {
        "frames": run.images,
        "frames_per_s": run.images / seconds,
        "rss_mb_at_10pct": memory.at_tenth,
        "rss_mb_max_after": memory.most,
    }


class _MemoryProbe:
    """A ``Progress`` that samples the resident memory as frames complete (flat: frames are not kept)."""

    def __init__(self, frames: int) -> None:
        self.tenth = max(frames // 10, 1)
        self.done = 0
        self.at_tenth = 0.0
        self.most = 0.0

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[_MemoryProbe]:
        yield self

    def advance(self, amount: float = 1) -> None:
        self.done += int(amount)
        rss = _rss_mb()
        if self.done == self.tenth:
            self.at_tenth = rss
        if self.done >= self.tenth:
            self.most = max(self.most, rss)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-imgsz", type=int, default=320, help="training size")
    parser.add_argument("--imgsz", type=int, default=640, help="full-image inference size (640: full resolution)")
    parser.add_argument("--tile", default="320x320", help="slice size WxH")
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", type=Path, help="score this model instead of training one")
    parser.add_argument("--video-frames", type=int, default=200, help="0: no video throughput run")
    parser.add_argument("--bccd", type=Path, default=BCCD)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distillkit-bench-sliced")
    parser.add_argument("--fresh", action="store_true", help="retrain a run found in the workdir")
    parser.add_argument("--train-only", action="store_true", help="train (or find) the model and stop")
    parser.add_argument(
        "--settings",
        default="full,sliced,sliced-full,full-train,sliced-train-scale",
        help="comma-separated: full, sliced, sliced-full, full-train, sliced-train-scale (one per process runs "
        "them side by side)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on a shared CPU)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    splits = make_splits(args.bccd, work)
    images = args.bccd / "images"
    if args.model is not None:
        model, seconds = args.model, 0.0
    else:
        settings = [
            "student.model=yolov8n",
            "student.pretrained=false",
            f"student.imgsz={args.train_imgsz}",
            f"student.epochs={args.epochs}",
            f"student.batch={args.batch}",
            f"student.workers={args.workers}",
            "student.plots=false",
            "student.warmup_epochs=1",  # few epochs: do not spend a third of them warming up
            "training_dynamics.device=cpu",
        ]
        model, seconds = train(
            splits, images, work / f"yolov8n_{args.epochs}e_{args.train_imgsz}", settings, args.fresh
        )
        print(f"model: {model} (trained in {seconds:.0f} s)", flush=True)
    if args.train_only:
        return 0

    from distillkit.inference.slicing import SliceSpec

    tile = SliceSpec.parse(args.tile, overlap=args.overlap)
    scaled = max(32, round(max(tile.width, tile.height) * args.train_imgsz / 640 / 32) * 32)  # BCCD is 640 wide
    # the headline pair first: on a loaded machine the run may be cut short, each row is printed when done
    settings_to_score: dict[str, tuple[str, int, Any]] = {
        "full": (f"full image @{args.imgsz}", args.imgsz, None),
        "sliced": (f"sliced {args.tile} @{args.train_imgsz}", args.train_imgsz, tile),
        "sliced-full": (f"sliced {args.tile} + full @{args.train_imgsz}", args.train_imgsz, tile.with_full_image()),
        "full-train": (f"full image @{args.train_imgsz}", args.train_imgsz, None),
        # tiles shrunk as the training shrank the 640 px pictures: objects at the scale the model learned
        "sliced-train-scale": (f"sliced {args.tile} @{scaled}", scaled, tile),
    }
    chosen = [key.strip() for key in args.settings.split(",") if key.strip()]
    unknown = [key for key in chosen if key not in settings_to_score]
    if unknown:
        parser.error(f"unknown --settings {unknown}; choose from {', '.join(settings_to_score)}")
    rows: dict[str, dict[str, float]] = {}
    for key in chosen:
        name, imgsz, slicing = settings_to_score[key]
        rows[name] = score(model, splits["test"], images, imgsz, slicing)
        print(f"{name}: {rows[name]}", flush=True)
    video = video_throughput(model, work, args.video_frames, args.train_imgsz) if args.video_frames else None
    tag = "_".join(chosen) + ("_video" if video else "")
    (work / f"results_{tag}.json").write_text(json.dumps({"scores": rows, "video": video}, indent=1))

    if rows:
        print(f"\nBCCD test (72 images, 640x480), yolov8n {args.epochs} epochs from scratch at {args.train_imgsz} px")
        print(f"{'setting':<34} {'AP':>6} {'AP50':>6} {'AP_s':>6} {'AP_plt':>7} {'ms/img':>8}")
    for name, row in rows.items():
        print(
            f"{name:<34} {row['AP']:6.3f} {row['AP50']:6.3f} {row['AP_small']:6.3f} "
            f"{row['AP_platelets']:7.3f} {row['ms_per_image']:8.1f}"
        )
    if video:
        print(
            f"\nvideo: {video['frames']} frames 640x480 at imgsz {args.train_imgsz}: "
            f"{video['frames_per_s']:.1f} frames/s, resident memory {video['rss_mb_at_10pct']:.0f} MB after 10 % "
            f"of the frames, at most {video['rss_mb_max_after']:.0f} MB after that"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
