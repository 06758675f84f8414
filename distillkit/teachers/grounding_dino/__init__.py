"""Grounding DINO box teacher: one prompt with every class, LoRA on the encoder/decoder attention.

The names below load on first use (PEP 562): training pulls in transformers' Grounding DINO loss, which
a caller that only reads an adapter's files (a Ray driver naming the cache) should not pay for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distillkit.lazy_imports import lazy_attributes

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

_MODEL, _PREDICT = f"{__name__}.model", f"{__name__}.predict"
__getattr__ = lazy_attributes(
    __name__,
    {
        "FOLDER_NAME": _MODEL,
        "TEACHER_NAME": _MODEL,
        "GroundingDinoBundle": _MODEL,
        "load_adapter": _MODEL,
        "load_base": _MODEL,
        "wrap_with_lora": _MODEL,
        "BoxPredictions": _PREDICT,
        "predict_boxes": _PREDICT,
        "ClassPrompt": f"{__name__}.prompt",
        "build_prompt": f"{__name__}.prompt",
        "train_grounding_dino": f"{__name__}.train",
    },
)
