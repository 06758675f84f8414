"""Teacher benchmarks: labelling throughput (one pass for all classes vs one pass per class) and
peak memory of LoRA training vs full fine-tuning, on a tiny random-weight Grounding DINO.

    .venv/bin/python tests/bench/bench_teacher.py                     # modest defaults
    .venv/bin/python tests/bench/bench_teacher.py --images 48 --batch 8 --repeats 3 --steps 5

Throughput: the same trained adapter labels the same images (3 classes) twice per repeat,
interleaved: through ``DistilledTeacher.predict`` (one prompt "red . green . blue .", one forward
per batch) and through a baseline that runs one single-class prompt per class per batch (what a
per-class open-vocabulary loop does), best of ``--repeats``. Memory: each variant runs in a fresh
process; the peak resident set (VmHWM, reset through /proc/self/clear_refs just before training)
minus the resident set at that moment is the memory the training steps added.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def memory_child(weights: str, data: str, mode: str, steps: int, batch: int, size: int) -> dict[str, float]:
    """Run in a subprocess: ``steps`` training steps, LoRA or full fine-tuning; report memory."""
    import torch

    from distillkit.config import build_config, section_defaults
    from distillkit.data.validate import load_valid_dataset
    from distillkit.teachers.grounding_dino.data import (
        GroundingDinoCollator,
        GroundingDinoDataset,
        detection_samples,
        locate_images,
    )
    from distillkit.teachers.grounding_dino.loss import GroundingDinoLoss
    from distillkit.teachers.grounding_dino.model import load_base
    from distillkit.teachers.grounding_dino.prompt import build_prompt
    from distillkit.teachers.grounding_dino.train import make_compute_loss, prepare_model

    torch.set_num_threads(1)
    train = load_valid_dataset(data)
    overrides = [
        f"teacher_grounding_dino_lora.weights={weights}",
        f"teacher_grounding_dino_lora.shortest_edge={size}",
        f"teacher_grounding_dino_lora.longest_edge={size}",
    ]
    config = build_config(
        ["preprocessing", "teacher_grounding_dino_lora"],
        dataset_info=train.info,
        dataset_path=data,
        overrides=overrides,
    )
    if mode == "lora":
        bundle, prompt = prepare_model(config)
    else:
        bundle = load_base(config.teacher_grounding_dino_lora, config.preprocessing)
        prompt = build_prompt(config.data.class_names)
        for parameter in bundle.model.parameters():
            parameter.requires_grad_(True)
    model = bundle.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    samples = detection_samples(train.dataset, train.info.class_mapping, locate_images(train.dataset, Path(data), None))
    dataset = GroundingDinoDataset(samples)
    collate = GroundingDinoCollator(bundle.processor, prompt.text)
    batches = [collate([dataset[(i * batch + j) % len(dataset)] for j in range(batch)]) for i in range(steps)]
    compute = make_compute_loss(GroundingDinoLoss(section_defaults("teacher_grounding_dino_lora").loss))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS watermark to the current RSS
    before = _rss_kib("VmRSS")
    started = time.perf_counter()
    for step_batch in batches:
        loss = compute(model, step_batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - started
    return {
        "trainable_params": sum(p.numel() for p in params),
        "total_params": sum(p.numel() for p in model.parameters()),
        "peak_added_mib": (_rss_kib("VmHWM") - before) / 1024,
        "peak_rss_mib": _rss_kib("VmHWM") / 1024,
        "s_per_step": elapsed / max(1, steps),
    }


def per_class_predict(teacher, images, batch_size):  # type: ignore[no-untyped-def]
    """Baseline: one single-class prompt per class per batch (C forward passes per batch)."""
    from distillkit.teachers.grounding_dino.data import read_rgb
    from distillkit.teachers.grounding_dino.predict import predict_boxes

    phrases = teacher.dino_record["phrases"]
    count = 0
    for start in range(0, len(images), batch_size):
        pixels = [read_rgb(p) for p in images[start : start + batch_size]]
        for phrase in phrases:
            predict_boxes(
                teacher.dino.model,
                teacher.dino.processor,
                f"{phrase} .",
                1,
                pixels,
                teacher.device,
                teacher.box_threshold,
                teacher.text_threshold,
            )
        count += len(pixels)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="images labelled per measurement")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels (and teacher input size)")
    parser.add_argument("--batch", type=int, default=8, help="labelling batch size")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for throughput")
    parser.add_argument("--steps", type=int, default=4, help="training steps for the memory measurement")
    parser.add_argument("--train-batch", type=int, default=4, help="training batch for the memory measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for throughput")
    parser.add_argument("--memory-child", nargs=3, metavar=("WEIGHTS", "DATA", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        weights, data, mode = args.memory_child
        print(json.dumps(memory_child(weights, data, mode, args.steps, args.train_batch, args.size)))
        return

    import torch

    from distillkit.teachers import load_teacher, train_teachers
    from tests.tiny_teachers import write_shapes_dataset, write_tiny_grounding_dino

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_teacher_") as tmp:
        root = Path(tmp)
        weights = write_tiny_grounding_dino(root / "weights", image_size=args.size)
        train = write_shapes_dataset(root / "data", 4, "boxes", size=args.size, seed=0, name="train.json")
        val = write_shapes_dataset(root / "data", 2, "boxes", size=args.size, seed=1, name="val.json")
        write_shapes_dataset(root / "data", args.images, "boxes", size=args.size, seed=7, name="label.json")
        images = sorted((root / "data" / "images").glob("img_7_*.png"))
        overrides = [
            f"teacher_grounding_dino_lora.weights={weights}",
            "teacher_grounding_dino_lora.epochs=1",
            f"teacher_grounding_dino_lora.shortest_edge={args.size}",
            f"teacher_grounding_dino_lora.longest_edge={args.size}",
            "training_dynamics.num_workers=0",
            "augmentation.intensity=none",
        ]
        train_teachers(train, val, root / "exp", overrides=overrides, device="cpu")
        teacher = load_teacher(root / "exp", device="cpu", batch_size=args.batch, box_threshold=0.0)
        classes = len(teacher.class_names)
        teacher.predict(images[: args.batch])  # warm-up
        one_pass, per_class = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            teacher.predict(images)
            one_pass.append(len(images) / (time.perf_counter() - started))
            started = time.perf_counter()
            per_class_predict(teacher, images, args.batch)
            per_class.append(len(images) / (time.perf_counter() - started))
        best_one, best_per = max(one_pass), max(per_class)
        print(f"labelling, {classes} classes, {len(images)} images of {args.size} px, batch {args.batch}:")
        print(
            f"  one pass for all classes : {best_one:8.2f} images/s  (runs: {', '.join(f'{v:.2f}' for v in one_pass)})"
        )
        print(
            f"  one pass per class       : {best_per:8.2f} images/s  (runs: {', '.join(f'{v:.2f}' for v in per_class)})"
        )
        print(f"  ratio                    : {best_one / best_per:8.2f}x  (goal >= 2.5x for 3 classes)")

        results = {}
        for mode in ("lora", "full"):
            command = [sys.executable, __file__, "--memory-child", str(weights), str(train), mode]
            command += ["--steps", str(args.steps), "--train-batch", str(args.train_batch), "--size", str(args.size)]
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        lora, full = results["lora"], results["full"]
        print(
            f"training memory, {args.steps} steps of batch {args.train_batch} at {args.size} px (fresh process each):"
        )
        for name, row in (("LoRA", lora), ("full fine-tuning", full)):
            share = 100 * row["trainable_params"] / row["total_params"]
            print(
                f"  {name:17s}: peak +{row['peak_added_mib']:7.1f} MiB over the loaded model "
                f"(peak RSS {row['peak_rss_mib']:.0f} MiB), trainable {row['trainable_params']:,} "
                f"({share:.1f}%), {row['s_per_step']:.3f} s/step"
            )
        ratio = lora["peak_added_mib"] / full["peak_added_mib"] if full["peak_added_mib"] > 0 else float("nan")
        print(f"  LoRA / full peak added   : {ratio:8.2f}x")


if __name__ == "__main__":
    main()
