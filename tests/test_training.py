"""The shared training loop (distillkit.training) on tiny models and random tensors."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from distillkit.config.build import section_defaults
from distillkit.config.schema import CheckpointingConfig, TrainingDynamicsConfig
from distillkit.errors import DataError, DistillkitError, UsageError
from distillkit.training import (
    FitResult,
    Trainer,
    TrainingDiverged,
    is_main_process,
    load_checkpoint,
    lr_factor_fn,
    move_to_device,
    resolve_device,
    shard,
    world_info,
)
from distillkit.training.trainable import frozen_norm_modules, tracked_state_dict

REPO_ROOT = Path(__file__).resolve().parents[1]


def dynamics(**update: Any) -> TrainingDynamicsConfig:
    base = {"epochs": 3, "batch_size": 8, "lr": 1e-2, "num_workers": 0, "device": "cpu", "warmup_epochs": 0.0}
    base.update(update)
    return section_defaults("training_dynamics").model_copy(update=base)  # type: ignore[return-value]


def checkpointing(**update: Any) -> CheckpointingConfig:
    return section_defaults("checkpointing").model_copy(update=update)  # type: ignore[return-value]


def toy_data(n: int = 48, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def mlp(seed: int = 0, dropout: float = 0.2, batchnorm: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(6, 16)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2)]
    return nn.Sequential(*layers)


class TinyCNN(nn.Module):
    """A frozen-able conv 'backbone' with BatchNorm and a trainable head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean(dim=(2, 3)))


def image_data(n: int = 24) -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 8, 8, generator=generator)
    return TensorDataset(x, (x.mean(dim=(1, 2, 3)) > 0).long())


def cross_entropy(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    x, y = batch
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    return {"loss": loss, "acc": (logits.argmax(1) == y).float().mean()}


def scripted_metric(values: list[float], name: str = "val/score"):
    """An evaluate() returning the given values epoch after epoch."""
    calls = iter(values)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {name: next(calls)}

    return evaluate


def accuracy_on(data: TensorDataset):
    x, y = data.tensors

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"val/accuracy": (model(x).argmax(1) == y).float().mean().item()}

    return evaluate


