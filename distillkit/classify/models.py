"""Classifier models by name: any timm backbone, optional CBAM after chosen stages, a head sized from the data.

``build_classifier(spec)`` is the registry's factory. Names resolve through ``MODEL_BUILDERS`` first
(room for non-timm architectures) and then timm. Pretrained weights are only ever read from disk: an
explicit file, else the Hugging Face cache (``HF_HUB_OFFLINE`` semantics) or torch hub's checkpoint
folder where timm would have put them; never downloaded. A checkpoint stores the ``ClassifierSpec``
so the architecture is rebuilt without weights (``pretrained=False``) and the state dict loaded.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from distillkit.classify.cbam import StageWithAttention
from distillkit.errors import UsageError

#: Stage s (1-4) is the last backbone module whose output stride is 2**(s+1): 4, 8, 16, 32.
STAGE_STRIDES = {1: 4, 2: 8, 3: 16, 4: 32}


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything needed to rebuild a classifier's architecture (weights come separately)."""

    name: str
    num_classes: int
    cbam_stages: tuple[int, ...] = ()
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    in_chans: int = 3

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cbam_stages"] = list(self.cbam_stages)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierSpec:
        return cls(
            name=str(data["name"]),
            num_classes=int(data["num_classes"]),
            cbam_stages=tuple(int(s) for s in data.get("cbam_stages", ())),
            drop_rate=float(data.get("drop_rate", 0.0)),
            drop_path_rate=float(data.get("drop_path_rate", 0.0)),
            in_chans=int(data.get("in_chans", 3)),
        )


@dataclass
class BuiltClassifier:
    """A freshly built model and what happened to its weights."""

    model: TimmClassifier
    pretrained_from: Path | None
    notices: list[str] = field(default_factory=list)


