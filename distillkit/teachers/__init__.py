"""Teachers: Grounding DINO (boxes) and SAM (masks), fine-tuned with LoRA adapters.

``train_teachers`` trains the teachers the data calls for (boxes → Grounding DINO, masks → SAM,
both → both); ``load_teacher`` loads the trained adapters of an experiment folder as a labelling
``Teacher`` (``distillkit.labelling``); ``resolve_weights`` finds base weights offline-first.
Heavy imports (torch, transformers, peft) happen on first use, not when this package is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distillkit.lazy_imports import lazy_attributes
from distillkit.teachers.results import TeacherTrainResult
from distillkit.teachers.weights import load_processor, resolve_weights

if TYPE_CHECKING:
    from distillkit.teachers.labeller import DistilledTeacher, load_teacher
    from distillkit.teachers.pipeline import TeachersResult, train_teachers

__all__ = [
    "DistilledTeacher",
    "TeacherTrainResult",
    "TeachersResult",
    "load_processor",
    "load_teacher",
    "resolve_weights",
    "train_teachers",
]

__getattr__ = lazy_attributes(
    __name__,
    {
        "DistilledTeacher": "distillkit.teachers.labeller",
        "load_teacher": "distillkit.teachers.labeller",
        "TeachersResult": "distillkit.teachers.pipeline",
        "train_teachers": "distillkit.teachers.pipeline",
    },
)
