"""The hooks through which ``train-classifier`` runs the research techniques of ``defaults/classifier.yaml``.

- ``research_model_name(name, settings)``: the model name to build — unchanged when no architecture
  switch is on, else a ``research:`` name (hybrid stream, TokenLearner, ToMe, cosine head, LoRA).
- ``build_research_training(...)``: the loss computer (mixing strategy, margin heads, SupCon phase,
  distillation), Trainer callbacks (evidential KL annealing, LoRA adapter files) and the optimiser
  wrapper (SAM / Lookahead / gradient centralisation); also compiles the model when asked.
With every switch at its default the plain path of ``train.py`` is used unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distillkit.classify.distill import distillation_total, feature_loss, kd_logit_loss
from distillkit.classify.research.margins import MARGIN_LOSSES, MarginLoss, build_margin_loss
from distillkit.classify.research.mixing import MixedBatch, Mixer
from distillkit.classify.research.objectives import EvidentialLoss, supcon_loss
from distillkit.classify.research.optim import wrap_optimizer
from distillkit.classify.research.spec import PREFIX, ResearchModel
from distillkit.classify.research.views import random_views
from distillkit.config.schema import ClassifierConfig
from distillkit.errors import UsageError

LORA_DIR = "lora_adapter"
SUPCON_PROJECTION_DIM = 128


def _side(settings: ClassifierConfig) -> int:
    size = settings.imgsz
    return int(size) if isinstance(size, int) else int(size[0])


def research_model_name(name: str, settings: ClassifierConfig) -> str:
    """The classifier model name with the architecture switches of ``settings`` applied."""
    wants_cosine = settings.head != "linear"
    switches = (
        settings.hybrid_vit
        or settings.token_learner_tokens > 0
        or settings.token_merging_ratio > 0
        or settings.lora_rank > 0
        or wants_cosine
        or settings.loss == "evidential"
    )
    if not switches and not name.startswith(PREFIX):
        return name
    model = ResearchModel.parse(name)
    changes: dict[str, Any] = {
        "head": "cosine" if wants_cosine else "linear",
        "scale": settings.margin_scale if wants_cosine else model.scale,
        "lora": settings.lora_rank,
        "tome": settings.token_merging_ratio,
        "pretrained": bool(settings.pretrained),
        "evidential": settings.loss == "evidential",
    }
    if settings.hybrid_vit and not model.vit:
        changes.update(vit=settings.hybrid_vit, fusion_dim=settings.fusion_dim)
    if settings.token_learner_tokens > 0:
        changes["tokens"] = settings.token_learner_tokens
    if (model.vit or settings.hybrid_vit or settings.token_merging_ratio > 0) and not model.img:
        changes["img"] = _side(settings)
    updated = model.with_changes(**changes)
    if updated == ResearchModel(backbone=updated.backbone, pretrained=updated.pretrained):
        return updated.backbone  # every switch off again (e.g. fine-tuning a research checkpoint plainly)
    return updated.name


def research_active(settings: ClassifierConfig) -> bool:
    """Whether the loss computer of this package is needed (else train.py's own is used)."""
    return settings.head != "linear" or settings.supcon or settings.mixing not in ("auto",)


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _patch_size(classifier: nn.Module) -> int:
    """The ViT patch size of the model (ViT backbone or hybrid ViT stream); 16 when there is none."""
    for module in classifier.modules():
        patch = getattr(module, "patch_embed", None)
        size = getattr(patch, "patch_size", None)
        if size is not None:
            return int(size[0] if isinstance(size, tuple | list) else size)
    return 16


@dataclass
class ResearchLossComputer:
    """``compute_loss(model, batch)`` with mixing strategies, margin heads, SupCon and distillation.

    The random draws of a batch (mix, views) are cached for its image tensor, so the second
    forward-backward pass of SAM sees exactly the same inputs as the first.
    """

    criterion: nn.Module
    mixer: Mixer
    margin_loss: MarginLoss | None = None
    supcon: bool = False
    num_views: int = 2
    supcon_temperature: float = 0.1
    teacher: Any = None
    kd_temperature: float = 4.0
    kd_alpha: float = 0.5
    feature_weight: float = 0.0
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
        mixed: MixedBatch = self._draw(images, lambda: self.mixer(images, targets))
        logits, features = model(mixed.images)
        terms: dict[str, torch.Tensor] = {}
        if self.margin_loss is not None:
            hard = self._margin(logits, features, mixed)
        else:
            hard = self.criterion(logits, mixed.soft_targets)
        terms["hard"] = hard.detach()
        kd = feature = None
        if self.teacher is not None:
            teacher_logits, teacher_features = self.teacher(mixed.images)
            kd = kd_logit_loss(logits, teacher_logits, self.kd_temperature, False)
            terms["kd"] = kd.detach()
            if self.feature_weight > 0:
                feature = feature_loss(features, teacher_features, _inner(model).projector)
                terms["feature"] = feature.detach()
        terms["loss"] = distillation_total(hard, kd, feature, self.kd_alpha, self.feature_weight)
        return terms

    def _margin(self, logits: torch.Tensor, features: torch.Tensor, mixed: MixedBatch) -> torch.Tensor:
        assert self.margin_loss is not None
        cosine = logits.float() / self.margin_loss.scale  # the head's scale: both are classifier.margin_scale
        norms = features.float().norm(dim=1)
        loss = self.margin_loss(cosine, mixed.targets_a.argmax(dim=1), norms)
        if mixed.lam < 1.0:
            loss = mixed.lam * loss + (1 - mixed.lam) * self.margin_loss(cosine, mixed.targets_b.argmax(dim=1), norms)
        return loss

    def _supcon(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
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


class EvidentialAnnealing:
    """Trainer callback: the evidential loss's KL weight follows the epoch (resume-safe)."""

    def __init__(self, loss: EvidentialLoss) -> None:
        self.loss = loss

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.loss.set_epoch(epoch)


class LoraAdapterWriter:
    """Trainer callback: the evaluated adapters go to ``EXP/lora_adapter/`` whenever the epoch is the best."""

    def __init__(self, output_dir: Path) -> None:
        self.folder = output_dir / LORA_DIR

    def on_epoch_end(self, trainer: Any, epoch: int, row: dict[str, Any]) -> None:
        from distillkit.classify.research.lora import save_lora_adapter

        if not trainer.world.is_main or trainer.monitor.best_epoch != epoch:
            return
        backbone = _inner(trainer.model).classifier.backbone
        swap = trainer.ema.swapped_in() if trainer.ema is not None else _Nothing()
        with swap:
            save_lora_adapter(backbone, self.folder)


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass
class ResearchTraining:
    """What train_classifier plugs into the Trainer."""

    compute_loss: Callable[[nn.Module, Any], dict[str, torch.Tensor]]
    callbacks: list[Any]
    optimizer_wrapper: Callable[[torch.optim.Optimizer], torch.optim.Optimizer] | None
    notices: list[str]


def _check(settings: ClassifierConfig, multi_label: bool) -> None:
    if multi_label and (settings.head != "linear" or settings.supcon or settings.loss == "evidential"):
        raise UsageError(
            "margin heads, SupCon and the evidential loss are for single-label data; this data is multi-label",
            "set classifier.head=linear, classifier.supcon=false and classifier.loss=bce or focal",
        )
    if settings.head != "linear" and settings.head not in MARGIN_LOSSES:
        raise UsageError(f"unknown classifier.head '{settings.head}'", f"use linear or {', '.join(MARGIN_LOSSES)}")


def build_research_training(
    settings: ClassifierConfig,
    module: nn.Module,
    criterion: nn.Module,
    default_compute_loss: Callable[[nn.Module, Any], dict[str, torch.Tensor]],
    multi_label: bool,
    output_dir: Path,
    teacher: Any = None,
    feature_weight: float = 0.0,
) -> ResearchTraining:
    """Assemble the research pieces for ``module`` (a ClassifierTrainingModule); see the module docstring."""
    _check(settings, multi_label)
    notices: list[str] = []
    callbacks: list[Any] = []
    compute_loss = default_compute_loss
    if research_active(settings):
        classifier = module.classifier  # type: ignore[attr-defined]
        margin = None
        if settings.head != "linear":
            margin = build_margin_loss(settings.head, settings.margin_scale, settings.margin)
            module.add_module("margin_loss", margin)  # its running statistics travel with the model
        if settings.supcon:
            width = int(classifier.num_features)
            module.add_module(
                "supcon_projector",
                nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, SUPCON_PROJECTION_DIM)),
            )
        strategy, alpha = settings.mixing, settings.mixing_alpha
        if strategy == "auto":  # the plain mixup_alpha / cutmix_alpha settings, one strategy per run
            strategy, alpha = (
                ("mixup", settings.mixup_alpha)
                if settings.mixup_alpha > 0
                else ("cutmix", settings.cutmix_alpha)
                if settings.cutmix_alpha > 0
                else ("none", 1.0)
            )
        mixer = Mixer(strategy, alpha, _patch_size(classifier))
        if strategy == "tokenmix" and not any(hasattr(m, "patch_embed") for m in classifier.modules()):
            notices.append("tokenmix on a model without ViT patches: using 16-pixel cells")
        compute_loss = ResearchLossComputer(
            criterion=criterion,
            mixer=mixer,
            margin_loss=margin,
            supcon=settings.supcon,
            num_views=settings.num_views,
            supcon_temperature=settings.supcon_temperature,
            teacher=teacher,
            kd_temperature=settings.kd_temperature,
            kd_alpha=settings.kd_alpha,
            feature_weight=feature_weight,
        )
    if isinstance(criterion, EvidentialLoss):
        callbacks.append(EvidentialAnnealing(criterion))
    if settings.lora_rank > 0:
        callbacks.append(LoraAdapterWriter(output_dir))
    wrapper = None
    if settings.sam_rho > 0 or settings.lookahead_k > 0 or settings.grad_centralization:
        wrapper = partial(
            wrap_optimizer,
            sam_rho=settings.sam_rho,
            lookahead_k=settings.lookahead_k,
            lookahead_alpha=settings.lookahead_alpha,
            grad_centralization=settings.grad_centralization,
        )
    if settings.compile:
        # In place (nn.Module.compile): the state-dict keys stay those of the plain module.
        module.compile()
        notices.append("torch.compile: the first steps are slow while the graph compiles")
    return ResearchTraining(compute_loss, callbacks, wrapper, notices)


def evidential_loss_factory(config: ClassifierConfig, multi_label: bool, counts: Any, n: int) -> nn.Module:
    """The ``evidential`` entry of the classifier losses registry."""
    if multi_label:
        raise UsageError("the evidential loss is for single-label data", "use classifier.loss=bce or focal")
    return EvidentialLoss(config.evidential_kl_weight, config.evidential_anneal_epochs)


def register_losses(registry: dict[str, Any], names: Sequence[str] = ("evidential",)) -> None:
    if "evidential" in names:
        registry.setdefault("evidential", evidential_loss_factory)