class TimmClassifier(nn.Module):
    """A timm backbone (with its own head) plus the CBAM blocks inserted into its stages.

    ``forward`` returns logits (B, num_classes). ``forward_with_features`` also returns the pooled
    pre-logit features, which feature distillation matches between teacher and student.
    """

    def __init__(self, backbone: nn.Module, spec: ClassifierSpec, stage_modules: dict[int, str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        #: stage number -> dotted module path inside the backbone (where CBAM sits, if chosen)
        self.stage_modules = dict(stage_modules)

    @property
    def num_features(self) -> int:
        return int(getattr(self.backbone, "num_features", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, pooled features) in one pass."""
        feature_map = self.backbone.forward_features(x)
        pooled = self.backbone.forward_head(feature_map, pre_logits=True)
        return self.backbone.get_classifier()(pooled), pooled

    def last_stage_module(self) -> nn.Module:
        """The module producing the deepest spatial feature map (the Grad-CAM target)."""
        deepest = max(self.stage_modules) if self.stage_modules else None
        if deepest is None:
            raise UsageError(f"model {self.spec.name} has no spatial stage for Grad-CAM", "use a CNN backbone")
        return self.backbone.get_submodule(self.stage_modules[deepest])


# A registry entry builds a backbone nn.Module with a head for ``num_classes`` (no pretrained weights).
BackboneBuilder = Callable[[ClassifierSpec], nn.Module]
MODEL_BUILDERS: dict[str, BackboneBuilder] = {}


def register_model(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator adding a non-timm architecture under ``name``."""

    def wrap(builder: BackboneBuilder) -> BackboneBuilder:
        MODEL_BUILDERS[name] = builder
        return builder

    return wrap


# Hook for name families ("family:arguments", e.g. distillkit.classify.research's "research:..."):
# MODEL_BUILDERS["family:"] builds every such name; the module below registers it when first needed.
MODEL_FAMILY_MODULES = {"research": "distillkit.classify.research"}


def registered_builder(name: str) -> BackboneBuilder | None:
    """The registered builder for ``name``: its exact entry, else its "family:" entry, else None."""
    if name in MODEL_BUILDERS:
        return MODEL_BUILDERS[name]
    family, colon, _ = name.partition(":")
    if not colon:
        return None
    if family + ":" not in MODEL_BUILDERS and family in MODEL_FAMILY_MODULES:
        import importlib

        importlib.import_module(MODEL_FAMILY_MODULES[family])
    return MODEL_BUILDERS.get(family + ":")


def list_models(pattern: str = "*") -> list[str]:
    """Buildable names (registered ones, then every timm architecture) matching a glob pattern."""
    import timm

    names = sorted(MODEL_BUILDERS) + timm.list_models()
    return [name for name in names if fnmatch.fnmatch(name, pattern)]


def _timm_exists(name: str) -> bool:
    import timm

    return timm.is_model(name.split(".", 1)[0])


def _unknown_model(name: str) -> UsageError:
    import difflib

    import timm

    close = difflib.get_close_matches(name, list(MODEL_BUILDERS) + timm.list_models(), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see distillkit train-classifier --list-models"
    return UsageError(f"unknown classifier model '{name}'", hint)


def local_pretrained_file(name: str, weights: str | os.PathLike[str] | None = None) -> Path | None:
    """Where pretrained weights for ``name`` are on disk, or None. Never touches the network.

    An explicit ``weights`` path must exist (UsageError otherwise). Without one: the Hugging Face
    cache (``HF_HOME`` honoured) for the model's ``hf_hub_id``, then torch hub's checkpoint folder
    for its URL, which are the places timm would have downloaded them to.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UsageError(f"pretrained weights file {path} does not exist", "fix classifier.weights or drop it")
        return path
    if registered_builder(name) is not None:
        return None
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        cfg = None
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        for filename in filter(None, (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin")):
            found = try_to_load_from_cache(repo_id, filename, revision=revision or None)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    if cfg.url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if candidate.is_file():
            return candidate
    return None


def _create_backbone(spec: ClassifierSpec, pretrained_file: Path | None) -> nn.Module:
    builder = registered_builder(spec.name)
    if builder is not None:
        backbone = builder(spec)
        if pretrained_file is not None:
            _load_matching(backbone, _read_state_dict(pretrained_file))
        return backbone
    import timm

    kwargs: dict[str, Any] = {
        "num_classes": spec.num_classes,
        "drop_rate": spec.drop_rate,
        "in_chans": spec.in_chans,
    }
    if spec.drop_path_rate > 0:
        kwargs["drop_path_rate"] = spec.drop_path_rate
    if pretrained_file is not None:
        # timm loads from the given file and drops the 1000-class head when num_classes differs.
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained_file), "hf_hub_id": None})
    try:
        return timm.create_model(spec.name, **kwargs)
    except TypeError:  # an architecture without stochastic depth rejects drop_path_rate
        if "drop_path_rate" not in kwargs:
            raise
        kwargs.pop("drop_path_rate")
        return timm.create_model(spec.name, **kwargs)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from distillkit.safe_load import safe_torch_load

    loaded = safe_torch_load(path)  # under distillkit's allowlist (timm's argparse args included)
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    return loaded


def _load_matching(module: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Load the entries whose names and shapes match; return how many were loaded."""
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(usable, strict=False)
    return len(usable)


def stage_modules(backbone: nn.Module) -> dict[int, str]:
    """Stage number (1-4) -> module path, from timm's feature_info (the last module at each stride)."""
    info = getattr(backbone, "feature_info", None)
    entries = list(info) if info is not None else []
    found: dict[int, str] = {}
    for stage, stride in STAGE_STRIDES.items():
        at_stride = [entry for entry in entries if entry.get("reduction") == stride and entry.get("module")]
        if at_stride:
            found[stage] = str(at_stride[-1]["module"])
    return found


def _channels_of(backbone: nn.Module, module_path: str) -> int:
    for entry in backbone.feature_info:
        if entry.get("module") == module_path:
            return int(entry["num_chs"])
    raise KeyError(module_path)


def _replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)


def insert_cbam(backbone: nn.Module, stages: tuple[int, ...], name: str) -> dict[int, str]:
    """Wrap each chosen stage as ``StageWithAttention``; return the stage -> module path map."""
    available = stage_modules(backbone)
    for stage in stages:
        if stage not in available:
            raise UsageError(
                f"model {name} has no stage {stage} (a feature map at stride {STAGE_STRIDES[stage]}) to put CBAM after",
                f"stages it has: {sorted(available) or 'none (not a CNN)'}; change classifier.cbam_stages",
            )
        path = available[stage]
        _replace_module(backbone, path, StageWithAttention(backbone.get_submodule(path), _channels_of(backbone, path)))
    return available


def build_classifier(spec: ClassifierSpec, pretrained: bool = False, weights: str | None = None) -> BuiltClassifier:
    """Build ``spec``; with ``pretrained`` load local weights when found (else a notice, random init).

    CBAM blocks are inserted after the weights are loaded, so pretrained state dicts keep their
    keys. Raises UsageError for unknown names, impossible CBAM stages and missing explicit files.
    """
    if registered_builder(spec.name) is None and not _timm_exists(spec.name):
        raise _unknown_model(spec.name)
    notices: list[str] = []
    pretrained_file: Path | None = None
    if pretrained or weights is not None:
        pretrained_file = local_pretrained_file(spec.name, weights)
        if pretrained_file is None and registered_builder(spec.name) is not None:
            notices.append(  # no hub or cache could hold weights for an architecture distillkit assembles
                f"{spec.name} is assembled by distillkit and has no published pretrained weights: training from "
                "random initialisation (classifier.weights=FILE loads a state dict of this model)"
            )
        elif pretrained_file is None:
            notices.append(
                f"no local pretrained weights for {spec.name} (nothing is downloaded); training from random "
                "initialisation — put the weights in the Hugging Face cache or set classifier.weights=FILE"
            )
    backbone = _create_backbone(spec, pretrained_file)
    stages = insert_cbam(backbone, spec.cbam_stages, spec.name)
    if spec.cbam_stages:
        _check_spatial(backbone, spec)
    return BuiltClassifier(TimmClassifier(backbone, spec, stages), pretrained_file, notices)


def _check_spatial(backbone: nn.Module, spec: ClassifierSpec) -> None:
    """CBAM needs (B, C, H, W) stage outputs; token-sequence backbones (ViTs) fail here, clearly."""
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    size = tuple(cfg.get("input_size", (spec.in_chans, 64, 64)))[-2:]
    training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, spec.in_chans, *size))
    except (RuntimeError, IndexError, ValueError) as exc:
        raise UsageError(
            f"CBAM cannot follow the stages of {spec.name}: its stage outputs are not (B, C, H, W) maps ({exc})",
            "use a CNN backbone or set classifier.cbam_stages=[]",
        ) from None
    finally:
        backbone.train(training)
