"""Evidential uncertainty ``u = K / S`` for ``infer`` and ``evaluate`` (models trained with ``loss: evidential``).

A model trained with the evidential loss carries ``evidential=1`` in its ``research:`` name, so the
reports know to read its logits as Dirichlet evidence. Other models (and ONNX files, which hold no
name) are left alone: these functions then add nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from distillkit.classify.research.objectives import evidential_uncertainty, uncertainty_summary
from distillkit.classify.research.spec import research_model


def is_evidential(runtime: Any) -> bool:
    loaded = getattr(runtime, "loaded", None)
    if loaded is None:
        return False
    model = research_model(loaded.meta.spec.name)
    return bool(model is not None and model.evidential)


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
