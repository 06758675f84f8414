"""The self-contained classifier checkpoint: architecture spec, weights, classes and preprocessing.

Layout of a ``.pt`` file (``torch.save`` of a dict, loadable with ``weights_only=True``)::

    {"distillkit": {"kind": "classifier", "format": 1, "spec": {...ClassifierSpec...},
                    "class_names": [...], "multi_label": bool, "imgsz": int | [h, w],
                    "mean": [...], "std": [...], "interpolation": str,
                    "threshold": float, "thresholds": [per class] | None, "temperature": float,
                    "metrics": {...}, "epoch": int | None, "distillkit_version": str},
     "model": state_dict}

Everything needed at inference (and by the ONNX exporter) is inside, so a checkpoint can be copied
alone to another machine. The architecture is rebuilt from ``spec`` with ``pretrained=False``:
loading never needs the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillkit import __version__
from distillkit.classify.models import ClassifierSpec, TimmClassifier, build_classifier
from distillkit.errors import UsageError
from distillkit.io import atomic_open
from distillkit.safe_load import UnsafeModelFileError, safe_torch_load

KIND = "classifier"
FORMAT_VERSION = 1

PathLike = str | os.PathLike[str]


@dataclass
class ClassifierMeta:
    """The non-weight part of a classifier checkpoint."""

    spec: ClassifierSpec
    class_names: list[str]
    multi_label: bool
    imgsz: int | tuple[int, int]
    mean: list[float]
    std: list[float]
    interpolation: str = "bilinear"
    threshold: float = 0.5
    thresholds: list[float] | None = None
    temperature: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "format": FORMAT_VERSION,
            "spec": self.spec.to_dict(),
            "class_names": list(self.class_names),
            "multi_label": bool(self.multi_label),
            "imgsz": list(self.imgsz) if isinstance(self.imgsz, tuple) else int(self.imgsz),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "interpolation": self.interpolation,
            "threshold": float(self.threshold),
            "thresholds": None if self.thresholds is None else [float(v) for v in self.thresholds],
            "temperature": float(self.temperature),
            "metrics": dict(self.metrics),
            "epoch": self.epoch,
            "distillkit_version": __version__,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierMeta:
        imgsz = data["imgsz"]
        return cls(
            spec=ClassifierSpec.from_dict(data["spec"]),
            class_names=[str(name) for name in data["class_names"]],
            multi_label=bool(data["multi_label"]),
            imgsz=(int(imgsz[0]), int(imgsz[1])) if isinstance(imgsz, (list, tuple)) else int(imgsz),
            mean=[float(v) for v in data["mean"]],
            std=[float(v) for v in data["std"]],
            interpolation=str(data.get("interpolation", "bilinear")),
            threshold=float(data.get("threshold", 0.5)),
            thresholds=None if data.get("thresholds") is None else [float(v) for v in data["thresholds"]],
            temperature=float(data.get("temperature", 1.0)),
            metrics=dict(data.get("metrics") or {}),
            epoch=data.get("epoch"),
        )


@dataclass
class LoadedClassifier:
    """A classifier ready for inference: ``model`` in eval mode, input (B, 3, H, W) normalised, output logits."""

    model: TimmClassifier
    meta: ClassifierMeta
    path: Path | None = None

    @property
    def class_names(self) -> list[str]:
        return self.meta.class_names

    @property
    def multi_label(self) -> bool:
        return self.meta.multi_label

    @property
    def imgsz(self) -> int | tuple[int, int]:
        return self.meta.imgsz

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) the model was trained at."""
        size = self.meta.imgsz
        return (size, size) if isinstance(size, int) else size

    @property
    def mean(self) -> list[float]:
        return self.meta.mean

    @property
    def std(self) -> list[float]:
        return self.meta.std

    @property
    def threshold(self) -> float:
        return self.meta.threshold

    @property
    def thresholds(self) -> list[float]:
        """Per-class decision thresholds (multi-label): tuned ones when stored, else ``threshold``."""
        return self.meta.thresholds or [self.meta.threshold] * len(self.meta.class_names)

    @property
    def temperature(self) -> float:
        return self.meta.temperature

    @property
    def num_classes(self) -> int:
        return len(self.meta.class_names)

    def probabilities(self, logits: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """Softmax (single-label) or sigmoid (multi-label) of logits, temperature-scaled when ``calibrated``."""
        scaled = logits / self.meta.temperature if calibrated else logits
        return torch.sigmoid(scaled) if self.meta.multi_label else torch.softmax(scaled, dim=1)


def save_classifier(path: PathLike, model: nn.Module, meta: ClassifierMeta) -> Path:
    """Write a self-contained classifier checkpoint atomically (fp32 weights on CPU)."""
    state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, "wb") as handle:
        torch.save({"distillkit": meta.to_dict(), "model": state}, handle)
    return target


def _read(path: PathLike) -> dict[str, Any] | None:
    """The checkpoint dict under ``distillkit.safe_load``'s allowlist (its one-line refusal for a file needing
    anything else), or None for a file that is not one."""
    try:
        loaded = safe_torch_load(Path(path))
    except UnsafeModelFileError:
        raise
    except Exception:  # any unreadable or foreign file is simply not one
        return None
    return loaded if isinstance(loaded, dict) else None


def _is_classifier_dict(loaded: dict[str, Any] | None) -> bool:
    header = loaded.get("distillkit") if loaded is not None else None
    return isinstance(header, dict) and header.get("kind") == KIND


def is_classifier_checkpoint(path: PathLike) -> bool:
    """True for a torch file whose ``ckpt["distillkit"]["kind"]`` is ``"classifier"`` (``model_task`` says so)."""
    from distillkit.tasks import CHECKPOINT_SUFFIXES, model_task

    return Path(path).suffix.lower() in CHECKPOINT_SUFFIXES and model_task(path) == "classify"


def load_classifier(path: PathLike, device: str | torch.device = "cpu") -> LoadedClassifier:
    """Rebuild a classifier from its checkpoint (no network) in eval mode on ``device``."""
    source = Path(path)
    if not source.is_file():
        raise UsageError(f"classifier checkpoint {source} does not exist", "pass the best.pt of train-classifier")
    loaded = _read(source)
    if not _is_classifier_dict(loaded):
        raise UsageError(
            f"{source} is not a distillkit classifier checkpoint", "pass the best.pt or last.pt of train-classifier"
        )
    assert loaded is not None
    meta = ClassifierMeta.from_dict(loaded["distillkit"])
    model = build_classifier(meta.spec, pretrained=False).model
    model.load_state_dict(loaded["model"])
    model.to(device).eval()
    return LoadedClassifier(model=model, meta=meta, path=source)
