"""Benchmark: `optimize` on BCCD — PyTorch fp32 vs ONNX fp32 vs INT8 latency and test mAP50-95.

Goals (issue 5): INT8 latency <= 0.5x PyTorch fp32 and <= 0.75x ONNX fp32 at the same imgsz, in the
same run; test mAP50-95 drop <= 1 point. Latency: network forward, batch 1, --threads, warm-up,
artefacts timed interleaved (see distillkit/export/benchmark.py). mAP: `evaluate`'s evaluator on the
test split. Every INT8 recipe (fast = default, conv = the STACK-NOTES recipe) is measured side by side.

    .venv/bin/python tests/bench/bench_optimize.py [--model best.pt] [--epochs 15] [--imgsz 320] [--threads 2]

Without --model it splits ../shared/data/bccd (seeded, stratified, 0.7/0.15/0.15) and trains a
yolov8n student from scratch with `distillkit train-student` first (a few CPU minutes per epoch batch).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BCCD = REPO.parent / "shared" / "data" / "bccd"


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "distillkit", *args, "--quiet"], check=True, cwd=REPO)


def _split(work: Path) -> Path:
    folder = work / "split"
    if not (folder / "test.json").exists():
        _cli("split", str(BCCD / "annotations.json"), "--output-dir", str(folder), "--drop-invalid")
    return folder


def _train(split: Path, work: Path, epochs: int, imgsz: int) -> Path:
    out = work / "student"
    if (out / "best.pt").exists():
        return out / "best.pt"
    settings = ["student.model=yolov8n", f"student.imgsz={imgsz}", "student.batch=16", "student.nbs=16"]
    settings += ["student.workers=0", "student.plots=false"]
    args = ["train-student", "-d", str(split / "train.json"), "-v", str(split / "val.json"), "-o", str(out)]
    args += ["--images-dir", str(BCCD / "images"), "--epochs", str(epochs)]
    for item in settings:
        args += ["--set", item]
    _cli(*args)
    return out / "best.pt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="A BCCD student .pt (trained here when absent).")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8, help="Interleaved latency rounds (6 runs each).")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distillkit-bench-optimize")
    args = parser.parse_args()
    if not BCCD.exists():
        print(f"BCCD not found at {BCCD}", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    split = _split(args.workdir)
    model = args.model or _train(split, args.workdir, args.epochs, args.imgsz)

    from distillkit.export import OptimizeOptions, optimize_model

    options = OptimizeOptions(
        quantize=("int8",),
        int8_recipes=("fast", "conv"),
        calib_data=split / "train.json",
        calib_images=args.calib_images,
        val_data=split / "test.json",
        images_dir=BCCD / "images",
        max_drop=1.0,
        imgsz=args.imgsz,
        threads=args.threads,
        output=args.workdir / "optimized",
        latency_rounds=args.rounds,
    )
    result = optimize_model(model, options)
    rows = {a.name: a for a in result.artefacts}
    torch_ms = rows["pytorch"].latency.median_ms  # type: ignore[union-attr]
    onnx_ms = rows["onnx fp32"].latency.median_ms  # type: ignore[union-attr]
    reference_map = rows["pytorch"].accuracy.value  # type: ignore[union-attr]
    print(f"\nBCCD test split, {result.imgsz} px, batch 1, {result.threads} threads; model {model}")
    print(
        f"{'artefact':22s} {'size MB':>8s} {'median ms':>10s} {'p90 ms':>8s} {'x torch':>8s} {'x onnx':>7s} {'mAP':>7s}"
    )
    for artefact in result.artefacts:
        latency, accuracy = artefact.latency, artefact.accuracy
        assert latency is not None and accuracy is not None
        print(
            f"{artefact.name:22s} {artefact.size_mb:8.2f} {latency.median_ms:10.2f} {latency.p90_ms:8.2f} "
            f"{latency.median_ms / torch_ms:8.2f} {latency.median_ms / onnx_ms:7.2f} {accuracy.value:7.4f}"
        )
    int8 = rows["onnx int8"]
    assert int8.latency is not None and int8.accuracy is not None
    vs_torch, vs_onnx = int8.latency.median_ms / torch_ms, int8.latency.median_ms / onnx_ms
    drop = (reference_map - int8.accuracy.value) * 100
    print(
        f"\nINT8 (default recipe) vs PyTorch fp32: {vs_torch:.2f}x (goal <= 0.5: {'OK' if vs_torch <= 0.5 else 'over'})"
    )
    print(
        f"INT8 (default recipe) vs ONNX fp32:    {vs_onnx:.2f}x (goal <= 0.75: {'OK' if vs_onnx <= 0.75 else 'over'})"
    )
    print(f"test mAP50-95 drop:                   {drop:.2f} points (goal <= 1: {'OK' if drop <= 1 else 'over'})")
    print(f"report: {result.report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
