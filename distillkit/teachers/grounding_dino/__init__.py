"""Grounding DINO box teacher: one prompt with every class, LoRA on the encoder/decoder attention."""

from distillkit.teachers.grounding_dino.model import GroundingDinoBundle, load_adapter, load_base, wrap_with_lora
from distillkit.teachers.grounding_dino.predict import BoxPredictions, predict_boxes
from distillkit.teachers.grounding_dino.prompt import ClassPrompt, build_prompt
from distillkit.teachers.grounding_dino.train import FOLDER_NAME, TEACHER_NAME, train_grounding_dino

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
