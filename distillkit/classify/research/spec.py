"""Research architectures as classifier model names: ``research:key=value,...``.

A classifier checkpoint rebuilds its architecture from the model name alone (``ClassifierSpec``),
so everything that changes the module tree — the hybrid second stream, TokenLearner, token merging,
the cosine head, LoRA adapters — is encoded in the name, e.g.::

    research:backbone=convnextv2_atto,vit=vit_tiny_patch16_224,fusion_dim=256,tokens=8,head=cosine,scale=30

``ResearchModel.parse`` / ``.name`` convert both ways; ``build_research_backbone`` (registered as the
``research:`` family of ``distillkit.classify.models``) builds the module with its head.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from torch import nn

from distillkit.classify.models import ClassifierSpec, local_pretrained_file
from distillkit.classify.research.hybrid import HybridBackbone
from distillkit.classify.research.lora import inject_lora
from distillkit.classify.research.margins import CosineHead
from distillkit.classify.research.token_merging import apply_token_merging
from distillkit.errors import UsageError

PREFIX = "research:"
HEADS = ("linear", "cosine")


@dataclass(frozen=True)
class ResearchModel:
    backbone: str
    vit: str | None = None  # hybrid: the transformer stream fused with `backbone`
    fusion_dim: int = 256
    tokens: int = 0  # TokenLearner tokens on the ViT stream; 0: off
    tome: float = 0.0  # token merging ratio per block; 0: off
    head: str = "linear"  # linear | cosine (margin heads train through a cosine head)
    scale: float = 30.0  # cosine head scale s
    lora: int = 0  # LoRA rank; 0: off
    img: int = 0  # ViT input side (0: the timm default)
    vit_depth: int = 0  # override the ViT depth (small CPU benchmarks / tests); 0: as built
    vit_patch: int = 0  # override the ViT patch size (small inputs; random init only); 0: as built
    pretrained: bool = False  # load local pretrained weights of the timm parts when found
    evidential: bool = False  # trained with the evidential loss: logits are Dirichlet evidence (u = K / S)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise UsageError(f"unknown research head '{self.head}'", f"use one of {', '.join(HEADS)}")
        if self.tokens and not self.vit:
            raise UsageError("TokenLearner works on the ViT stream of the hybrid", "set classifier.hybrid_vit too")
        if not 0.0 <= self.tome <= 0.5:
            raise UsageError(f"token merging ratio {self.tome} is outside [0, 0.5]", "use e.g. 0.1 to 0.3")

    @property
    def name(self) -> str:
        parts = [f"backbone={self.backbone}"]
        for item in fields(self)[1:]:
            value = getattr(self, item.name)
            if value != item.default:
                parts.append(f"{item.name}={int(value) if isinstance(value, bool) else value}")
        return PREFIX + ",".join(parts)

    @classmethod
    def parse(cls, name: str) -> ResearchModel:
        if not name.startswith(PREFIX):
            return cls(backbone=name)
        types = {item.name: item.type for item in fields(cls)}
        values: dict[str, Any] = {}
        for part in filter(None, name[len(PREFIX) :].split(",")):
            key, eq, text = part.partition("=")
            if not eq or key not in types:
                raise UsageError(f"cannot read '{part}' in model name {name}", f"keys: {', '.join(types)}")
            kind = types[key]
            if "bool" in str(kind):
                values[key] = text in ("1", "true", "True")
            elif "int" in str(kind):
                values[key] = int(text)
            elif "float" in str(kind):
                values[key] = float(text)
            else:
                values[key] = text
        if "backbone" not in values:
            raise UsageError(f"model name {name} has no backbone=", "e.g. research:backbone=resnet18,head=cosine")
        return cls(**values)

    def with_changes(self, **changes: Any) -> ResearchModel:
        return replace(self, **changes)


def _create_timm(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    import timm

    if not timm.is_model(name.split(".", 1)[0]):
        raise UsageError(f"unknown timm model '{name}' in a research model name", "see timm.list_models()")
    weights = local_pretrained_file(name) if pretrained else None
    if weights is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights), "hf_hub_id": None})
    try:
        return timm.create_model(name, **kwargs)
    except TypeError:  # architectures without stochastic depth / img_size reject those keywords
        kwargs.pop("drop_path_rate", None)
        return timm.create_model(name, **kwargs)


def _vit_kwargs(model: ResearchModel, spec: ClassifierSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"in_chans": spec.in_chans}
    if model.img:
        kwargs["img_size"] = model.img
    if model.vit_depth:
        kwargs["depth"] = model.vit_depth
    if model.vit_patch:
        kwargs["patch_size"] = model.vit_patch
    if spec.drop_path_rate > 0:
        kwargs["drop_path_rate"] = spec.drop_path_rate
    return kwargs


def _head_path(backbone: nn.Module) -> str:
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    path = cfg.get("classifier") if isinstance(cfg, dict) else None
    if not path:
        raise UsageError(f"cannot find the classifier head of {type(backbone).__name__}", "use a timm model")
    return str(path)


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent_path) if parent_path else root, child, new)


def build_research_backbone(spec: ClassifierSpec) -> nn.Module:
    """The ``research:`` family builder (see the module docstring)."""
    model = ResearchModel.parse(spec.name)
    if model.vit:
        cnn_kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": spec.in_chans}
        if spec.drop_path_rate > 0:
            cnn_kwargs["drop_path_rate"] = spec.drop_path_rate
        cnn = _create_timm(model.backbone, model.pretrained, **cnn_kwargs)
        own_shape = not model.vit_depth and not model.vit_patch  # pretrained weights only fit the named shape
        vit = _create_timm(model.vit, model.pretrained and own_shape, num_classes=0, **_vit_kwargs(model, spec))
        if model.tome:
            apply_token_merging(vit, model.tome)
        backbone: nn.Module = HybridBackbone(
            cnn, vit, spec.num_classes, model.fusion_dim, model.tokens, drop_rate=spec.drop_rate
        )
        trainable = ("head", "gate", "proj", "vit_stream.token_learner")
    else:
        kwargs: dict[str, Any] = {"num_classes": spec.num_classes, "drop_rate": spec.drop_rate}
        is_vit_name = model.img or model.vit_depth or model.vit_patch or model.tome
        kwargs.update(_vit_kwargs(model, spec) if is_vit_name else {"in_chans": spec.in_chans})
        if spec.drop_path_rate > 0:
            kwargs["drop_path_rate"] = spec.drop_path_rate
        own_shape = not model.vit_depth and not model.vit_patch
        backbone = _create_timm(model.backbone, model.pretrained and own_shape, **kwargs)
        if model.tome:
            try:
                apply_token_merging(backbone, model.tome)
            except ValueError as exc:
                raise UsageError(str(exc), "token merging needs a ViT backbone (or classifier.hybrid_vit)") from None
        trainable = (_head_path(backbone),)
    if model.head == "cosine":
        head_path = _head_path(backbone)
        _replace(backbone, head_path, CosineHead(int(backbone.num_features), spec.num_classes, model.scale))
    if model.lora:
        inject_lora(backbone, model.lora, trainable)
    return backbone


def research_model(spec_name: str) -> ResearchModel | None:
    """The parsed research model of a classifier name, or None for plain timm names."""
    return ResearchModel.parse(spec_name) if spec_name.startswith(PREFIX) else None
