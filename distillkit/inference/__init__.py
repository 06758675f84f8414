"""Inference: prompt-free predictions from trained students, as COCO results and overlays.

Sources are images, video files, streams and cameras (``collect_sources``); ``predict_sources``
runs them all, ``predict_images`` / ``predict_video`` one kind; ``SliceSpec`` turns on sliced
(tiled) inference for any of them.
"""

from distillkit.inference.predictor import (
    LoadedModel,
    PredictionRun,
    PredictionsWriter,
    load_model,
    predict_images,
    write_predictions,
)
from distillkit.inference.run import predict_sources
from distillkit.inference.slicing import SliceSpec
from distillkit.inference.sources import Sources, VideoSource, collect_images, collect_sources
from distillkit.inference.video import predict_video
from distillkit.interrupts import StopRequest, graceful_interrupt

__all__ = [
    "LoadedModel",
    "PredictionRun",
    "PredictionsWriter",
    "SliceSpec",
    "Sources",
    "StopRequest",
    "VideoSource",
    "collect_images",
    "collect_sources",
    "graceful_interrupt",
    "load_model",
    "predict_images",
    "predict_sources",
    "predict_video",
    "write_predictions",
]
