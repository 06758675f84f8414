"""Overhead of ``distillkit.training.Trainer`` against a hand-written PyTorch loop.

Both train the same small CNN (BatchNorm, dropout) on the same random images with AdamW, the same
batch size and a per-step LambdaLR cosine schedule, in this process, interleaved ``--repeat`` times:

- **baseline**: DataLoader → forward → cross-entropy → backward → step → scheduler step; loss summed
  on the device, read once per epoch.
- **trainer (bare)**: ``Trainer`` with EMA off, no clipping, no output folder.
- **ema+clip**: the full trainer without its output folder (no files written).
- **trainer (full)**: ``Trainer`` with the shipped extras on: EMA, gradient clipping, per-step
  non-finite checks, and per epoch ``last.pt`` + ``metrics.csv`` + TensorBoard.

Prints the best seconds per epoch of each and the ratios to the baseline. Small by default (CPU is
scarce); ``--device cuda`` measures the GPU path (``--amp`` then applies to the trainers).

    .venv/bin/python tests/bench/bench_training.py --samples 512 --epochs 3 --repeat 3
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from distillkit.config.build import section_defaults
from distillkit.training import Trainer


def make_model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, stride=2),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(width, 10),
    )


def make_data(samples: int, imgsz: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, imgsz, imgsz, generator=generator)
    return TensorDataset(x, torch.randint(0, 10, (samples,), generator=generator))


def loss_fn(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    x, y = batch
    return {"loss": nn.functional.cross_entropy(model(x), y)}


def baseline(args: argparse.Namespace, data: TensorDataset, device: torch.device) -> float:
    model = make_model(args.width).to(device)
    loader = DataLoader(data, batch_size=args.batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    total = args.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    started = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        running = torch.zeros((), device=device)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.detach()
        float(running)  # one sync per epoch, as a logging loop would do
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / args.epochs


def trainer_run(
    args: argparse.Namespace, data: TensorDataset, device: torch.device, full: bool, files: bool | None = None
) -> float:
    defaults = section_defaults("training_dynamics")
    dynamics = defaults.model_copy(
        update={
            "epochs": args.epochs,
            "batch_size": args.batch,
            "lr": 1e-3,
            "warmup_epochs": 0.0,
            "num_workers": 0,
            "device": str(device),
            "amp": args.amp,
            "grad_clip_norm": 1.0 if full else None,
            "ema": defaults.ema.model_copy(update={"enabled": full}),  # type: ignore[attr-defined]
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(
            make_model(args.width),
            loss_fn,
            data,
            dynamics=dynamics,
            output_dir=Path(folder) if (full if files is None else files) else None,
        )
        started = time.perf_counter()
        trainer.fit()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / args.epochs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--imgsz", type=int, default=32)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="off", choices=["off", "auto", "bf16", "fp16"])
    args = parser.parse_args()

    device = torch.device(args.device)
    data = make_data(args.samples, args.imgsz)
    trainer_run(args, data, device, full=False)  # warm-up: imports (tensorboard), allocator, kernels
    times: dict[str, list[float]] = {"baseline": [], "trainer (bare)": [], "ema+clip": [], "trainer (full)": []}
    for _ in range(args.repeat):
        times["baseline"].append(baseline(args, data, device))
        times["trainer (bare)"].append(trainer_run(args, data, device, full=False))
        times["ema+clip"].append(trainer_run(args, data, device, full=True, files=False))
        times["trainer (full)"].append(trainer_run(args, data, device, full=True))
    best = {name: min(values) for name, values in times.items()}
    print(
        f"device {device}, {args.samples} images {args.imgsz}px, batch {args.batch}, width {args.width}, "
        f"{args.epochs} epochs, best of {args.repeat}, amp (trainers) {args.amp}"
    )
    for name, seconds in best.items():
        ratio = seconds / best["baseline"]
        print(f"  {name:<15} {seconds * 1000:9.1f} ms/epoch   ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
