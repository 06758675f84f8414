"""Benchmark: `train-student` overhead against calling ultralytics directly with the same settings.

Both train the same student on the same data with the same arguments in the same run, each in its
own subprocess, interleaved; distillkit's time includes everything it adds (validating both COCO
files, writing config and metadata, converting to YOLO format on its first run, exporting the
checkpoints, the training-curve plot). The direct run trains on the dataset distillkit converted.

    .venv/bin/python tests/bench/bench_train_student.py [--images 60] [--epochs 3] [--imgsz 320] [--repeat 2]

Data: the shipped synthetic generator, or ``--data``/``--val`` COCO files of your own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = ["student.optimizer=SGD", "student.plots=false", "student.workers=0", "student.warmup_epochs=0"]

DIRECT = """
import json, sys
from distillkit.ultralytics_env import import_ultralytics
import_ultralytics()
from ultralytics import YOLO
arguments = json.loads(sys.argv[1])
YOLO(arguments.pop("model")).train(**arguments)
"""


def _run(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--student", default="yolov8n-seg")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--val", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distillkit-bench-train")
    args = parser.parse_args()

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if args.data is None:
        from distillkit.data.synthetic import generate_inspection_dataset

        data = generate_inspection_dataset(work / "data", num_images=args.images, seed=0)
        val = data
    else:
        data, val = args.data, args.val or args.data

    settings = [
        *SETTINGS,
        f"student.model={args.student}",
        f"student.epochs={args.epochs}",
        f"student.imgsz={args.imgsz}",
        f"student.batch={args.batch}",
        f"student.nbs={args.batch}",
    ]
    distillkit_times, direct_times = [], []
    for attempt in range(args.repeat):
        out = work / f"distillkit_{attempt}"
        shutil.rmtree(out, ignore_errors=True)
        command = [
            sys.executable,
            "-m",
            "distillkit",
            "train-student",
            "-d",
            str(data),
            "-v",
            str(val),
            "-o",
            str(out),
            "--quiet",
        ]
        for item in settings:
            command += ["--set", item]
        distillkit_times.append(_run(command))

        from distillkit.config import build_config
        from distillkit.data.validate import load_valid_dataset
        from distillkit.students.train import ultralytics_train_arguments

        info = load_valid_dataset(data).info
        config = build_config(
            ("student", "distillation", "augmentation", "training_dynamics"), dataset_info=info, overrides=settings
        )
        direct_dir = work / f"direct_{attempt}"
        shutil.rmtree(direct_dir, ignore_errors=True)
        from distillkit.data.yolo_format import YoloDataset

        dataset = YoloDataset(out / "yolo_data", out / "yolo_data" / "dataset.yaml", "segment", [], {}, "", True, {})
        arguments = ultralytics_train_arguments(config, dataset, direct_dir)
        arguments["model"] = f"{args.student}.yaml"
        direct_times.append(_run([sys.executable, "-c", DIRECT, json.dumps(arguments)]))
        print(
            f"run {attempt + 1}: distillkit {distillkit_times[-1]:.1f} s, ultralytics direct {direct_times[-1]:.1f} s"
        )

    best_ours, best_direct = min(distillkit_times), min(direct_times)
    ratio = best_ours / best_direct
    print(f"\n{args.student}, {args.epochs} epochs at {args.imgsz} px, best of {args.repeat}:")
    print(f"  ultralytics direct   {best_direct:7.1f} s")
    print(f"  distillkit           {best_ours:7.1f} s")
    print(f"  ratio                {ratio:7.2f}   (goal <= 1.10: {'OK' if ratio <= 1.1 else 'over'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
