"""Benchmark: post-training INT8 vs quantization-aware training (QAT) on BCCD, same run, same machine.

A yolov8n BCCD student at 320 px loses ~0.4 points with optimize's default PTQ (``fast``, per-channel
weights, 7-bit on x86 CPUs without VNNI/AMX), too little to show a recovery. ``--weight-bits 4``
measures a harsher case in one scheme: 4-bit weights (int8 storage), PTQ from the QAT pipeline with 0
epochs (calibration and export only) against QAT; measured, PTQ loses 9.6 points and one QAT epoch
gives 8.6 back. ``--per-tensor`` (one weight scale per convolution, what some NPUs/DSPs require)
turned out no harsher on this model (PTQ -0.4 points).
Rows: mAP50-95 (bbox) on val and test through `evaluate`'s evaluator, latency median per image
(batch 1, --threads, interleaved with the fp32 ONNX file, see distillkit/export/benchmark.py) and the
ratio to it, file size.

    .venv/bin/python tests/bench/bench_qat.py [--model best.pt] [--epochs 3] [--per-tensor] [--data /tmp/bench/semi]
    OMP_NUM_THREADS=1 .venv/bin/python tests/bench/bench_qat.py --weight-bits 4 --epochs 1 --batch 8 --lr 5e-4 \
        --calib-images 32   # the case measured in the README: PTQ -9.6 points, QAT -1.0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO.parent / "shared" / "data" / "bccd" / "images"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/tmp/bench/semi/D_s0_25e/best.pt"))
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench/semi"), help="train/val/test.json folder")
    parser.add_argument("--images-dir", type=Path, default=IMAGES)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--calib-images", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--per-tensor", action="store_true", help="PTQ and QAT with one weight scale per tensor.")
    parser.add_argument(
        "--weight-bits",
        type=int,
        help="Weights in this many bits of int8 for QAT and for a PTQ row made by the same pipeline with 0 epochs.",
    )
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8, help="Interleaved latency rounds (6 runs each).")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distillkit-bench-qat")
    args = parser.parse_args()

    from distillkit.export.accuracy import detection_accuracy
    from distillkit.export.benchmark import measure_latency, onnx_runner
    from distillkit.export.calibration import calibration_images, preprocess_many
    from distillkit.export.onnx_export import export_yolo_onnx, load_source_model
    from distillkit.export.qat import QatSettings, qat_int8
    from distillkit.export.quantize import RECIPES, quantize_static_int8

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    source = load_source_model(args.model)
    metadata = export_yolo_onnx(source, work / "model.onnx")
    paths = calibration_images(args.data / "train.json", None, args.calib_images, images_dir=args.images_dir)
    inputs = preprocess_many(paths, metadata)
    files = {"onnx fp32": work / "model.onnx"}
    fast = RECIPES["fast"]  # 7-bit weights on x86 CPUs without VNNI/AMX (reduce_range auto), 8-bit elsewhere
    recipes = {"ptq fast (default)": fast}
    if args.per_tensor:
        recipes["ptq fast, per-tensor weights"] = replace(fast, name="fast-per-tensor", per_channel=False)
    for name, recipe in recipes.items():
        target = work / f"{recipe.name}.onnx"
        quantize_static_int8(work / "model.onnx", target, metadata, inputs, recipe)
        files[name] = target
    settings = QatSettings(
        epochs=args.epochs, batch=args.batch, lr=args.lr, per_channel=not args.per_tensor, weight_bits=args.weight_bits
    )
    if args.weight_bits:  # PTQ in exactly QAT's scheme: its calibration and export, no training
        ptq = replace(settings, epochs=0)
        same = qat_int8(
            source, args.data / "train.json", work / "ptq_same.onnx", metadata, inputs, ptq, args.images_dir
        )
        files[f"ptq, {args.weight_bits}-bit weights (qat pipeline, 0 epochs)"] = same.path
    start = time.perf_counter()
    result = qat_int8(
        source, args.data / "train.json", work / "model_int8_qat.onnx", metadata, inputs, settings, args.images_dir
    )
    seconds = time.perf_counter() - start
    print(f"qat: trained {result.train_seconds:.0f} s, losses {result.epoch_losses}", flush=True)
    scheme = f"{result.settings.weight_bits}-bit {'per-tensor' if args.per_tensor else 'per-channel'} weights"
    files[f"qat, {scheme}"] = result.path

    runners = {name: onnx_runner(path, args.threads) for name, path in files.items()}
    latency = measure_latency(runners, inputs[:16], rounds=args.rounds)
    accuracy = {
        split: detection_accuracy(
            args.data / f"{split}.json", list(files.values()), "detect", source.imgsz, args.images_dir
        )
        for split in ("val", "test")
    }
    print(f"\n{args.model} at {source.imgsz} px, {args.threads} threads, {len(inputs)} calibration images")
    print(f"QAT: {args.epochs} epochs, batch {args.batch}, lr {args.lr}, weights {result.settings.weight_bits}-bit")
    print(f"{'artefact':52} {'val mAP50-95':>13} {'test mAP50-95':>14} {'median ms':>10} {'x fp32':>7} {'MB':>6}")
    reference = latency["onnx fp32"].median_ms
    for index, (name, path) in enumerate(files.items()):
        val, test = accuracy["val"][index].value, accuracy["test"][index].value
        ms = latency[name].median_ms
        size = path.stat().st_size / 1e6
        print(f"{name:52} {val:13.4f} {test:14.4f} {ms:10.1f} {ms / reference:7.2f} {size:6.2f}")
    print(f"QAT took {seconds:.0f} s in all (calibration, data, training {result.train_seconds:.0f} s, export)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
