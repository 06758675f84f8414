"""Grounding DINO box teacher: one prompt with every class, LoRA on the encoder/decoder attention.

The names below load on first use (PEP 562): training pulls in transformers' Grounding DINO loss, which
a caller that only reads an adapter's files (a Ray driver naming the cache) should not pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distillkit.teachers.grounding_dino.model import (
        FOLDER_NAME,
        TEACHER_NAME,
        GroundingDinoBundle,
        load_adapter,
        load_base,
        wrap_with_lora,
    )
    from distillkit.teachers.grounding_dino.predict import BoxPredictions, predict_boxes
    from distillkit.teachers.grounding_dino.prompt import ClassPrompt, build_prompt
    from distillkit.teachers.grounding_dino.train import train_grounding_dino

__all__ = [
    "FOLDER_NAME",
    "TEACHER_NAME",
    "BoxPredictions",
    "ClassPrompt",
    "GroundingDinoBundle",
    "build_prompt",
    "load_adapter",
    "load_base",
    "predict_boxes",
    "train_grounding_dino",
    "wrap_with_lora",
]

_LAZY = {
    "FOLDER_NAME": "model",
    "TEACHER_NAME": "model",
    "GroundingDinoBundle": "model",
    "load_adapter": "model",
    "load_base": "model",
    "wrap_with_lora": "model",
    "BoxPredictions": "predict",
    "predict_boxes": "predict",
    "ClassPrompt": "prompt",
    "build_prompt": "prompt",
    "train_grounding_dino": "train",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
