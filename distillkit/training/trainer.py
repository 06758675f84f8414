"""The training loop shared by the teachers (LoRA fine-tuning) and the classifiers.

``Trainer`` owns the mechanics — device, mixed precision, gradient accumulation and clipping, the
lr schedule, EMA, frozen BatchNorm, checkpoints, early stopping, resume, logging, DDP — and the
consumer supplies what is specific to its model: a ``compute_loss(model, batch)`` returning a dict
of scalar terms (``"loss"`` is optimised, every term is logged) and an optional ``evaluate(model)``
returning metrics such as ``{"val/map50": 0.61}``.

Determinism: the shuffling of epoch ``e`` comes from a generator seeded with ``seed + e`` and every
RNG state is saved at the end of each epoch, so on CPU a run that is killed and resumed ends with
exactly the weights and optimiser state of a run that was never interrupted.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from distillkit import __version__
from distillkit.config.build import section_defaults
from distillkit.config.schema import CheckpointingConfig, TrainingDynamicsConfig
from distillkit.errors import ConfigError, UsageError
from distillkit.progress import NULL_PROGRESS, Progress, epoch_line, log_line
from distillkit.training.batch import move_to_device
from distillkit.training.checkpoint import (
    CHECKPOINT_FORMAT,
    epoch_checkpoint_name,
    load_model_state,
    prune_epoch_checkpoints,
    read_checkpoint,
    serialize_checkpoint,
    write_checkpoint,
)
from distillkit.training.device import Precision, resolve_device, resolve_precision
from distillkit.training.distributed import (
    WorldInfo,
    all_gather_object,
    all_reduce_sum,
    broadcast_object,
    broadcast_tensors,
    distributed_context,
    world_info,
)
from distillkit.training.ema import ModelEma
from distillkit.training.errors import TrainingDiverged
from distillkit.training.metrics_log import METRICS_FILE, TENSORBOARD_DIR, TensorBoardLog, write_metrics_csv
from distillkit.training.monitor import MetricMonitor
from distillkit.training.optim import build_optimizer, default_param_groups
from distillkit.training.result import FitResult
from distillkit.training.rng import capture_rng_state, restore_rng_state, seed_everything
from distillkit.training.schedule import build_scheduler
from distillkit.training.trainable import (
    frozen_norm_modules,
    full_state_dict,
    set_train_mode,
    tracked_state_dict,
    tracked_tensors,
)

ComputeLoss = Callable[[nn.Module, Any], dict[str, torch.Tensor]]
Evaluate = Callable[[nn.Module], dict[str, float]]
ParamGroups = Callable[[nn.Module], list[dict[str, Any]]]

CHECKPOINT_DIR = "checkpoints"
LAST_FILE = "last.pt"
BEST_FILE = "best.pt"
# fp16 overflow makes the GradScaler skip a step now and then (normal); this many skips in a row
# means the scale has collapsed and the run is not training any more.
MAX_CONSECUTIVE_SKIPPED_STEPS = 50


class Trainer:
    """Train ``model`` on ``train_dataset`` by minimising ``compute_loss``; see the module docstring.

    Parameters beyond the shared interface: ``save_full_state`` (checkpoints hold the full state
    dict instead of only the trained part), ``drop_last`` (drop an incomplete last batch, e.g. one
    of size 1 that BatchNorm cannot train on), ``restore_best`` (load the best epoch's evaluated
    weights at the end), ``on_divergence`` (``"raise"`` TrainingDiverged, or ``"stop"`` and return
    a FitResult with ``diverged=True``), ``monitor_mode`` (max/min for an ``auto`` monitor; default:
    min for names containing "loss", else checkpointing.mode) and ``find_unused_parameters`` (DDP:
    tolerate trainable parameters that get no gradient in a step, as some heads do).

    Under ``torchrun`` ``compute_loss`` receives the DistributedDataParallel wrapper (call it, use
    ``unwrap_model`` for attributes); ``evaluate`` receives the plain model in every process (same
    weights everywhere; rank 0's numbers decide best and early stopping); only rank 0 writes files.
    """

    def __init__(
        self,
        model: nn.Module,
        compute_loss: ComputeLoss,
        train_dataset: Dataset[Any],
        collate_fn: Callable[[list[Any]], Any] | None = None,
        evaluate: Evaluate | None = None,
        dynamics: TrainingDynamicsConfig | None = None,
        checkpointing: CheckpointingConfig | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        monitor: str = "val/map50",
        device: torch.device | str | None = None,
        progress: Progress = NULL_PROGRESS,
        param_groups: ParamGroups | None = None,
        extra_state: dict[str, Any] | None = None,
        callbacks: Any | Sequence[Any] | None = None,
        *,
        save_full_state: bool = False,
        drop_last: bool = False,
        restore_best: bool = True,
        on_divergence: Literal["raise", "stop"] = "raise",
        monitor_mode: Literal["max", "min"] | None = None,
        find_unused_parameters: bool = True,
        optimizer_wrapper: Callable[[torch.optim.Optimizer], torch.optim.Optimizer] | None = None,
    ) -> None:
        self.model = model
        # Wraps the built optimiser (e.g. SAM / Lookahead). An optimiser declaring
        # ``requires_closure = True`` is stepped as ``optimizer.step(closure)``, the closure re-running
        # the loss and backward of the current accumulation window (SAM's second pass).
        self.optimizer_wrapper = optimizer_wrapper
        self.compute_loss = compute_loss
        self.train_dataset = train_dataset
        self.collate_fn = collate_fn
        self.evaluate_fn = evaluate
        self.dynamics: TrainingDynamicsConfig = dynamics or section_defaults("training_dynamics")  # type: ignore[assignment]
        self.checkpointing: CheckpointingConfig = checkpointing or section_defaults("checkpointing")  # type: ignore[assignment]
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.requested_device = device
        self.progress = progress
        self.param_groups_fn = param_groups
        self.extra_state = dict(extra_state or {})
        if callbacks is None:
            self.callbacks: list[Any] = []
        elif isinstance(callbacks, list | tuple):
            self.callbacks = list(callbacks)
        else:
            self.callbacks = [callbacks]
        self.save_full_state = save_full_state
        self.drop_last = drop_last
        self.restore_best = restore_best
        if on_divergence not in ("raise", "stop"):
            raise ValueError(f"on_divergence must be 'raise' or 'stop', not {on_divergence!r}")
        self.on_divergence = on_divergence
        self.find_unused_parameters = find_unused_parameters
        self.monitor_name, self.monitor_mode = self._resolve_monitor(monitor, monitor_mode)

        # Filled by fit(): public so callbacks and consumers can look at the run's state.
        self.device: torch.device | None = None
        self.world: WorldInfo = world_info()
        self.precision: Precision | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.ema: ModelEma | None = None
        self.train_loader: DataLoader[Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # epochs completed
        self.current_epoch = 0  # the epoch being trained or evaluated (1-based)
        self.global_step = 0  # optimiser steps taken
        self.steps_per_epoch = 0
        self.total_steps = 0
        self.stopped_early = False
        self._monitor = MetricMonitor(
            self.monitor_name,
            self.monitor_mode,
            patience=self.dynamics.early_stopping_patience,
            min_delta=self.dynamics.early_stopping_min_delta,
        )
        self._best_weights: dict[str, torch.Tensor] | None = None
        self._train_model: nn.Module = model
        self._loader_generator = torch.Generator()
        self._frozen_norms: list[nn.Module] = []
        self._skipped_steps = 0
        self._last_lr = 0.0
        self._resumed_from: Path | None = None

    # ------------------------------------------------------------------ paths

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.output_dir / CHECKPOINT_DIR if self.output_dir is not None else None

    @property
    def last_checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / LAST_FILE if self.checkpoint_dir is not None else None

    @property
    def best_checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / BEST_FILE if self.checkpoint_dir is not None else None

    @property
    def monitor(self) -> MetricMonitor:
        return self._monitor

    # ------------------------------------------------------------------ public entry point

    def fit(self, resume: bool | str | os.PathLike[str] | None = None) -> FitResult:
        """Train for ``dynamics.epochs`` epochs (fewer when early stopping triggers).

        ``resume``: False (start fresh), True (continue from ``output_dir/checkpoints/last.pt``) or a
        checkpoint path; None takes ``checkpointing.resume``. A KeyboardInterrupt propagates as is;
        ``last.pt`` then holds the last completed epoch, ready for ``fit(resume=True)``.
        """
        if self.evaluate_fn is None and not self.monitor_name.startswith("train/"):
            raise ConfigError(
                f"checkpointing.monitor is '{self.monitor_name}' but this run evaluates nothing",
                "set checkpointing.monitor=auto or a train/ metric such as train/loss",
            )
        resume_from = self._resume_path(self.checkpointing.resume if resume is None else resume)
        device = resolve_device(self.requested_device if self.requested_device is not None else self.dynamics.device)
        with distributed_context(device) as world, self._determinism():
            self.world = world
            self._setup(device)
            if resume_from is not None:
                self._load_resume_state(resume_from)
            else:
                seed_everything(self.dynamics.seed + world.rank)
            self._wrap_distributed()
            tensorboard = self._open_tensorboard(resume_from is not None)
            try:
                return self._run(tensorboard)
            finally:
                if tensorboard is not None:
                    tensorboard.close()
                self._train_model = self.model

    # ------------------------------------------------------------------ setup

    def _resolve_monitor(self, monitor: str, mode: str | None) -> tuple[str, str]:
        if self.checkpointing.monitor != "auto":
            return self.checkpointing.monitor, self.checkpointing.mode
        if self.evaluate_fn is None:
            return "train/loss", "min"
        if mode is not None:
            return monitor, mode
        return monitor, "min" if "loss" in monitor.lower() else self.checkpointing.mode

    def _resume_path(self, resume: bool | str | os.PathLike[str]) -> Path | None:
        if resume is False or resume in ("", "false", "False"):
            return None
        if resume is True or resume in ("true", "True"):
            if self.last_checkpoint_path is None:
                raise UsageError("resume=True needs an output_dir holding checkpoints/last.pt", "pass output_dir")
            if not self.last_checkpoint_path.is_file():
                raise UsageError(
                    f"nothing to resume: {self.last_checkpoint_path} does not exist",
                    "train without --resume, or pass the checkpoint path",
                )
            return self.last_checkpoint_path
        return Path(resume)

    @contextmanager
    def _determinism(self) -> Iterator[None]:
        """``dynamics.deterministic``: deterministic kernels for the duration of ``fit`` only."""
        if not self.dynamics.deterministic:
            yield
            return
        previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        )
        # cuBLAS needs a fixed workspace to be deterministic; only effective before CUDA starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]

    def _setup(self, device: torch.device) -> None:
        dynamics = self.dynamics
        # A fresh start (also on a second fit() call); a resume overwrites these from the checkpoint.
        self.history, self.epoch, self.current_epoch, self.global_step = [], 0, 0, 0
        self.stopped_early, self._best_weights, self._skipped_steps, self._resumed_from = False, None, 0, None
        self._monitor = MetricMonitor(
            self.monitor_name,
            self.monitor_mode,
            patience=dynamics.early_stopping_patience,
            min_delta=dynamics.early_stopping_min_delta,
        )
        self.device = device
        self.precision = resolve_precision(dynamics.amp, device)
        self.model.to(device)
        self._frozen_norms = frozen_norm_modules(self.model)

        self.train_loader = self._build_loader()
        if len(self.train_loader) == 0:
            raise UsageError(
                f"the training set yields no batch ({len(self.train_dataset)} samples, "  # type: ignore[arg-type]
                f"batch size {dynamics.batch_size}, drop_last={self.drop_last})",
                "add training samples or lower training_dynamics.batch_size",
            )
        self.steps_per_epoch = math.ceil(len(self.train_loader) / dynamics.grad_accumulation)
        self.total_steps = self.steps_per_epoch * dynamics.epochs

        groups = (
            self.param_groups_fn(self.model)
            if self.param_groups_fn is not None
            else default_param_groups(self.model, dynamics.weight_decay)
        )
        self.optimizer = build_optimizer(groups, dynamics)
        if self.optimizer_wrapper is not None:
            self.optimizer = self.optimizer_wrapper(self.optimizer)
            if self._needs_closure and self.precision.use_scaler:
                raise UsageError(
                    "this optimiser needs a closure (SAM), which fp16 loss scaling does not support",
                    "set training_dynamics.amp=bf16 or off",
                )
        self.scheduler = build_scheduler(
            self.optimizer,
            dynamics.scheduler,
            total_steps=self.total_steps,
            warmup_steps=round(dynamics.warmup_epochs * self.steps_per_epoch),
            warmup_lr_ratio=dynamics.warmup_lr_ratio,
            min_lr_ratio=dynamics.min_lr_ratio,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.use_scaler)
        self.ema = ModelEma(self.model, dynamics.ema.decay) if dynamics.ema.enabled else None
        self._last_lr = self.optimizer.param_groups[0]["lr"]

    def _build_loader(self) -> DataLoader[Any]:
        dynamics, world = self.dynamics, self.world
        common: dict[str, Any] = {
            "batch_size": dynamics.batch_size,
            "collate_fn": self.collate_fn,
            "num_workers": usable_workers(dynamics.num_workers),
            "pin_memory": self.device is not None and self.device.type == "cuda",
            "drop_last": self.drop_last,
            # The generator seeds the shuffling (one process) and the workers' RNGs; it is reseeded
            # with seed + epoch before every epoch, so epoch e's order never depends on history.
            "generator": self._loader_generator,
        }
        if world.distributed:
            sampler = DistributedSampler(
                self.train_dataset,
                num_replicas=world.world_size,
                rank=world.rank,
                shuffle=True,
                seed=dynamics.seed,
                drop_last=self.drop_last,
            )
            return DataLoader(self.train_dataset, sampler=sampler, **common)
        return DataLoader(self.train_dataset, shuffle=True, **common)

    def _wrap_distributed(self) -> None:
        if not self.world.distributed:
            self._train_model = self.model
            return
        assert self.device is not None
        self._train_model = nn.parallel.DistributedDataParallel(
            self.model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.find_unused_parameters,
        )

    def _open_tensorboard(self, resumed: bool) -> TensorBoardLog | None:
        if self.output_dir is None or not self.world.is_main:
            return None
        return TensorBoardLog(self.output_dir / TENSORBOARD_DIR, resume_epoch=self.epoch if resumed else None)

    # ------------------------------------------------------------------ the loop

    def _run(self, tensorboard: TensorBoardLog | None) -> FitResult:
        if self.stopped_early or self.epoch >= self.dynamics.epochs:
            return self._finish(diverged=False)
        for epoch in range(self.epoch + 1, self.dynamics.epochs + 1):
            self.current_epoch = epoch
            self._call("on_epoch_start", self, epoch)
            started = time.perf_counter()
            try:
                row: dict[str, Any] = {"epoch": epoch, **self._train_epoch(epoch)}
            except TrainingDiverged as exc:
                result = self._finish(diverged=True)
                if self.on_divergence == "stop":
                    return result
                exc.result = result
                raise
            row["lr"] = self._last_lr
            self._sync_buffers()
            if self.evaluate_fn is not None:
                row.update(self._evaluate())
            row["time/epoch_s"] = time.perf_counter() - started
            # Rank 0's row decides (evaluation may differ in the last digits between ranks), so
            # every process takes the same best / early-stopping decisions.
            row = broadcast_object(row)
            improved = self._monitor.update(row, epoch)
            if improved:
                self._best_weights = self._evaluated_weights()
            self.history.append(row)
            self.epoch = epoch
            self.stopped_early = self._monitor.should_stop
            self._call("on_epoch_end", self, epoch, row)
            if self.world.is_main:
                shown = {k: v for k, v in row.items() if k not in ("epoch", "time/epoch_s") and _is_number(v)}
                log_line(self.progress, epoch_line(epoch, self.dynamics.epochs, shown, row["time/epoch_s"]))
            self._save_epoch(epoch, row, improved, tensorboard)
            if self.stopped_early:
                break
        return self._finish(diverged=False)

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(*args)

    def _set_epoch(self, epoch: int) -> None:
        assert self.train_loader is not None
        seed = self.dynamics.seed + epoch
        if self.world.distributed:
            sampler = self.train_loader.sampler
            assert isinstance(sampler, DistributedSampler)
            sampler.set_epoch(epoch)  # DistributedSampler shuffles with seed + epoch itself
            seed += 1_000_003 * self.world.rank  # distinct worker seeds per rank
        self._loader_generator.manual_seed(seed)

    def _autocast(self) -> AbstractContextManager[Any]:
        assert self.precision is not None and self.device is not None
        if not self.precision.enabled:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.precision.dtype)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        assert self.train_loader is not None and self.device is not None and self.scaler is not None
        set_train_mode(self.model, self._frozen_norms)
        self._set_epoch(epoch)
        accumulation = self.dynamics.grad_accumulation
        n_batches = len(self.train_loader)
        non_blocking = self.device.type == "cuda"
        sums: dict[str, torch.Tensor] = {}
        window: list[torch.Tensor] = []
        window_batches: list[Any] = []  # kept only for closure optimisers (SAM)
        progress = self.progress if self.world.is_main else NULL_PROGRESS
        with progress.task(f"epoch {epoch}/{self.dynamics.epochs}", total=n_batches) as task:
            for index, batch in enumerate(self.train_loader):
                window_start = index - index % accumulation
                window_size = min(accumulation, n_batches - window_start)
                closes_window = index - window_start == window_size - 1
                batch = move_to_device(batch, self.device, non_blocking=non_blocking)
                # Under DDP, gradients are all-reduced only on the backward that closes the window.
                sync = nullcontext() if closes_window or not self.world.distributed else self._train_model.no_sync()  # type: ignore[operator]
                with sync:
                    with self._autocast():
                        terms = self._loss_terms(self.compute_loss(self._train_model, batch))
                    self.scaler.scale(terms["loss"] / window_size).backward()
                for name, value in terms.items():
                    detached = value.detach().float()
                    sums[name] = sums[name] + detached if name in sums else detached
                window.append(terms["loss"].detach())
                if self._needs_closure:
                    window_batches.append(batch)
                if closes_window:
                    self._optimizer_step(epoch, window_start, window, window_batches)
                    window, window_batches = [], []
                task.advance()
        return self._epoch_means(sums, n_batches)

    @staticmethod
    def _loss_terms(output: Any) -> dict[str, torch.Tensor]:
        if not isinstance(output, dict) or "loss" not in output:
            raise TypeError("compute_loss must return a dict with a 'loss' entry (a scalar tensor)")
        loss = output["loss"]
        if not isinstance(loss, torch.Tensor):
            raise TypeError("compute_loss returned a 'loss' that is not a tensor")
        terms: dict[str, torch.Tensor] = {}
        for name, value in output.items():
            # plain numbers are logged too; on the loss's device so the epoch sums stack together
            tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(float(value), device=loss.device)
            if tensor.numel() != 1:
                raise TypeError(f"compute_loss returned '{name}' with shape {tuple(tensor.shape)}; expected a scalar")
            terms[name] = tensor.reshape(())
        if not terms["loss"].requires_grad:
            raise TypeError("compute_loss returned a 'loss' that does not require grad (computed under no_grad?)")
        return terms

    def _trainable_params(self) -> list[torch.Tensor]:
        assert self.optimizer is not None
        return [param for group in self.optimizer.param_groups for param in group["params"] if param.grad is not None]

    @property
    def _needs_closure(self) -> bool:
        return bool(getattr(self.optimizer, "requires_closure", False))

    def _window_closure(self, batches: list[Any]) -> Callable[[], torch.Tensor]:
        """Zero the gradients, re-run loss and backward over the window's batches, clip; return the mean loss."""

        def closure() -> torch.Tensor:
            assert self.optimizer is not None
            self.optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=self.device)
            for batch in batches:
                with self._autocast():
                    loss = self._loss_terms(self.compute_loss(self._train_model, batch))["loss"]
                (loss / len(batches)).backward()
                total = total + loss.detach().float()
            if self.dynamics.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self._trainable_params(), self.dynamics.grad_clip_norm)
            return total / len(batches)

        return closure

    def _optimizer_step(
        self, epoch: int, window_start: int, window: list[torch.Tensor], batches: list[Any] | None = None
    ) -> None:
        assert self.optimizer is not None and self.scheduler is not None and self.scaler is not None
        scaled = self.scaler.is_enabled()
        if scaled:
            self.scaler.unscale_(self.optimizer)
        params = self._trainable_params()
        grads = [param.grad for param in params if param.grad is not None]
        if self.dynamics.grad_clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.dynamics.grad_clip_norm)
        elif grads:
            norm = torch.nn.utils.get_total_norm(grads)
        else:
            norm = torch.zeros((), device=self.device)
        losses = torch.stack([loss.float() for loss in window])
        # One host sync per optimiser step, for the loss of every batch in the window and the norm.
        finite = torch.cat([torch.isfinite(losses), torch.isfinite(norm).reshape(1).to(losses.device)])
        if not bool(finite.all()):
            bad = (~finite[:-1]).nonzero()
            if len(bad):
                first = int(bad[0])
                raise TrainingDiverged("loss", float(losses[first]), epoch, window_start + first + 1)
            if not scaled:
                raise TrainingDiverged("gradient norm", float(norm), epoch, window_start + len(window))
            # fp16: the scaler skips this step and lowers its scale; only a collapse is divergence.
            self._skipped_steps += 1
            if self._skipped_steps >= MAX_CONSECUTIVE_SKIPPED_STEPS:
                raise TrainingDiverged("gradient norm", float(norm), epoch, window_start + len(window))
        else:
            self._skipped_steps = 0
        self._last_lr = float(self.optimizer.param_groups[0]["lr"])
        if self._needs_closure:
            self.optimizer.step(self._window_closure(batches or []))
        else:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.global_step += 1
        if self.ema is not None:
            self.ema.update()

    def _epoch_means(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        names = sorted(sums)
        packed = torch.stack(
            [sums[name] for name in names] + [torch.tensor(float(count), device=sums[names[0]].device)]
        )
        packed = all_reduce_sum(packed).cpu()
        total = float(packed[-1])
        return {f"train/{name}": float(packed[i]) / total for i, name in enumerate(names)}

    def _sync_buffers(self) -> None:
        """DDP: give every process rank 0's buffers and EMA average.

        DDP broadcasts rank 0's buffers at the start of each forward, but the running statistics a
        BatchNorm updates in the epoch's last forward (and the EMA of them) stay per process; without
        this, ranks would evaluate and end with slightly different models.
        """
        if not self.world.distributed:
            return
        with torch.no_grad():
            buffers = [buffer for _, buffer in tracked_tensors(self.model) if not isinstance(buffer, nn.Parameter)]
            shadow = list(self.ema.shadow.values()) if self.ema is not None else []
            broadcast_tensors(buffers + shadow)

    def _evaluate(self) -> dict[str, float]:
        assert self.evaluate_fn is not None
        self.model.eval()
        swap = self.ema.swapped_in() if self.ema is not None else nullcontext()
        with swap, torch.no_grad():
            metrics = self.evaluate_fn(self.model)
        if not isinstance(metrics, dict):
            raise TypeError("evaluate must return a dict of metric name -> number")
        return {str(name): float(value) for name, value in metrics.items()}

    def _evaluated_weights(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the weights evaluate() saw: the EMA average when there is one."""
        if self.ema is not None:
            return {key: tensor.detach().to("cpu", copy=True) for key, tensor in self.ema.shadow.items()}
        return tracked_state_dict(self.model)

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_state(self, epoch: int, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
        assert self.optimizer is not None and self.scheduler is not None and self.scaler is not None
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "distillkit_version": __version__,
            "epoch": epoch,
            "global_step": self.global_step,
            "model": full_state_dict(self.model) if self.save_full_state else tracked_state_dict(self.model),
            "full_state_dict": self.save_full_state,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_value": self._monitor.best_value,
            "best_epoch": self._monitor.best_epoch,
            "bad_epochs": self._monitor.bad_epochs,
            "stopped_early": self.stopped_early,
            "monitor": self.monitor_name,
            "mode": self.monitor_mode,
            "history": [dict(row) for row in self.history],
            "rng": rng_states,
            "extra": self.extra_state,
            "config": {
                "training_dynamics": self.dynamics.model_dump(mode="json"),
                "checkpointing": self.checkpointing.model_dump(mode="json"),
            },
        }
        if not self.checkpointing.save_best and self._best_weights is not None:
            # Without best.pt the best weights travel in last.pt, so a resumed run can still restore them.
            state["best_weights"] = self._best_weights
        return state

    def _save_epoch(self, epoch: int, row: dict[str, Any], improved: bool, tensorboard: TensorBoardLog | None) -> None:
        # Every rank's RNG state goes into the checkpoint: a resumed DDP run continues each stream.
        rng_states = all_gather_object(capture_rng_state())
        if self.output_dir is None or not self.world.is_main:
            return
        folder = self.checkpoint_dir
        assert folder is not None
        every = self.checkpointing.save_every_n_epochs
        wants_epoch_file = every > 0 and epoch % every == 0
        wants_best = self.checkpointing.save_best and improved
        if self.checkpointing.save_last or wants_epoch_file or wants_best:
            data = serialize_checkpoint(self._checkpoint_state(epoch, rng_states))
            if self.checkpointing.save_last:
                write_checkpoint(folder / LAST_FILE, data)
            if wants_epoch_file:
                write_checkpoint(folder / epoch_checkpoint_name(epoch), data)
                prune_epoch_checkpoints(folder, self.checkpointing.keep_last_n)
            if wants_best:
                write_checkpoint(folder / BEST_FILE, data)
        write_metrics_csv(self.output_dir / METRICS_FILE, self.history)
        if tensorboard is not None:
            tensorboard.log_row(row, epoch)

    def _load_resume_state(self, path: Path) -> None:
        assert self.optimizer is not None and self.scheduler is not None and self.scaler is not None
        state = read_checkpoint(path, map_location="cpu")
        load_model_state(self.model, state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:
                self.ema = ModelEma(self.model, self.dynamics.ema.decay)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = [dict(row) for row in state["history"]]
        self.stopped_early = bool(state.get("stopped_early", False))
        if state.get("monitor") == self.monitor_name:
            self._monitor.best_value = state["best_value"]
            self._monitor.best_epoch = state["best_epoch"]
            self._monitor.bad_epochs = int(state["bad_epochs"])
        else:
            # A different metric now: rebuild its best from the history where it was recorded.
            for row in self.history:
                if self.monitor_name in row:
                    self._monitor.update(row, int(row["epoch"]))
        self._best_weights = self._resumed_best_weights(state)
        rng_states = state.get("rng") or []
        if rng_states:
            restore_rng_state(rng_states[self.world.rank] if self.world.rank < len(rng_states) else rng_states[0])
        if self.history:
            self._last_lr = float(self.history[-1].get("lr", self._last_lr))
        self._resumed_from = path

    def _resumed_best_weights(self, state: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        if self._monitor.best_epoch is None:
            return None
        if "best_weights" in state:
            return state["best_weights"]
        best = self.best_checkpoint_path
        if best is not None and best.is_file():
            best_state = read_checkpoint(best, map_location="cpu")
            if best_state.get("epoch") == self._monitor.best_epoch:
                ema = best_state.get("ema")
                if ema is not None:
                    return ema["shadow"]
                keys = {key for key, _ in tracked_tensors(self.model)}
                return {key: value for key, value in best_state["model"].items() if key in keys}
        return None

    # ------------------------------------------------------------------ the end

    def _finish(self, diverged: bool) -> FitResult:
        final = "last"
        if self.restore_best and self._best_weights is not None:
            load_model_state(self.model, self._best_weights, "the best epoch's weights")
            final = "best"
        elif self.ema is not None:
            load_model_state(self.model, self.ema.shadow, "the EMA weights")
            final = "ema"
        self.model.eval()
        folder = self.checkpoint_dir
        last = self.last_checkpoint_path
        best = self.best_checkpoint_path
        return FitResult(
            epochs_run=self.epoch,
            best_epoch=self._monitor.best_epoch,
            best_value=self._monitor.best_value,
            monitor=self.monitor_name,
            mode=self.monitor_mode,
            stopped_early=self.stopped_early,
            history=[dict(row) for row in self.history],
            last_checkpoint=last if last is not None and last.is_file() else None,
            best_checkpoint=best if best is not None and best.is_file() else None,
            diverged=diverged,
            final_weights=final,
            output_dir=self.output_dir,
            metrics_csv=self.output_dir / METRICS_FILE if self.output_dir is not None else None,
            resumed_from=self._resumed_from,
            epoch_checkpoints=sorted(folder.glob("epoch_*.pt"), key=_epoch_number) if folder is not None else [],
        )


def _epoch_number(path: Path) -> int:
    digits = path.stem.rsplit("_", 1)[-1]
    return int(digits) if digits.isdigit() else -1


def usable_workers(requested: int) -> int:
    """``requested`` data-loader workers, capped at the CPUs this process may use.

    More worker processes than CPUs only adds contention (and torch warns about it once per
    loader); the cap keeps the shipped default of 4 sensible on small machines.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(0, min(requested, available))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
