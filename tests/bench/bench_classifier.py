"""Benchmark: `train-classifier` on scikit-learn's digits against the SVC of scikit-learn's example.

scikit-learn ships ``load_digits()`` (1797 8x8 grey digits). The script writes them as PNG files in a
class-per-folder tree, splits them 75/25 (stratified, seeded), and in the same run:

- **baseline**: ``SVC(gamma=0.001)`` exactly as in scikit-learn's "Recognizing hand-written digits"
  example — on the example's own split (first half train, second half test; 0.969 documented) and on
  this benchmark's 75/25 split;
- **distillkit**: ``distillkit train-classifier`` (CLI, subprocess, CPU) on the 75% tree (it holds out
  20% of it for validation / early stopping / temperature scaling), then ``distillkit evaluate`` on the
  25% test tree: accuracy, ECE before and after temperature scaling, training wall time.

    .venv/bin/python tests/bench/bench_classifier.py [--model resnet10t] [--epochs 20] [--imgsz 32]

Exit code 0 when accuracy >= --goal (0.985) and training took < --max-minutes (10); 1 otherwise
(``--no-fail`` only reports).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_digits(root: Path, seed: int) -> tuple[Path, Path, dict[str, float]]:
    """Train/test class-per-folder trees (75/25 stratified) and the SVC baselines."""
    from PIL import Image
    from sklearn import datasets, svm
    from sklearn.model_selection import train_test_split

    digits = datasets.load_digits()
    n = len(digits.images)
    flat = digits.images.reshape((n, -1))
    # The documented example: 50/50 without shuffling, SVC(gamma=0.001) -> 0.969.
    half = n // 2
    documented = svm.SVC(gamma=0.001).fit(flat[:half], digits.target[:half]).score(flat[half:], digits.target[half:])
    index = np.arange(n)
    train_idx, test_idx = train_test_split(index, test_size=0.25, stratify=digits.target, random_state=seed)
    same_split = svm.SVC(gamma=0.001).fit(flat[train_idx], digits.target[train_idx])
    svc_same = same_split.score(flat[test_idx], digits.target[test_idx])
    for split, indices in (("train", train_idx), ("test", test_idx)):
        for i in indices:
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)  # 0-16 grey levels
            Image.fromarray(pixels, mode="L").convert("RGB").save(folder / f"{i:04d}.png")
    return root / "train", root / "test", {"svc_documented_split": documented, "svc_same_split": svc_same}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet10t", help="timm model name")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--imgsz", type=int, default=32, help="8x8 digits are upsampled to this size")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a busy CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--goal", type=float, default=0.985)
    parser.add_argument("--max-minutes", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-fail", action="store_true")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="distillkit-bench-classifier-"))
    train, test, baseline = write_digits(work / "digits", args.seed)
    exp = work / "exp"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    settings = [
        f"training_dynamics.lr={args.lr}",
        "training_dynamics.weight_decay=0.05",
        "training_dynamics.warmup_epochs=2",
        "training_dynamics.num_workers=0",
        "training_dynamics.early_stopping_patience=15",
        "training_dynamics.ema.decay=0.999",
        "augmentation.intensity=none",
        "classifier.pretrained=false",
        "classifier.drop_rate=0.1",
        "classifier.topk=[1,2]",
    ]
    command = [
        sys.executable, "-m", "distillkit", "train-classifier", "--data", str(train), "--output", str(exp),
        "--model", args.model, "--epochs", str(args.epochs), "--batch", str(args.batch),
        "--imgsz", str(args.imgsz), "--device", "cpu", "--json",
    ]  # fmt: skip
    for setting in settings:
        command += ["--set", setting]
    started = time.perf_counter()
    training = subprocess.run(command, capture_output=True, text=True, env=env)
    train_s = time.perf_counter() - started
    if training.returncode != 0:
        print(training.stderr[-3000:], file=sys.stderr)
        return 2
    trained = json.loads(training.stdout)
    evaluation = subprocess.run(
        [sys.executable, "-m", "distillkit", "evaluate", "--data", str(test), "--model", str(exp / "best.pt"),
         "--device", "cpu", "--top-k", "1", "--top-k", "2", "--output", str(exp / "eval"), "--json"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if evaluation.returncode != 0:
        print(evaluation.stderr[-3000:], file=sys.stderr)
        return 2
    metrics = json.loads(evaluation.stdout)
    accuracy = metrics["accuracy"]
    print(f"digits: {sum(1 for _ in train.rglob('*.png'))} train / {sum(1 for _ in test.rglob('*.png'))} test images")
    print(f"model {args.model}, {trained['epochs_run']} epochs (best {trained['best_epoch']}), {args.imgsz} px, CPU")
    print(f"SVC(gamma=0.001), documented 50/50 split : {baseline['svc_documented_split']:.4f}")
    print(f"SVC(gamma=0.001), this 75/25 split       : {baseline['svc_same_split']:.4f}")
    print(f"distillkit test accuracy                 : {accuracy:.4f}  (goal {args.goal})")
    print(f"  ratio to SVC same split                : {accuracy / baseline['svc_same_split']:.4f}")
    print(f"  top-2 accuracy                         : {metrics['top_k'].get('2', float('nan')):.4f}")
    print(f"  macro F1                               : {metrics['macro_f1']:.4f}")
    print(f"  ECE before temperature scaling         : {metrics['ece_uncalibrated']:.4f}")
    temperature = trained["calibration"]["temperature"]
    print(f"  ECE after temperature scaling          : {metrics['ece']:.4f}  (T={temperature:.3f})")
    print(f"  training wall time                     : {train_s / 60:.2f} min (limit {args.max_minutes})")
    print(f"outputs: {exp}")
    ok = accuracy >= args.goal and train_s / 60 < args.max_minutes
    return 0 if ok or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