def state_equal(a: Any, b: Any) -> bool:
    """Bit-exact comparison of nested state (tensors compared with torch.equal)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(state_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# ----------------------------------------------------------------------------------------- basics


def test_loss_falls_and_files_are_written(tmp_path: Path) -> None:
    data = toy_data(64)
    x, y = data.tensors

    def evaluate(model: nn.Module) -> dict[str, float]:
        assert not model.training and not torch.is_grad_enabled()
        return {"val/accuracy": (model(x).argmax(1) == y).float().mean().item()}

    result = Trainer(
        mlp(),
        cross_entropy,
        data,
        evaluate=evaluate,
        dynamics=dynamics(epochs=8, lr=2e-2),
        checkpointing=checkpointing(),
        output_dir=tmp_path,
        monitor="val/accuracy",
        extra_state={"class_names": ["neg", "pos"]},
    ).fit()

    assert isinstance(result, FitResult)
    assert result.epochs_run == 8 and not result.stopped_early and not result.diverged
    losses = [row["train/loss"] for row in result.history]
    assert losses[-1] < 0.75 * losses[0]
    assert result.history[-1]["val/accuracy"] > 0.8
    assert {"epoch", "lr", "train/loss", "train/acc", "val/accuracy", "time/epoch_s"} <= set(result.history[0])

    rows = list(csv.DictReader(result.metrics_csv.open()))  # type: ignore[union-attr]
    assert [int(row["epoch"]) for row in rows] == list(range(1, 9))
    assert float(rows[0]["train/loss"]) == losses[0]  # written with full precision
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert result.last_checkpoint == tmp_path / "checkpoints" / "last.pt"
    state = load_checkpoint(result.last_checkpoint)
    assert state["epoch"] == 8 and state["extra"] == {"class_names": ["neg", "pos"]}
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_lr_schedule_values_at_known_steps() -> None:
    cosine = lr_factor_fn("cosine", total_steps=101, warmup_steps=10, warmup_lr_ratio=0.1, min_lr_ratio=0.01)
    assert cosine(0) == pytest.approx(0.1)
    assert cosine(5) == pytest.approx(0.55)
    assert cosine(10) == pytest.approx(1.0)
    assert cosine(55) == pytest.approx(0.505)  # half way down the cosine: (1 + 0.01) / 2
    assert cosine(100) == pytest.approx(0.01)
    linear = lr_factor_fn("linear", 101, 10, 0.1, 0.01)
    assert linear(10) == 1.0 and linear(40) == pytest.approx(1 - 0.99 * 30 / 90)
    assert linear(100) == pytest.approx(0.01)
    constant = lr_factor_fn("constant", 101, 10, 0.1, 0.01)
    assert constant(5) == pytest.approx(0.55) and constant(100) == 1.0
    onecycle = lr_factor_fn("onecycle", 100, 0, 0.1, 0.01)  # no warm-up given: 30 % rise
    assert onecycle(0) == pytest.approx(0.1) and onecycle(15) == pytest.approx(0.55) and onecycle(30) == 1.0
    assert onecycle(99) == pytest.approx(0.01)


def test_trainer_steps_the_schedule_per_optimiser_step(tmp_path: Path) -> None:
    # 48 samples / batch 6 = 8 batches, accumulation 2 -> 4 optimiser steps per epoch, 12 in all;
    # warm-up 1 epoch = 4 steps. The row's lr is the lr of the epoch's last optimiser step.
    trainer = Trainer(
        mlp(),
        cross_entropy,
        toy_data(48),
        dynamics=dynamics(epochs=3, batch_size=6, grad_accumulation=2, lr=0.1, warmup_epochs=1.0, warmup_lr_ratio=0.2),
        output_dir=None,
    )
    result = trainer.fit()
    assert trainer.steps_per_epoch == 4 and trainer.global_step == 12
    factor = lr_factor_fn("cosine", 12, 4, 0.2, 0.01)
    assert result.history[0]["lr"] == pytest.approx(0.1 * factor(3))
    assert result.history[0]["lr"] == pytest.approx(0.1 * (0.2 + 0.8 * 3 / 4))
    assert result.history[2]["lr"] == pytest.approx(0.1 * 0.01)


def test_grad_accumulation_matches_a_large_batch() -> None:
    def train(batch_size: int, accumulation: int) -> dict[str, torch.Tensor]:
        model = mlp(dropout=0.0, batchnorm=False)
        settings = dynamics(
            epochs=2,
            batch_size=batch_size,
            grad_accumulation=accumulation,
            optimizer="sgd",
            momentum=0.0,
            weight_decay=0.0,
            scheduler="constant",
            grad_clip_norm=None,
            ema=section_defaults("training_dynamics").ema.model_copy(update={"enabled": False}),  # type: ignore[attr-defined]
        )
        Trainer(model, cross_entropy, toy_data(48), dynamics=settings).fit()
        return tracked_state_dict(model)

    large, accumulated, small = train(16, 1), train(4, 4), train(4, 1)
    for key in large:
        torch.testing.assert_close(accumulated[key], large[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(small[key], large[key], atol=1e-4) for key in large)


# ----------------------------------------------------------------------------------------- resume


class InterruptAt:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _resume_run(output_dir: Path, interrupt: bool) -> Trainer:
    def make(callbacks: Any = None) -> Trainer:
        return Trainer(
            mlp(),
            cross_entropy,
            toy_data(40),  # 5 batches of 8: the shuffle order matters
            evaluate=accuracy_on(toy_data(16, seed=1)),
            dynamics=dynamics(epochs=4, warmup_epochs=1.0),
            checkpointing=checkpointing(monitor="train/loss", mode="min"),
            output_dir=output_dir,
            callbacks=callbacks,
        )

    if not interrupt:
        trainer = make()
        trainer.fit()
        return trainer
    first = make(InterruptAt(epoch=3))
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert load_checkpoint(output_dir / "checkpoints" / "last.pt")["epoch"] == 2
    second = make()
    result = second.fit(resume=True)
    assert result.resumed_from == output_dir / "checkpoints" / "last.pt"
    return second


def test_resume_after_interruption_is_bit_identical(tmp_path: Path) -> None:
    straight = _resume_run(tmp_path / "straight", interrupt=False)
    resumed = _resume_run(tmp_path / "resumed", interrupt=True)

    assert state_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert state_equal(straight.optimizer.state_dict(), resumed.optimizer.state_dict())  # type: ignore[union-attr]
    assert state_equal(straight.scheduler.state_dict(), resumed.scheduler.state_dict())  # type: ignore[union-attr]
    assert straight.ema is not None and resumed.ema is not None
    assert state_equal(straight.ema.shadow, resumed.ema.shadow)
    last_a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    last_b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert state_equal(last_a["model"], last_b["model"]) and state_equal(last_a["optimizer"], last_b["optimizer"])
    assert [row["train/loss"] for row in last_a["history"]] == [row["train/loss"] for row in last_b["history"]]
    assert last_b["epoch"] == 4 and last_b["global_step"] == 20
    rows = list(csv.DictReader((tmp_path / "resumed" / "metrics.csv").open()))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]


def test_resume_of_a_finished_run_trains_nothing(tmp_path: Path) -> None:
    first = Trainer(mlp(), cross_entropy, toy_data(16), dynamics=dynamics(epochs=2), output_dir=tmp_path)
    first.fit()
    again = Trainer(mlp(seed=5), cross_entropy, toy_data(16), dynamics=dynamics(epochs=2), output_dir=tmp_path)
    result = again.fit(resume=True)
    assert result.epochs_run == 2 and again.global_step == first.global_step
    assert state_equal(first.model.state_dict(), again.model.state_dict())


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    trainer = Trainer(mlp(), cross_entropy, toy_data(16), dynamics=dynamics(), output_dir=tmp_path)
    with pytest.raises(UsageError, match=r"nothing to resume: .*last\.pt does not exist"):
        trainer.fit(resume=True)


# ---------------------------------------------------------------------------- checkpoints, stopping


def test_checkpoint_retention_and_best_selection(tmp_path: Path) -> None:
    scores = [0.1, 0.5, 0.3, 0.4, 0.2, 0.45, 0.0]
    result = Trainer(
        mlp(),
        cross_entropy,
        toy_data(16),
        evaluate=scripted_metric(scores),
        dynamics=dynamics(epochs=7, early_stopping_patience=0),
        checkpointing=checkpointing(save_every_n_epochs=2, keep_last_n=2),
        output_dir=tmp_path,
        monitor="val/score",
    ).fit()
    folder = tmp_path / "checkpoints"
    assert sorted(path.name for path in folder.iterdir()) == ["best.pt", "epoch_4.pt", "epoch_6.pt", "last.pt"]
    assert result.epoch_checkpoints == [folder / "epoch_4.pt", folder / "epoch_6.pt"]
    assert result.best_epoch == 2 and result.best_value == 0.5 and result.mode == "max"
    best = load_checkpoint(folder / "best.pt")
    assert best["epoch"] == 2 and best["best_value"] == 0.5
    assert load_checkpoint(folder / "epoch_6.pt")["epoch"] == 6
    assert load_checkpoint(folder / "last.pt")["epoch"] == 7


def test_min_mode_and_no_files_without_save_flags(tmp_path: Path) -> None:
    result = Trainer(
        mlp(),
        cross_entropy,
        toy_data(16),
        evaluate=scripted_metric([0.9, 0.4, 0.7], name="val/loss"),
        dynamics=dynamics(epochs=3),
        checkpointing=checkpointing(save_last=False, save_best=False),
        output_dir=tmp_path,
        monitor="val/loss",
    ).fit()
    assert result.mode == "min" and result.best_epoch == 2 and result.final_weights == "best"
    assert result.last_checkpoint is None and result.best_checkpoint is None
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("min_delta", "expected_epochs"),
    [(0.0, 6), (0.05, 3)],
)
def test_early_stopping_with_patience_and_min_delta(tmp_path: Path, min_delta: float, expected_epochs: int) -> None:
    # Small gains: 0.02 each epoch until epoch 4, then flat. Patience 2.
    scores = [0.50, 0.52, 0.54, 0.56, 0.56, 0.56, 0.56, 0.56, 0.56, 0.56]
    result = Trainer(
        mlp(),
        cross_entropy,
        toy_data(16),
        evaluate=scripted_metric(scores),
        dynamics=dynamics(epochs=10, early_stopping_patience=2, early_stopping_min_delta=min_delta),
        output_dir=tmp_path,
        monitor="val/score",
    ).fit()
    assert result.stopped_early and result.epochs_run == expected_epochs
    assert result.best_epoch == (4 if min_delta == 0 else 1)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["stopped_early"] is True


def test_best_weights_are_restored_at_the_end(tmp_path: Path) -> None:
    model = mlp()
    result = Trainer(
        model,
        cross_entropy,
        toy_data(32),
        evaluate=scripted_metric([0.2, 0.9, 0.3, 0.4]),
        dynamics=dynamics(epochs=4, early_stopping_patience=0),
        output_dir=tmp_path,
        monitor="val/score",
    ).fit()
    assert result.best_epoch == 2 and result.final_weights == "best"
    fresh = mlp(seed=3)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt", fresh)  # EMA weights: what was evaluated
    assert state_equal(model.state_dict(), fresh.state_dict())
    last = mlp(seed=3)
    load_checkpoint(tmp_path / "checkpoints" / "last.pt", last)
    assert not state_equal(model.state_dict(), last.state_dict())
    assert best["ema"] is not None and not model.training


def test_monitor_missing_from_metrics_is_a_config_error(tmp_path: Path) -> None:
    without_evaluate = Trainer(
        mlp(), cross_entropy, toy_data(16), dynamics=dynamics(), checkpointing=checkpointing(monitor="val/accuracy")
    )
    with pytest.raises(DistillkitError, match="monitor is 'val/accuracy' but this run evaluates nothing"):
        without_evaluate.fit()
    trainer = Trainer(
        mlp(), cross_entropy, toy_data(16), evaluate=scripted_metric([0.1]), dynamics=dynamics(), monitor="val/map50"
    )
    with pytest.raises(DistillkitError, match=r"monitored metric 'val/map50' is not among .*val/score"):
        trainer.fit()


# ---------------------------------------------------------------------------------------- guards


def test_nan_loss_raises_training_diverged(tmp_path: Path) -> None:
    calls = {"n": 0}

    def poisoned(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        terms = cross_entropy(model, batch)
        if calls["n"] == 2 * 3 + 2:  # 3 batches per epoch: call 8 is epoch 3's 2nd batch
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    trainer = Trainer(mlp(), poisoned, toy_data(24), dynamics=dynamics(epochs=4), output_dir=tmp_path)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    assert str(info.value) == (
        "loss became nan at epoch 3, step 2; lower training_dynamics.lr or set training_dynamics.grad_clip_norm"
    )
    assert info.value.exit_code == 1 and info.value.result is not None and info.value.result.diverged
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_infinite_gradient_is_reported_and_stop_mode_returns(tmp_path: Path) -> None:
    def make() -> nn.Module:
        model = mlp()
        # a finite loss whose gradient overflows: the hook turns the first layer's gradient into inf
        model[0].weight.register_hook(lambda grad: grad + float("inf"))  # type: ignore[index]
        return model

    result = Trainer(
        make(), cross_entropy, toy_data(16), dynamics=dynamics(grad_clip_norm=None), on_divergence="stop"
    ).fit()
    assert result.diverged and result.epochs_run == 0
    with pytest.raises(TrainingDiverged, match=r"^gradient norm became inf at epoch 1, step 1; lower"):
        Trainer(make(), cross_entropy, toy_data(16), dynamics=dynamics(grad_clip_norm=None)).fit()
    with pytest.raises(TrainingDiverged, match=r"^gradient norm became (inf|nan) at epoch 1, step 1"):
        Trainer(make(), cross_entropy, toy_data(16), dynamics=dynamics(grad_clip_norm=1.0)).fit()


def test_frozen_batchnorm_stays_in_eval_and_keeps_its_statistics() -> None:
    model = TinyCNN()
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    frozen_bn, trainable_bn = model.backbone[1], model.head[1]
    before = {k: v.clone() for k, v in frozen_bn.state_dict().items()}
    trainable_before = trainable_bn.running_mean.clone()
    modes: list[tuple[bool, bool]] = []

    def loss(m: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        modes.append((frozen_bn.training, trainable_bn.training))
        return cross_entropy(m, batch)

    trainer = Trainer(model, loss, image_data(), dynamics=dynamics(epochs=2))
    trainer.fit()
    assert frozen_norm_modules(model) == [frozen_bn]
    assert modes and all(mode == (False, True) for mode in modes)
    assert state_equal(before, frozen_bn.state_dict())
    assert not torch.equal(trainable_before, trainable_bn.running_mean)


def test_ema_and_checkpoints_cover_only_the_trained_part(tmp_path: Path) -> None:
    model = TinyCNN()
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    trainer = Trainer(model, cross_entropy, image_data(), dynamics=dynamics(epochs=1), output_dir=tmp_path)
    trainer.fit()
    expected = {name for name, p in model.named_parameters() if p.requires_grad} | {
        "head.1.running_mean",
        "head.1.running_var",
        "head.1.num_batches_tracked",
    }
    assert trainer.ema is not None and set(trainer.ema.shadow) == expected
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert set(state["model"]) == expected and set(state["ema"]["shadow"]) == expected
    assert not any(key.startswith("backbone.") for key in state["model"])
    # the EMA average differs from the trained weights, and only in the trained part
    assert not torch.equal(trainer.ema.shadow["head.0.weight"], state["model"]["head.0.weight"])


def test_full_state_dict_option(tmp_path: Path) -> None:
    model = TinyCNN()
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    Trainer(
        model, cross_entropy, image_data(), dynamics=dynamics(epochs=1), output_dir=tmp_path, save_full_state=True
    ).fit()
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["full_state_dict"] and set(state["model"]) == set(model.state_dict())


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    Trainer(mlp(), cross_entropy, toy_data(16), dynamics=dynamics(epochs=1), output_dir=tmp_path).fit()
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(DataError, match=r"does not match the model: .*unknown key"):
        load_checkpoint(last, TinyCNN())
    with pytest.raises(UsageError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a readable checkpoint"):
        load_checkpoint(broken)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(DataError, match="not a distillkit training checkpoint"):
        load_checkpoint(other)


def test_keyboard_interrupt_leaves_the_last_completed_epoch(tmp_path: Path) -> None:
    trainer = Trainer(
        mlp(), cross_entropy, toy_data(16), dynamics=dynamics(epochs=5), output_dir=tmp_path, callbacks=InterruptAt(2)
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1
    assert not list(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------------------------------- devices etc.


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="cuda requested but no CUDA device is visible; pass --device cpu"):
            resolve_device("cuda")
        with pytest.raises(UsageError, match="no CUDA device"):
            resolve_device("0")
    else:
        count = torch.cuda.device_count()
        with pytest.raises(UsageError, match=f"only {count} CUDA device"):
            resolve_device(f"cuda:{count}")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu")


def test_fp16_on_cpu_is_a_clear_error() -> None:
    trainer = Trainer(mlp(), cross_entropy, toy_data(16), dynamics=dynamics(amp="fp16"))
    with pytest.raises(UsageError, match="amp=fp16 needs a GPU"):
        trainer.fit()


def test_move_to_device_and_world_helpers() -> None:
    batch = {"x": torch.zeros(2), "meta": ["a", 1], "pair": (torch.ones(1), "keep")}
    moved = move_to_device(batch, torch.device("cpu"))
    assert moved["meta"] == ["a", 1] and moved["pair"][1] == "keep" and torch.equal(moved["x"], batch["x"])
    assert world_info().world_size == 1 and is_main_process()
    assert shard(list(range(5))) == [0, 1, 2, 3, 4]


def test_bad_compute_loss_output_is_explained() -> None:
    trainer = Trainer(mlp(), lambda model, batch: model(batch[0]).sum(), toy_data(16), dynamics=dynamics())
    with pytest.raises(TypeError, match="must return a dict with a 'loss' entry"):
        trainer.fit()


class RecordingProgress:
    def __init__(self) -> None:
        self.tasks: list[tuple[str, float | None]] = []
        self.advanced = 0.0
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Any]:
        self.tasks.append((description, total))
        yield self

    def advance(self, amount: float = 1) -> None:
        self.advanced += amount


def test_progress_per_epoch_and_custom_param_groups() -> None:
    model = mlp()
    progress = RecordingProgress()

    def groups(m: nn.Module) -> list[dict[str, Any]]:
        return [
            {"params": list(m[0].parameters()), "lr": 1e-3},  # type: ignore[index]
            {"params": [p for name, p in m.named_parameters() if not name.startswith("0.")], "weight_decay": 0.0},
        ]

    trainer = Trainer(
        model,
        cross_entropy,
        toy_data(20),
        dynamics=dynamics(epochs=2, scheduler="constant"),
        progress=progress,  # type: ignore[arg-type]
        param_groups=groups,
    )
    trainer.fit()
    assert progress.tasks == [("epoch 1/2", 3), ("epoch 2/2", 3)] and progress.advanced == 6
    assert [line.split("  ")[0] for line in progress.lines] == ["epoch 1/2", "epoch 2/2"]  # one line per epoch
    assert all("  train/loss " in line and line.endswith("s") for line in progress.lines)
    assert trainer.optimizer is not None
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [1e-3, 1e-2]


def test_fit_twice_starts_fresh_and_bf16_autocast_on_cpu() -> None:
    trainer = Trainer(mlp(), cross_entropy, toy_data(16), dynamics=dynamics(epochs=2, amp="bf16"))
    first = trainer.fit()
    second = trainer.fit()
    assert first.epochs_run == second.epochs_run == 2 and len(second.history) == 2
    assert trainer.precision is not None and trainer.precision.dtype == torch.bfloat16
    assert all(math.isfinite(row["train/loss"]) for row in second.history)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["fp16", "bf16", "auto"])
def test_cuda_mixed_precision_trains_and_resumes(tmp_path: Path, amp: str) -> None:
    model = TinyCNN()
    settings = dynamics(epochs=3, amp=amp, device="cuda", lr=2e-2)
    result = Trainer(model, cross_entropy, image_data(64), dynamics=settings, output_dir=tmp_path).fit()
    losses = [row["train/loss"] for row in result.history]
    assert all(math.isfinite(value) for value in losses) and losses[-1] < losses[0]
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert bool(state["scaler"]) == (amp == "fp16")
    longer = Trainer(
        TinyCNN(),
        cross_entropy,
        image_data(64),
        dynamics=settings.model_copy(update={"epochs": 4}),
        output_dir=tmp_path,
    )
    assert longer.fit(resume=True).epochs_run == 4 and next(longer.model.parameters()).is_cuda


class NoisyImages(torch.utils.data.Dataset):
    """Random augmentation inside __getitem__: the worker RNG seeding must be reproducible too."""

    def __init__(self) -> None:
        self.base = image_data(24)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[index]
        return x + 0.1 * torch.randn_like(x), y


@pytest.mark.slow
def test_resume_is_bit_identical_with_worker_processes(tmp_path: Path) -> None:
    def make(folder: Path, callbacks: Any = None) -> Trainer:
        return Trainer(
            TinyCNN(),
            cross_entropy,
            NoisyImages(),
            dynamics=dynamics(epochs=3, num_workers=2),
            output_dir=folder,
            callbacks=callbacks,
        )

    straight = make(tmp_path / "a")
    straight.fit()
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "b", InterruptAt(2)).fit()
    resumed = make(tmp_path / "b")
    resumed.fit(resume=True)
    assert state_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert state_equal(straight.optimizer.state_dict(), resumed.optimizer.state_dict())  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------- DDP

DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import TensorDataset

    from distillkit.config.build import section_defaults
    from distillkit.training import Trainer, is_main_process, world_info

    out = Path(sys.argv[1])
    torch.manual_seed(0)
    x = torch.randn(40, 6)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    dynamics = section_defaults("training_dynamics").model_copy(
        update={"epochs": 3, "batch_size": 4, "lr": 1e-2, "num_workers": 0, "device": "cpu"}
    )
    losses = []

    def loss(m, batch):
        value = nn.functional.cross_entropy(m(batch[0]), batch[1])
        return {"loss": value}

    def evaluate(m):
        assert not isinstance(m, nn.parallel.DistributedDataParallel)
        return {"val/accuracy": (m(x).argmax(1) == data.tensors[1]).float().mean().item()}

    trainer = Trainer(model, loss, data, evaluate=evaluate, dynamics=dynamics, output_dir=out / "run",
                      monitor="val/accuracy")
    result = trainer.fit()
    info = world_info()
    torch.save({"state": model.state_dict(), "history": result.history, "steps": trainer.global_step,
                "main": is_main_process(), "world": info.world_size}, out / f"rank{info.rank}.pt")
    """
)


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path: Path) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(DDP_SCRIPT)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["world"] == 2 and rank0["main"] and not rank1["main"]
    # 40 samples / 2 ranks / batch 4 = 5 steps per epoch on each rank
    assert rank0["steps"] == rank1["steps"] == 15
    assert state_equal(rank0["state"], rank1["state"])
    assert [row["train/loss"] for row in rank0["history"]] == [row["train/loss"] for row in rank1["history"]]
    assert {path.name for path in (tmp_path / "run" / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.*"))) == 1  # rank 0 only
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert len(state["rng"]) == 2 and not math.isnan(state["history"][-1]["train/loss"])


def test_data_loader_workers_are_capped_at_the_usable_cpus() -> None:
    import os

    from distillkit.training.trainer import usable_workers

    cpus = len(os.sched_getaffinity(0))
    assert usable_workers(0) == 0
    assert usable_workers(1) == 1
    assert usable_workers(cpus + 7) == cpus
