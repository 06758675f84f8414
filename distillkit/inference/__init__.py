"""Inference: prompt-free predictions from trained students, as COCO results and overlays."""

from distillkit.inference.predictor import (
    LoadedModel,
    PredictionRun,
    PredictionsWriter,
    load_model,
    predict_images,
    write_predictions,
)
from distillkit.inference.sources import collect_images

__all__ = [
    "LoadedModel",
    "PredictionRun",
    "PredictionsWriter",
    "collect_images",
    "load_model",
    "predict_images",
    "write_predictions",
]
