"""``DistillationTrainer``: ultralytics' detection/segmentation trainer with the teacher's knowledge in the loss.

Two things can be switched in, each by its settings: the teacher's soft targets on its labels
(``SoftTargetSettings``, any teacher, see ``soft_targets.py``) and the KD terms against a frozen
YOLO teacher (``KDSettings``). For the soft targets the training dataset encodes each label's row
and ``preprocess_batch`` decodes it. For the KD terms (see STACK-NOTES):

* ``build_optimizer`` loads the teacher (frozen, eval mode, on the training device), checks that its
  strides match the student's (so anchors align), builds the 1x1 feature projectors and gives
  them their own optimizer parameter group, so they train with the student and their optimizer
  state is saved and resumed with it;
* ``on_train_start`` (after the EMA copy, so the teacher never enters the EMA or any checkpoint)
  installs a ``v8DetectionLoss`` / ``v8SegmentationLoss`` subclass carrying the KD terms;
* ``on_model_save`` writes the projectors next to ``last.pt`` (``kd_projectors.pt``); ``--resume``
  reloads them. The teacher itself is rebuilt from its checkpoint path.

Validation uses the EMA model's own plain criterion, so validation losses are ultralytics' own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillkit.errors import UsageError
from distillkit.io import atomic_open
from distillkit.students.kd_loss import KDLossMixin, KDWeights, build_projectors, head_outputs
from distillkit.students.soft_targets import (
    SoftTargetLossMixin,
    SoftTargetSettings,
    decode_batch,
    load_soft_targets,
    soft_target_dataset,
)
from distillkit.ultralytics_env import import_ultralytics

PROJECTORS_FILE = "kd_projectors.pt"


@dataclass(frozen=True)
class KDSettings:
    """What the KD loss needs: the teacher checkpoint, student class -> teacher class, the weights."""

    teacher: Path
    class_index: list[int]
    weights: KDWeights
    taught_classes: tuple[bool, ...] | None = None  # per student class; False: the teacher does not know it


def load_frozen_teacher(path: Path, device: torch.device) -> nn.Module:
    import_ultralytics()
    from ultralytics.nn.tasks import load_checkpoint

    teacher = load_checkpoint(str(path))[0].float().to(device).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def neck_channels(model: nn.Module, device: torch.device) -> list[int]:
    """Channels of the feature maps feeding the detection head (one small eval-mode forward)."""
    was_training = model.training
    model.eval()  # no BatchNorm statistics updated by this probe
    with torch.no_grad():
        output = head_outputs(model(torch.zeros(1, 3, 64, 64, device=device)))
    model.train(was_training)
    return [int(f.shape[1]) for f in output["feats"]]


def distillation_trainer(task: str, settings: KDSettings | None, soft: SoftTargetSettings | None = None) -> type:
    """The trainer class to pass to ``YOLO.train(trainer=...)`` for ``task`` (detect / segment)."""
    import_ultralytics()
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.models.yolo.segment import SegmentationTrainer
    from ultralytics.utils.torch_utils import unwrap_model

    base = SegmentationTrainer if task == "segment" else DetectionTrainer

    class DistillationTrainer(base):  # type: ignore[misc, valid-type]
        kd_settings = settings
        soft_settings = soft

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            import_ultralytics()  # in a DDP worker (a fresh process) too: distillkit's guards, offline settings
            super().__init__(*args, **kwargs)
            self.kd_teacher: nn.Module | None = None
            self.kd_projectors: nn.ModuleList | None = None
            self.soft_labels_matched = 0
            # the table is read once: its rows go to the loss, its per-image entries to the dataset
            self.soft_table = load_soft_targets(self.soft_settings) if self.soft_settings is not None else None
            # a DDP worker is handed the launcher's callbacks, these two included: add them once
            for event, function in (("on_train_start", _install_criterion), ("on_model_save", _save_projectors)):
                if function not in self.callbacks.get(event, []):
                    self.add_callback(event, function)

        def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
            dataset = super().build_dataset(img_path, mode, batch)
            if mode == "train" and self.soft_settings is not None:
                assert self.soft_table is not None
                self.soft_labels_matched = soft_target_dataset(dataset, self.soft_settings, self.soft_table[1])
            return dataset

        def preprocess_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
            if self.soft_settings is not None and "soft_row" not in batch and batch["cls"].dtype == torch.float64:
                batch = decode_batch(batch, self.soft_settings.base)
            return super().preprocess_batch(batch)

        def build_optimizer(self, model: nn.Module, *args: Any, **kwargs: Any) -> torch.optim.Optimizer:
            optimizer = super().build_optimizer(model, *args, **kwargs)
            if self.kd_settings is None:
                return optimizer
            self._build_teacher(unwrap_model(model))
            if self.kd_projectors is not None:
                optimizer.add_param_group(  # same learning rate (and schedule) as the student's weights
                    {
                        "params": list(self.kd_projectors.parameters()),
                        "lr": optimizer.param_groups[0]["lr"],
                        "weight_decay": 0.0,
                        "param_group": "kd",
                    }
                )
            return optimizer

        def _build_teacher(self, student: nn.Module) -> None:
            if self.kd_teacher is not None:  # the optimizer is rebuilt after an out-of-memory retry
                return
            assert self.kd_settings is not None
            teacher = load_frozen_teacher(self.kd_settings.teacher, self.device)
            _check_strides(teacher, student)
            self.kd_teacher = teacher
            if self.kd_settings.weights.feature > 0:
                saved = Path(self.wdir) / PROJECTORS_FILE
                self.kd_projectors = _feature_projectors(
                    student, teacher, self.device, saved if self.args.resume else None
                )

    return DistillationTrainer


def _check_strides(teacher: nn.Module, student: nn.Module) -> None:
    """Refuse a teacher whose strides differ from the student's: their anchors would not align."""
    teacher_strides = [int(s) for s in teacher.stride]
    student_strides = [int(s) for s in student.stride]
    if teacher_strides != student_strides:
        raise UsageError(
            f"teacher strides {teacher_strides} differ from the student's {student_strides}, so their "
            "predictions cannot be compared anchor by anchor",
            "use a teacher of the same YOLO family, or set distillation.logit_weight=0, dfl_weight=0 "
            "and feature_weight=0 to keep only its pseudo-labels",
        )


