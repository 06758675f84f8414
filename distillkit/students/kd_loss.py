"""Knowledge-distillation terms added to ultralytics' YOLO losses when the teacher is a YOLO model.

The teacher sees the same (augmented) batch at the same size as the student; with equal strides
the two heads predict on the same anchors, so they can be compared anchor by anchor:

* ``kd_logit``: YOLO scores classes with independent sigmoids, so the soft target of each class
  at each anchor is the teacher's sigmoid(logit / T) and the loss is the binary KL divergence
  (BCE minus the target's entropy: zero when the student matches) of the student's logit / T;
* ``kd_dfl``: KL divergence between the teacher's and student's box-side distributions (DFL
  bins), when both have the same ``reg_max``;
* ``kd_feat``: feature imitation on the neck outputs: a 1x1 projector maps each student level to
  the teacher's channels, both are standardised per channel (so the loss ignores the teacher's
  feature scale), and the squared error is averaged over channels.

Every term is averaged over anchors weighted by the teacher's best class score there, so the
student imitates the teacher where it sees objects rather than on the background that fills
most anchors. Classes the teacher does not know (``taught_classes``, decided on --val) are left
out of the logit term and of those weights: its low scores on them are ignorance, not knowledge.
Terms are multiplied by their weight and, like ultralytics' own terms, by the batch size; each
appears as a loss column (``kd_logit``, ``kd_dfl``, ``kd_feat``) in results.csv.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KD_TERMS = ("kd_logit", "kd_dfl", "kd_feat")


@dataclass(frozen=True)
class KDWeights:
    logit: float
    dfl: float
    feature: float
    temperature: float


def head_outputs(output: Any) -> dict[str, Any]:
    """The raw head dict (``boxes``, ``scores``, ``feats``) of a YOLO forward in train or eval mode."""
    if isinstance(output, (tuple, list)):
        output = next(item for item in output if isinstance(item, dict))
    if "one2many" in output:  # end-to-end heads: the dense one-to-many branch is the comparable one
        output = output["one2many"]
    return output


def anchor_weights(teacher_scores: torch.Tensor) -> torch.Tensor:
    """(B, A): the teacher's best class probability per anchor (0 where it is taught no class at all)."""
    if teacher_scores.shape[1] == 0:
        return teacher_scores.new_zeros((teacher_scores.shape[0], teacher_scores.shape[2]))
    return teacher_scores.sigmoid().amax(dim=1)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp(min=1e-6)


def logit_kd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    weights: torch.Tensor,
    temperature: float,
    class_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary KL of per-class sigmoid scores; ``student``/``teacher`` are (B, C, A) logits.

    ``class_mask`` (C,) of 0/1 leaves classes out.
    """
    target = (teacher / temperature).sigmoid()
    bce = F.binary_cross_entropy_with_logits(student.float() / temperature, target.float(), reduction="none")
    entropy = F.binary_cross_entropy(target.float(), target.float(), reduction="none")
    divergence = bce - entropy
    if class_mask is not None:
        divergence = divergence * class_mask.view(1, -1, 1)
    return _weighted_mean(divergence.sum(dim=1), weights) * temperature**2


def dfl_kd(
    student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, reg_max: int, temperature: float
) -> torch.Tensor:
    """KL divergence of the four box-side distributions; inputs are (B, 4 * reg_max, A) logits."""
    batch, _, anchors = student.shape
    log_student = (student.float().view(batch, 4, reg_max, anchors) / temperature).log_softmax(dim=2)
    log_teacher = (teacher.float().view(batch, 4, reg_max, anchors) / temperature).log_softmax(dim=2)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=2).mean(dim=1)
    return _weighted_mean(kl, weights) * temperature**2


def _standardise(features: torch.Tensor) -> torch.Tensor:
    flat = features.float().flatten(2)
    return (flat - flat.mean(dim=2, keepdim=True)) / (flat.std(dim=2, keepdim=True) + 1e-6)


def feature_kd(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], projectors: nn.ModuleList, weights: torch.Tensor
) -> torch.Tensor:
    """Projected student neck features against the teacher's, per level, anchor-weighted."""
    sizes = [t.shape[2] * t.shape[3] for t in teacher]
    level_weights = weights.split(sizes, dim=1)
    losses = []
    for projector, s, t, w in zip(projectors, student, teacher, level_weights, strict=True):
        error = (_standardise(projector(s)) - _standardise(t)).pow(2).mean(dim=1)  # (B, H*W)
        losses.append(_weighted_mean(error, w))
    return torch.stack(losses).mean()


def build_projectors(student_channels: Sequence[int], teacher_channels: Sequence[int]) -> nn.ModuleList:
    return nn.ModuleList(
        nn.Conv2d(s, t, kernel_size=1) for s, t in zip(student_channels, teacher_channels, strict=True)
    )


class KDLossMixin:
    """Adds the KD terms to a ``v8DetectionLoss`` / ``v8SegmentationLoss`` subclass (see ``distill_trainer``)."""

    teacher: nn.Module
    class_index: torch.Tensor
    class_mask: torch.Tensor | None
    projectors: nn.ModuleList | None
    kd: KDWeights
    reg_max: int
    use_dfl_kd: bool

    def attach_teacher(
        self,
        teacher: nn.Module,
        class_index: Sequence[int],
        projectors: nn.ModuleList | None,
        weights: KDWeights,
        taught_classes: Sequence[bool] | None = None,
    ) -> None:
        device = next(teacher.parameters()).device
        self.teacher = teacher
        self.class_index = torch.as_tensor(list(class_index), dtype=torch.long, device=device)
        self.class_mask = (
            None
            if taught_classes is None or all(taught_classes)
            else torch.as_tensor([float(t) for t in taught_classes], device=device)
        )
        self.projectors = projectors
        self.kd = weights
        self.use_dfl_kd = weights.dfl > 0 and int(teacher.model[-1].reg_max) == self.reg_max

    def loss(self, preds: dict[str, Any], batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, items = super().loss(preds, batch)  # type: ignore[misc]
        student = head_outputs(preds)
        with torch.no_grad():
            teacher = head_outputs(self.teacher(batch["img"]))
            teacher_scores = teacher["scores"].index_select(1, self.class_index)
            known = teacher_scores if self.class_mask is None else teacher_scores[:, self.class_mask > 0]
            weights = anchor_weights(known)
        zero = total.new_zeros(())
        terms = {name: zero for name in KD_TERMS}
        if self.kd.logit > 0:
            terms["kd_logit"] = (
                logit_kd(student["scores"], teacher_scores, weights, self.kd.temperature, self.class_mask)
                * self.kd.logit
            )
        if self.use_dfl_kd:
            terms["kd_dfl"] = (
                dfl_kd(student["boxes"], teacher["boxes"], weights, self.reg_max, self.kd.temperature) * self.kd.dfl
            )
        if self.kd.feature > 0 and self.projectors is not None:
            terms["kd_feat"] = (
                feature_kd(student["feats"], teacher["feats"], self.projectors, weights) * self.kd.feature
            )
        extra = torch.stack([terms[name].to(total.dtype) for name in KD_TERMS])
        items = {**items, **{name: value.detach() for name, value in terms.items()}}
        return torch.cat([total, extra * student["scores"].shape[0]]), items
