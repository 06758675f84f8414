"""Weight selection: start a small student from weights picked out of its larger, trained teacher.

Xu et al., "Initializing Models with Larger Ones" (ICLR 2024): a narrow network of the same family
as a trained wide one (yolov8n from yolov8s: same depth, half the channels) is initialised by
selecting, in every tensor, an evenly spaced subset of the teacher's channels. Selecting *every
k-th* channel (rather than the first N) keeps the choice consistent across the network's
channel splits and concatenations (C2f's ``chunk(2)``, SPPF's and the neck's ``cat``): a channel
kept by a producer is exactly the channel its consumers keep, so the selected sub-network computes
a coherent (if weaker) version of the teacher's features. Training from that start instead of
random weights is the largest single gain of distillation for short from-scratch schedules.

Rules, per student tensor: same name in the teacher, same number of dimensions; along every
dimension the teacher is as large as the student (all kept) or an integer multiple of it (every
k-th kept); the classification outputs of the detection head take the teacher's rows of the
matching classes. Weights that lose input channels are scaled by the ratio (so the teacher's
BatchNorm statistics still fit). Any other tensor keeps its random initialisation and is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class SelectionReport:
    """How much of the student came from the teacher."""

    inherited: int = 0  # student parameters (elements) selected from the teacher
    total: int = 0  # all student parameter elements
    kept_random: list[str] = field(default_factory=list)  # student tensors left as initialised

    @property
    def fraction(self) -> float:
        return self.inherited / self.total if self.total else 0.0


def select_tensor(
    teacher: torch.Tensor, student_shape: Sequence[int], rows: Sequence[int] | None = None
) -> torch.Tensor | None:
    """``teacher`` reduced to ``student_shape`` by uniform channel selection; None when it cannot be.

    ``rows`` (optional) are the teacher indices to take along dimension 0 instead.
    """
    if teacher.dim() != len(student_shape):
        return None
    selected = teacher
    for dim, (big, small) in enumerate(zip(teacher.shape, student_shape, strict=True)):
        if dim == 0 and rows is not None:
            if len(rows) != small or max(rows, default=-1) >= big:
                return None
            index = torch.as_tensor(list(rows), dtype=torch.long, device=teacher.device)
        elif big == small:
            continue
        elif small and big > small and big % small == 0:
            index = torch.arange(0, big, big // small, device=teacher.device)
        else:
            return None
        selected = selected.index_select(dim, index)
        if dim == 1:
            # A weight summing over 1/k of its inputs is scaled by k, so each output keeps the teacher's
            # scale and the teacher's BatchNorm statistics stay valid for the student (without this the
            # selected start scores zero until those statistics are re-estimated, many epochs on small data).
            selected = selected * (big // small)
    return selected


def class_output_names(model: nn.Module) -> list[str]:
    """State-dict prefixes of the detection head's per-class output convolutions (YOLOv8/11/v10 style)."""
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or len(layers) == 0:
        return []
    head = layers[-1]
    names = []
    for attribute in ("cv3", "one2one_cv3"):
        branches = getattr(head, attribute, None)
        if isinstance(branches, nn.ModuleList):
            for branch_index, branch in enumerate(branches):
                if isinstance(branch, nn.Sequential) and isinstance(branch[-1], nn.Conv2d):
                    names.append(f"model.{len(layers) - 1}.{attribute}.{branch_index}.{len(branch) - 1}")
    return names


def select_weights(teacher: nn.Module, student: nn.Module, class_index: Sequence[int] | None = None) -> SelectionReport:
    """Overwrite ``student``'s weights (in place) with those selected from ``teacher``.

    ``class_index[i]`` is the teacher class of the student's class ``i`` (the head's class rows).
    Buffers (BatchNorm statistics) are selected like parameters; only parameters are counted.
    """
    teacher_state = {name: tensor.detach().float() for name, tensor in teacher.state_dict().items()}
    parameter_names = {name for name, _ in student.named_parameters()}
    class_rows = {f"{prefix}.{kind}" for prefix in class_output_names(student) for kind in ("weight", "bias")}
    report = SelectionReport()
    new_state: dict[str, torch.Tensor] = {}
    for name, tensor in student.state_dict().items():
        counted = name in parameter_names
        report.total += tensor.numel() if counted else 0
        source = teacher_state.get(name)
        rows = class_index if name in class_rows and class_index is not None else None
        selected = None if source is None else select_tensor(source, tuple(tensor.shape), rows)
        if selected is None:
            report.kept_random.append(name)
            continue
        new_state[name] = selected.to(dtype=tensor.dtype, device=tensor.device)
        report.inherited += tensor.numel() if counted else 0
    student.load_state_dict(new_state, strict=False)
    return report


def inherited_student(
    student_yolo: Any, teacher_model: nn.Module, class_names: Sequence[str], class_index: Sequence[int]
) -> tuple[nn.Module, SelectionReport]:
    """A fresh copy of ``student_yolo``'s architecture for ``class_names``, weights selected from the teacher.

    ``student_yolo`` is an ``ultralytics.YOLO`` built from a yaml (random weights, 80 classes by
    default); the returned model has the dataset's classes and names.
    """
    architecture = student_yolo.model
    model = type(architecture)(cfg=dict(architecture.yaml), nc=len(class_names), verbose=False)
    report = select_weights(teacher_model, model, class_index)
    model.names = dict(enumerate(class_names))
    return model, report
