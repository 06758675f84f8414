"""The hooks through which ``train-classifier`` runs the research techniques of ``defaults/classifier.yaml``.

- ``research_model_name(name, settings)``: the model name to build — unchanged when no architecture
  switch is on, else a ``research:`` name (hybrid stream, TokenLearner, ToMe, cosine head, LoRA).
- ``build_research_training(...)``: the options of the run's one loss computer
  (``classify/loss_computer.py``: margin heads, SupCon phase), Trainer callbacks (evidential KL
  annealing, LoRA adapter files) and the optimiser wrapper (SAM / Lookahead / gradient
  centralisation); also compiles the model when asked. Mixing is ``classify/mixing.py``'s, on every run.
With every switch at its default the plain run of ``train.py`` is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillkit.classify.research.margins import MARGIN_LOSSES, build_margin_loss
from distillkit.classify.research.objectives import EvidentialLoss
from distillkit.classify.research.optim import wrap_optimizer
from distillkit.classify.research.spec import PREFIX, ResearchModel
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


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


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
    compute_loss: Any,
    multi_label: bool,
    output_dir: Path,
) -> ResearchTraining:
    """Assemble the research pieces for ``module`` (a ClassifierTrainingModule); see the module docstring.

    ``compute_loss`` is the run's ``classify.loss_computer.LossComputer``; the returned one carries the
    margin-head and SupCon options of ``settings`` (the same computer when both are off).
    """
    _check(settings, multi_label)
    notices: list[str] = []
    callbacks: list[Any] = []
    criterion = compute_loss.criterion
    classifier = module.classifier  # type: ignore[attr-defined]
    if settings.head != "linear":
        margin = build_margin_loss(settings.head, settings.margin_scale, settings.margin)
        module.add_module("margin_loss", margin)  # its running statistics travel with the model
        compute_loss = replace(compute_loss, margin_loss=margin)
    if settings.supcon:
        width = int(classifier.num_features)
        module.add_module(
            "supcon_projector",
            nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, SUPCON_PROJECTION_DIM)),
        )
        compute_loss = replace(
            compute_loss, supcon=True, num_views=settings.num_views, supcon_temperature=settings.supcon_temperature
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
