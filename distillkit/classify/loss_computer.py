"""The one ``compute_loss(model, batch)`` of every classifier run: mixing, the hard loss, distillation.

``LossComputer`` mixes the batch (``mixing.BatchMixer``), takes the hard loss of the mixed soft
targets and, with a teacher, the KD and feature terms (``distill.py``). The research objectives are
options of the same computer:

- ``margin_loss`` (margin heads): the hard loss is the margin loss of the two hard labels of the
  mixed batch, weighted by the mix share ``lam`` (a margin head needs one true class per image);
- ``supcon`` (a supervised-contrastive phase): ``num_views`` random views per image, the SupCon
  loss on the projected features plus an online linear probe; no mixing, no teacher.

The random draws of a batch (mix, views) are cached for its image tensor, so the second
forward-backward pass of SAM sees exactly the same inputs as the first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distillkit.classify.distill import distillation_total, feature_loss, kd_logit_loss
from distillkit.classify.mixing import BatchMixer, MixedBatch


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


@dataclass
class LossComputer:
    """``compute_loss(model, batch)`` for the Trainer; see the module docstring."""

    criterion: nn.Module
    mixer: BatchMixer = field(default_factory=BatchMixer)
    multi_label: bool = False
    teacher: Any = None
    kd_temperature: float = 4.0
    kd_alpha: float = 0.5
    feature_weight: float = 0.0
    margin_loss: Any = None  # a research.margins.MarginLoss: margin heads
    supcon: bool = False
    num_views: int = 2
    supcon_temperature: float = 0.1
    _cache: tuple[torch.Tensor, Any] | None = field(default=None, repr=False)

    def _draw(self, images: torch.Tensor, make: Callable[[], Any]) -> Any:
        # The cache holds the batch tensor itself (not its id, which a later batch could reuse).
        if self._cache is None or self._cache[0] is not images:
            self._cache = (images, make())
        return self._cache[1]

    def __call__(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        if self.supcon:
            return self._supcon(model, images, targets)
        mixed: MixedBatch = self._draw(images, lambda: self.mixer.mix(images, targets))
        logits, features = model(mixed.images)
        if self.margin_loss is not None:
            hard = self._margin(logits, features, mixed)
        else:
            hard = self.criterion(logits, mixed.soft_targets)
        terms: dict[str, torch.Tensor] = {"hard": hard.detach()}
        kd = feature = None
        if self.teacher is not None:
            teacher_logits, teacher_features = self.teacher(mixed.images)
            kd = kd_logit_loss(logits, teacher_logits, self.kd_temperature, self.multi_label)
            terms["kd"] = kd.detach()
            if self.feature_weight > 0:
                feature = feature_loss(features, teacher_features, _inner(model).projector)
                terms["feature"] = feature.detach()
        terms["loss"] = distillation_total(hard, kd, feature, self.kd_alpha, self.feature_weight)
        return terms

    def _margin(self, logits: torch.Tensor, features: torch.Tensor, mixed: MixedBatch) -> torch.Tensor:
        cosine = logits.float() / self.margin_loss.scale  # the head's scale: both are classifier.margin_scale
        norms = features.float().norm(dim=1)
        loss = self.margin_loss(cosine, mixed.targets_a.argmax(dim=1), norms)
        if mixed.lam < 1.0:
            loss = mixed.lam * loss + (1 - mixed.lam) * self.margin_loss(cosine, mixed.targets_b.argmax(dim=1), norms)
        return loss

    def _supcon(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        from distillkit.classify.research.objectives import supcon_loss
        from distillkit.classify.research.views import random_views

        batch = images.shape[0]
        views = self._draw(images, lambda: random_views(images, self.num_views))
        _, features = model(views.flatten(0, 1))
        inner = _inner(model)
        projected = inner.supcon_projector(features).view(batch, self.num_views, -1)
        labels = targets.argmax(dim=1)
        contrastive = supcon_loss(projected, labels, self.supcon_temperature)
        # An online linear probe on the detached features trains the head alongside, so validation
        # accuracy means something during the phase and the checkpoint is a usable classifier.
        head = inner.classifier.backbone.get_classifier()
        probe = F.cross_entropy(head(features.detach()).float(), labels.repeat_interleave(self.num_views))
        return {"loss": contrastive + probe, "supcon": contrastive.detach(), "probe": probe.detach()}
