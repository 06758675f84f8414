"""Benchmark: sliced (tiled) inference vs one full-image pass on BCCD, and video throughput (issue 16).

1. Trains a yolov8n from scratch at 320 px (``--epochs``; the run is kept in ``--workdir`` and
   reused, ``--fresh`` retrains), or scores ``--model`` instead. With ``--train-on-tiles`` it trains on
   BCCD's train split cut into native-resolution ``--tile`` tiles (the val split tiled the same way
   validates): cells at the scale they have in the 640x480 pictures, SAHI's slicing-aided
   fine-tuning, the case slicing is for. Without it, on the whole train pictures shrunk to 320 px
   (cells at half their size: slicing then shows them twice as large as in training).
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
    .venv/bin/python tests/bench/bench_sliced_inference.py --train-on-tiles --epochs 10 --workers 0 --video-frames 0
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
from dataclasses import replace
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


def tile_split(
    split: Path, images: Path, tiles_dir: Path, spec: Any, min_inside: float, empty_fraction: float
) -> tuple[Path, dict[str, int]]:
    """``split`` cut into native-resolution tiles on the grid sliced inference uses; a COCO file of the tiles.

    Tiles come from ``SliceSpec.tiles`` (the last row and column moved back inside the picture), so
    training sees the very crops ``--slice`` predicts on. A box is clipped to the tile and kept when at
    least ``min_inside`` of its area lies inside, else dropped: a cell mostly cut off would teach the
    model to call a sliver a whole cell, and the neighbouring tile (overlap) holds it whole; keeping
    every clipped remnant would also flood the small-object sizes with fragments. Tiles left with no
    box are kept up to ``empty_fraction`` of the tiles with boxes (BCCD is dense: there are few).
    Written by hand (numpy, exact pixels): ultralytics' ``split_dota`` tiles DOTA polygon files and
    pads edge tiles, and albumentations' ``Crop`` + ``min_visibility`` would do the box rule but in
    normalised float32 (coordinates off by 1e-5 px) and refuses boxes reaching past the picture.
    """
    import random

    import cv2
    import numpy as np

    from distillkit.io import atomic_write_text

    out = tiles_dir.parent / f"{split.stem}_tiles.json"
    recipe = {"tile": [spec.width, spec.height], "overlap": spec.overlap, "min_inside": min_inside}
    recipe["empty_fraction"] = empty_fraction
    done = tiles_dir.parent / f"{split.stem}_tiles.recipe.json"
    if out.exists() and done.exists() and json.loads(done.read_text())["recipe"] == recipe:
        return out, json.loads(done.read_text())["counts"]
    tiles_dir.mkdir(parents=True, exist_ok=True)
    coco = json.loads(split.read_text())
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in coco["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    tiles: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    empty: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    counts = {"images": len(coco["images"]), "boxes_kept": 0, "boxes_clipped": 0, "boxes_dropped": 0}
    for image in coco["images"]:
        picture = cv2.imread(str(images / image["file_name"]))
        height, width = picture.shape[:2]
        boxes = by_image.get(image["id"], [])
        xywh = np.array([a["bbox"] for a in boxes], dtype=np.float64).reshape(-1, 4)
        x1, y1 = xywh[:, 0], xywh[:, 1]
        x2, y2 = x1 + xywh[:, 2], y1 + xywh[:, 3]
        areas = xywh[:, 2] * xywh[:, 3]
        stem = Path(image["file_name"]).stem
        for tx1, ty1, tx2, ty2 in spec.tiles(width, height):
            cx1, cy1 = np.clip(x1, tx1, tx2), np.clip(y1, ty1, ty2)
            cx2, cy2 = np.clip(x2, tx1, tx2), np.clip(y2, ty1, ty2)
            inside = (cx2 - cx1) * (cy2 - cy1)
            touching = inside > 0
            kept = touching & (inside >= min_inside * np.maximum(areas, 1e-9))
            counts["boxes_dropped"] += int((touching & ~kept).sum())
            counts["boxes_clipped"] += int((kept & (inside < areas)).sum())
            name = f"{stem}_x{tx1}_y{ty1}.jpg"
            record = {"file_name": name, "width": tx2 - tx1, "height": ty2 - ty1, "source": image["file_name"]}
            entries = [
                {
                    "category_id": boxes[i]["category_id"],
                    "bbox": [cx1[i] - tx1, cy1[i] - ty1, cx2[i] - cx1[i], cy2[i] - cy1[i]],
                    "area": float(inside[i]),
                    "iscrowd": 0,
                }
                for i in np.flatnonzero(kept)
            ]
            counts["boxes_kept"] += len(entries)
            (tiles if entries else empty).append((record, entries))
            if not (tiles_dir / name).exists():
                cv2.imwrite(str(tiles_dir / name), picture[ty1:ty2, tx1:tx2], [cv2.IMWRITE_JPEG_QUALITY, 95])
    random.Random(0).shuffle(empty)
    chosen = tiles + empty[: int(empty_fraction * len(tiles))]
    counts.update(tiles=len(chosen), empty_tiles_kept=len(chosen) - len(tiles), empty_tiles_left=len(empty))
    counts["empty_tiles_left"] -= counts["empty_tiles_kept"]
    tiled: dict[str, Any] = {**coco, "images": [], "annotations": []}
    for image_id, (record, entries) in enumerate(chosen, start=1):
        tiled["images"].append({"id": image_id, **record})
        for entry in entries:
            tiled["annotations"].append({"id": len(tiled["annotations"]) + 1, "image_id": image_id, **entry})
    atomic_write_text(out, json.dumps(tiled))
    atomic_write_text(done, json.dumps({"recipe": recipe, "counts": counts}))
    return out, counts


def train(
    splits: dict[str, Path], images: Path, out: Path, settings: list[str], fresh: bool
) -> tuple[Path, float, dict[str, float]]:
    """best.pt, training seconds and the final validation metrics (of best.pt) of the run in ``out``."""
    from distillkit.students.train import train_student

    marker = out / "bench_done.json"
    if marker.exists() and not fresh:
        done = json.loads(marker.read_text())
        return out / "best.pt", done["seconds"], done.get("metrics", {})
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = train_student(splits["train"], splits["val"], out, overrides=settings, images_dir=images)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps({"seconds": seconds, "settings": settings, "metrics": result.metrics}))
    return result.best, seconds, result.metrics


def score(model: Path, test: Path, images: Path, imgsz: int, slicing: Any) -> dict[str, float]:
    from distillkit.evaluation.models import evaluate_models

    evaluation = evaluate_models(test, [model], images_dir=images, imgsz=imgsz, slicing=slicing)[0]
    metrics = evaluation.result.metrics["bbox"]
    per_class = {c.name: c.AP for c in metrics.per_class}
    return {
        "AP": metrics.stats["AP"],
        "AP50": metrics.stats["AP50"],
        "AP_small": metrics.stats["APs"],
        "AP_platelets": per_class["Platelets"],
        "AP_RBC": per_class["RBC"],
        "AP_WBC": per_class["WBC"],
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
        help="comma-separated: full, sliced, sliced-full, sliced-full-nmm, full-train, sliced-train-scale (one per "
        "process runs them side by side); default: all but sliced-full-nmm, or with --train-on-tiles "
        "full-train,sliced,full,sliced-full "
        "(sliced-train-scale is sliced there: the training scale is the native one)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads while scoring (1: steady timings on a shared CPU)"
    )
    parser.add_argument(
        "--train-on-tiles",
        action="store_true",
        help="train on the train split cut into native-resolution --tile tiles (SAHI's slicing-aided "
        "fine-tuning) instead of the whole pictures shrunk to --train-imgsz",
    )
    parser.add_argument(
        "--min-inside", type=float, default=0.5, help="tiles: keep a clipped box with at least this part of its area"
    )
    parser.add_argument(
        "--empty-tiles", type=float, default=0.1, help="tiles: keep empty tiles up to this fraction of the others"
    )
    parser.add_argument("--close-mosaic", type=int, help="augmentation.close_mosaic (default: distillkit's, 10)")
    args = parser.parse_args()
    import torch

    from distillkit.inference.slicing import SliceSpec

    tile = SliceSpec.parse(args.tile, overlap=args.overlap)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    splits = make_splits(args.bccd, work)
    images = args.bccd / "images"
    if args.model is not None:
        model, seconds, validation = args.model, 0.0, {}
    else:
        train_splits, train_images, run_name = splits, images, f"yolov8n_{args.epochs}e_{args.train_imgsz}"
        if args.train_on_tiles:
            # the tiles' grid is the one scored below; val is tiled the same way, so the val mAP is per tile
            tiles_dir = work / "tiles" / f"{tile.width}x{tile.height}_o{tile.overlap:g}"
            train_images = tiles_dir / "images"
            train_splits = {}
            for split in ("train", "val"):
                train_splits[split], counts = tile_split(
                    splits[split], images, train_images, tile, args.min_inside, args.empty_tiles
                )
                print(f"{split} tiles: {counts}", flush=True)
            run_name = f"yolov8n_tiles{tile.width}x{tile.height}_o{tile.overlap:g}_{args.epochs}e_{args.train_imgsz}"
            if args.close_mosaic is not None:
                run_name += f"_cm{args.close_mosaic}"
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
        if args.close_mosaic is not None:  # the default (10) leaves a short run almost without mosaic
            settings.append(f"augmentation.close_mosaic={args.close_mosaic}")
        model, seconds, validation = train(train_splits, train_images, work / run_name, settings, args.fresh)
        print(f"model: {model} (trained in {seconds:.0f} s), validation: {validation}", flush=True)
    if args.train_only:
        return 0
    # after training, which keeps torch's own thread count: one thread gives steadier timings when shared
    torch.set_num_threads(args.threads)
    scaled = max(32, round(max(tile.width, tile.height) * args.train_imgsz / 640 / 32) * 32)  # BCCD is 640 wide
    # the headline pair first: on a loaded machine the run may be cut short, each row is printed when done
    settings_to_score: dict[str, tuple[str, int, Any]] = {
        "full": (f"full image @{args.imgsz}", args.imgsz, None),
        "sliced": (f"sliced {args.tile} @{args.train_imgsz}", args.train_imgsz, tile),
        "sliced-full": (f"sliced {args.tile} + full @{args.train_imgsz}", args.train_imgsz, tile.with_full_image()),
        # SAHI's own merge: fragments of a large cell cut by tile borders lie inside its whole box (IoS);
        # not run by default: at COCO scoring's 0.001 score threshold it fuses touching cells (BCCD: AP ~0.01)
        "sliced-full-nmm": (
            f"sliced {args.tile} + full @{args.train_imgsz}, nmm",
            args.train_imgsz,
            replace(tile.with_full_image(), merge="nmm"),
        ),
        "full-train": (f"full image @{args.train_imgsz}", args.train_imgsz, None),
        # tiles shrunk as the training shrank the 640 px pictures: objects at the scale the model learned
        "sliced-train-scale": (f"sliced {args.tile} @{scaled}", scaled, tile),
    }
    if args.settings is None:
        args.settings = (
            "full-train,sliced,full,sliced-full"
            if args.train_on_tiles
            else "full,sliced,sliced-full,full-train,sliced-train-scale"
        )
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
    if args.train_on_tiles:
        tag = "tiles_" + tag
    (work / f"results_{tag}.json").write_text(
        json.dumps({"scores": rows, "video": video, "model": str(model), "validation": validation}, indent=1)
    )

    if rows:
        trained_on = f"{args.tile} native-resolution tiles" if args.train_on_tiles else "whole pictures"
        described = (
            f"model {args.model}"
            if args.model is not None
            else f"yolov8n {args.epochs} epochs from scratch at {args.train_imgsz} px on {trained_on}"
        )
        print(f"\nBCCD test (72 images, 640x480), {described}")
        print(
            f"{'setting':<40} {'AP':>6} {'AP50':>6} {'AP_s':>6} {'AP_plt':>7} {'AP_RBC':>7} {'AP_WBC':>7} {'ms/img':>8}"
        )
    for name, row in rows.items():
        print(
            f"{name:<40} {row['AP']:6.3f} {row['AP50']:6.3f} {row['AP_small']:6.3f} {row['AP_platelets']:7.3f} "
            f"{row['AP_RBC']:7.3f} {row['AP_WBC']:7.3f} {row['ms_per_image']:8.1f}"
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