def _feature_projectors(
    student: nn.Module, teacher: nn.Module, device: torch.device, saved: Path | None
) -> nn.ModuleList:
    """The 1x1 projectors from the student's neck features to the teacher's; reloaded from ``saved`` when it exists."""
    projectors = build_projectors(neck_channels(student, device), neck_channels(teacher, device)).to(device)
    if saved is not None and saved.is_file():
        from distillkit.safe_load import safe_torch_load

        projectors.load_state_dict(safe_torch_load(saved, map_location=device))
    return projectors


def _install_criterion(trainer: Any) -> None:
    """Give the model a criterion with the soft-target and KD terms (``on_train_start``, after the EMA copy)."""
    from ultralytics.utils.loss import v8DetectionLoss, v8SegmentationLoss
    from ultralytics.utils.torch_utils import unwrap_model

    model = unwrap_model(trainer.model)
    plain = type(model.init_criterion())
    if plain not in (v8DetectionLoss, v8SegmentationLoss):
        raise UsageError(
            f"the teacher's soft targets and KD terms need a YOLOv8/YOLO11-style head; {plain.__name__} is "
            "not supported",
            "use a yolov8/yolo11 student, or set distillation.soft_targets=false, logit_weight=0, dfl_weight=0 "
            "and feature_weight=0",
        )
    mixins: list[type] = []
    if trainer.soft_settings is not None:
        mixins.append(SoftTargetLossMixin)
    if trainer.kd_settings is not None:
        mixins.append(KDLossMixin)
    criterion = type(f"Distill{plain.__name__}", (*mixins, plain), {})(model)
    if trainer.soft_settings is not None:
        criterion.attach_soft_targets(trainer.soft_table[0])
    if trainer.kd_settings is not None:
        criterion.attach_teacher(
            trainer.kd_teacher,
            trainer.kd_settings.class_index,
            trainer.kd_projectors,
            trainer.kd_settings.weights,
            trainer.kd_settings.taught_classes,
        )
    model.criterion = criterion


def _save_projectors(trainer: Any) -> None:
    """Write the KD projectors next to the checkpoint (``on_model_save``), for ``--resume``."""
    if trainer.kd_projectors is not None:
        with atomic_open(Path(trainer.wdir) / PROJECTORS_FILE, "wb") as handle:
            torch.save(trainer.kd_projectors.state_dict(), handle)
