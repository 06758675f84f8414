"""Evidential uncertainty ``u = K / S`` for ``infer`` and ``evaluate`` (models trained with ``loss: evidential``).

A model trained with the evidential loss carries ``evidential=1`` in its ``research:`` name, so the
reports know to read its logits as Dirichlet evidence. Its ONNX export carries the same fact as
``evidential: true`` in the distillkit metadata (and an extra ``alpha`` output); the runtime sets
``ClassifierRuntime.evidential`` from either, so a checkpoint and its export report the same u.
Other models are left alone: these functions then add nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distillkit.classify.research.objectives import dirichlet_alpha, evidential_uncertainty, uncertainty_summary
from distillkit.classify.research.spec import research_model


class EvidentialOutputs(nn.Module):
    """The classifier with a second output ``alpha`` (Dirichlet parameters), for the ONNX export."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(images)
        return logits, dirichlet_alpha(logits)


def name_is_evidential(spec_name: str) -> bool:
    """True for a ``research:`` model name with ``evidential=1`` (trained with the evidential loss)."""
    model = research_model(spec_name)
    return bool(model is not None and model.evidential)


def is_evidential(runtime: Any) -> bool:
    """The runtime's flag: from the checkpoint's model name (.pt) or the ONNX metadata (.onnx)."""
    if getattr(runtime, "evidential", False):
        return True
    loaded = getattr(runtime, "loaded", None)
    return loaded is not None and name_is_evidential(loaded.meta.spec.name)


def checkpoint_is_evidential(path: Path) -> bool:
    """Whether a classifier checkpoint was trained with the evidential loss, reading only its header.

    For ONNX files exported before the flag was stored: their ``source`` checkpoint can still tell.
    ``mmap`` keeps the weights on disk; an unreadable or foreign file simply says no.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a missing, moved or foreign file cannot tell: no notice then
        return False
    header = loaded.get("distillkit") if isinstance(loaded, dict) else None
    spec = header.get("spec") if isinstance(header, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    return isinstance(name, str) and name_is_evidential(name)


def evidential_u(outputs: Sequence[Any]) -> np.ndarray | None:
    """Per-image u averaged over the evidential models among ``outputs`` (ModelPredictions); None if none is."""
    values = [
        evidential_uncertainty(torch.from_numpy(np.asarray(o.logits, dtype=np.float64))).numpy()
        for o in outputs
        if is_evidential(o.runtime)
    ]
    return np.mean(values, axis=0) if values else None


def add_uncertainty(records: list[dict[str, Any]], outputs: Sequence[Any]) -> None:
    """``infer``: put ``uncertainty`` (u = K / S) into each per-image record of an evidential model."""
    u = evidential_u(outputs)
    if u is not None:
        for record, value in zip(records, u, strict=True):
            record["uncertainty"] = round(float(value), 6)


def uncertainty_report(outputs: Sequence[Any], probabilities: np.ndarray, targets: np.ndarray) -> dict[str, Any] | None:
    """``evaluate``: the uncertainty-vs-error summary (single-label), or None for non-evidential models."""
    u = evidential_u(outputs)
    if u is None:
        return None
    correct = np.asarray(probabilities).argmax(axis=1) == np.asarray(targets).argmax(axis=1)
    return uncertainty_summary(torch.from_numpy(u), torch.from_numpy(correct))
