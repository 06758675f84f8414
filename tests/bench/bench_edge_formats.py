"""Benchmark: every edge format `optimize` writes, on real data — latency and mAP50-95 in one run.

Issue 16's matrix: PyTorch, ONNX fp32/INT8, OpenVINO fp32/INT8, TFLite fp16/INT8 (when the extras are
installed) for two students at 320 px, batch 1, ``--threads`` threads, artefacts timed interleaved
(``distillkit/export/benchmark.py``):

- BCCD yolov8n detector (test split mAP50-95);
- fruits_nuts yolov8n-seg (mask mAP50-95; 18 images only, so the model is trained and scored on all of
  them: the figure is the *drop* of each artefact against its own PyTorch model, not generalisation).

Goals printed against the figures: OpenVINO INT8 <= 0.4x onnxruntime fp32 latency with <= 1 point
drop; TFLite INT8 within 1 point. Every artefact's metadata and single input are verified by
`optimize` itself as it writes them; the matrix and the latency spread (p90 / median, per-round
medians) come from ``report.json``.

    .venv/bin/python tests/bench/bench_edge_formats.py [--bccd-model best.pt] [--seg-model best.pt]
        [--rounds 10] [--threads 2] [--workdir /tmp/distillkit-bench-edge]

Without a model it trains one with `distillkit train-student` first (BCCD: 15 epochs, a few CPU minutes
per epoch batch; fruits_nuts: 60 epochs, about 5 minutes).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
BCCD = DATA / "bccd"
FRUITS = DATA / "fruits_nuts"


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "distillkit", *args, "--quiet"], check=True, cwd=REPO)


def _train(data: Path, val: Path, images: Path, out: Path, model: str, epochs: int, imgsz: int) -> Path:
    if (out / "best.pt").exists():
        return out / "best.pt"
    settings = [f"student.model={model}", f"student.imgsz={imgsz}", "student.batch=16", "student.nbs=16"]
    settings += ["student.workers=0", "student.plots=false"]
    args = ["train-student", "-d", str(data), "-v", str(val), "-o", str(out)]
    args += ["--images-dir", str(images), "--epochs", str(epochs)]
    for item in settings:
        args += ["--set", item]
    _cli(*args)
    return out / "best.pt"


def _bccd(work: Path, imgsz: int) -> tuple[Path, Path, Path]:
    """(calibration COCO, test COCO, images) of the seeded stratified BCCD split."""
    split = work / "bccd_split"
    if not (split / "test.json").exists():
        _cli("split", str(BCCD / "annotations.json"), "--output-dir", str(split), "--drop-invalid")
    return split / "train.json", split / "test.json", BCCD / "images"


def _formats() -> tuple[str, ...]:
    from distillkit.export.optimize import FORMATS

    wanted = ["onnx"]
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
        wanted.append("openvino")
    else:
        print('OpenVINO rows skipped: pip install "distillkit[openvino]"')
    if "tflite" in FORMATS and importlib.util.find_spec("ai_edge_litert"):
        wanted.append("tflite")
    else:
        print("TFLite rows skipped: the tflite extra is not installed (or optimize has no -f tflite)")
    return tuple(wanted)


def _measure(name: str, model: Path, calib: Path, val: Path, images: Path, args: argparse.Namespace) -> None:
    from distillkit.export import OptimizeOptions, optimize_model

    options = OptimizeOptions(
        formats=_formats(),
        quantize=("int8", "fp16"),
        calib_data=calib,
        calib_images=args.calib_images,
        val_data=val,
        images_dir=images,
        max_drop=1.0,
        force=True,
        imgsz=args.imgsz,
        threads=args.threads,
        output=args.workdir / f"optimized_{name.replace(' ', '_')}",
        latency_rounds=args.rounds,
    )
    result = optimize_model(model, options)
    rows = {artefact.name: artefact for artefact in result.artefacts}
    onnx_ms = rows["onnx fp32"].latency.median_ms  # type: ignore[union-attr]
    torch_ms = rows["pytorch"].latency.median_ms  # type: ignore[union-attr]
    print(f"\n{name}: {result.task}, {result.imgsz} px, batch 1, {result.threads} threads, {args.rounds} rounds")
    header = f"{'artefact':18s} {'MB':>6s} {'median':>8s} {'p90':>7s} {'spread':>6s} {'x torch':>7s} {'x ort32':>7s}"
    print(header + f" {'mAP50-95':>8s} {'drop':>6s}")
    for artefact in result.artefacts:
        latency, accuracy = artefact.latency, artefact.accuracy
        assert latency is not None and accuracy is not None
        drop = (rows["pytorch"].accuracy.value - accuracy.value) * 100  # type: ignore[union-attr]
        print(
            f"{artefact.name:18s} {artefact.size_mb:6.2f} {latency.median_ms:8.2f} {latency.p90_ms:7.2f} "
            f"{latency.spread:6.2f} {latency.median_ms / torch_ms:7.2f} {latency.median_ms / onnx_ms:7.2f} "
            f"{accuracy.value:8.4f} {drop:6.2f}"
        )
    for label, row_name, ratio_goal in (("OpenVINO INT8", "openvino int8", 0.4), ("TFLite INT8", "tflite int8", None)):
        artefact = rows.get(row_name)
        if artefact is None or artefact.latency is None or artefact.accuracy is None:
            continue
        ratio = artefact.latency.median_ms / onnx_ms
        baseline = rows["onnx fp32"].latency
        assert baseline is not None
        rounds = [a / b for a, b in zip(artefact.latency.round_medians_ms, baseline.round_medians_ms, strict=True)]
        drop = (rows["pytorch"].accuracy.value - artefact.accuracy.value) * 100  # type: ignore[union-attr]
        spread = f"per-round {min(rounds):.2f}-{max(rounds):.2f}"
        if ratio_goal is not None:
            verdict = "OK" if ratio <= ratio_goal else "over"
            print(f"{label} vs onnxruntime fp32: {ratio:.2f}x ({spread}; goal <= {ratio_goal}: {verdict})")
        else:
            print(f"{label} vs onnxruntime fp32: {ratio:.2f}x ({spread})")
        print(f"{label} mAP50-95 drop: {drop:.2f} points (goal <= 1: {'OK' if drop <= 1 else 'over'})")
    for notice in result.notices:
        print(f"notice: {notice}")
    print(f"report: {result.report_path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bccd-model", type=Path, help="A BCCD yolov8n student .pt (trained here when absent).")
    parser.add_argument("--seg-model", type=Path, help="A fruits_nuts yolov8n-seg student .pt (trained when absent).")
    parser.add_argument("--only", choices=("bccd", "fruits"), help="Measure one model only.")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10, help="Interleaved latency rounds (6 runs each).")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distillkit-bench-edge")
    args = parser.parse_args()
    if not BCCD.exists() or not FRUITS.exists():
        print(f"BCCD or fruits_nuts not found under {DATA}", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "bccd"):
        calib, test, images = _bccd(args.workdir, args.imgsz)
        model = args.bccd_model or _train(
            calib, calib.with_name("val.json"), images, args.workdir / "bccd_student", "yolov8n", 15, args.imgsz
        )
        _measure("bccd yolov8n", model, calib, test, images, args)
    if args.only in (None, "fruits"):
        trainval = FRUITS / "trainval.json"
        model = args.seg_model or _train(
            trainval, trainval, FRUITS / "images", args.workdir / "fruits_student", "yolov8n-seg", 60, args.imgsz
        )
        _measure("fruits_nuts yolov8n-seg", model, trainval, trainval, FRUITS / "images", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
