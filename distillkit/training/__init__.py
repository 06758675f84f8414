"""The training loop shared by the teachers and the classifiers.

    from distillkit.training import Trainer, FitResult, TrainingDiverged, resolve_device, load_checkpoint

``Trainer(model, compute_loss, train_dataset, ...).fit(resume=False)`` trains with the settings of
``training_dynamics`` and ``checkpointing`` and returns a ``FitResult``; ``load_checkpoint(path,
model)`` loads a saved run's weights. The distributed helpers let other code (teacher labelling)
share work across ``torchrun`` processes the same way.
"""

from distillkit.training.batch import move_to_device
from distillkit.training.checkpoint import load_checkpoint, read_checkpoint
from distillkit.training.device import Precision, resolve_device, resolve_precision
from distillkit.training.distributed import (
    WorldInfo,
    all_gather_object,
    all_reduce_sum,
    barrier,
    broadcast_object,
    broadcast_tensors,
    distributed_context,
    is_main_process,
    shard,
    unwrap_model,
    world_info,
)
from distillkit.training.ema import ModelEma
from distillkit.training.errors import TrainingDiverged
from distillkit.training.optim import build_optimizer, default_param_groups
from distillkit.training.result import FitResult
from distillkit.training.schedule import build_scheduler, lr_factor_fn
from distillkit.training.trainer import Trainer

__all__ = [
    "FitResult",
    "ModelEma",
    "Precision",
    "Trainer",
    "TrainingDiverged",
    "WorldInfo",
    "all_gather_object",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "broadcast_tensors",
    "build_optimizer",
    "build_scheduler",
    "default_param_groups",
    "distributed_context",
    "is_main_process",
    "load_checkpoint",
    "lr_factor_fn",
    "move_to_device",
    "read_checkpoint",
    "resolve_device",
    "resolve_precision",
    "shard",
    "unwrap_model",
    "world_info",
]
