"""TFLite / LiteRT export of `train-classifier` models: ``model_<precision>.tflite``, task ``classify``.

The classify family's LiteRT converter: ``distillkit.classify.services`` registers it as ``export.tflite``
for the task ``classify``, and `optimize -f tflite` reaches it through ``distillkit.tasks``.

The graph is the same eval-mode module the ONNX export traces (normalised (1, 3, H, W) floats in,
(1, C) logits out: no softmax or sigmoid in the graph, the runtime applies the stored temperature),
converted by ``litert_torch.convert`` at batch 1. litert-torch keeps the torch model's NCHW input
(it adds the transposes XNNPACK needs inside the graph), so the file is fed exactly like
``model.onnx``. The fp16 and static INT8 files come from the float32 one with the same
ai-edge-quantizer recipes as YOLO students (``distillkit.export.tflite_export``), INT8 calibrated on
the images ``optimize`` preprocessed with the classifier's own loader. Each file carries the ONNX
classifier metadata (names, preprocessing, temperature, thresholds, evidential flag) as the appended
``distillkit.json``; ultralytics' entry is left out, as no ultralytics runtime reads a classifier.

Evidential classifiers get the ``logits`` output only: the runtime derives ``alpha`` and u = K / S
from them, as it does for ONNX.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distillkit.classify.export import LOGITS, classifier_metadata
from distillkit.errors import DataError
from distillkit.export.onnx_export import SourceModel
from distillkit.export.tflite_export import check_precisions, litert_extra, quiet, write_tflite_files
from distillkit.model_metadata import ModelMetadata
from distillkit.progress import NULL_PROGRESS, Progress


def export_classifier_tflite(
    source: SourceModel,
    folder: Path,
    precisions: Sequence[str],
    calibration_inputs: Sequence[np.ndarray] = (),
    progress: Progress = NULL_PROGRESS,
) -> dict[str, ModelMetadata]:
    """Write ``model_<precision>.tflite`` into ``folder`` for each precision; return each file's metadata."""
    check_precisions(precisions, calibration_inputs)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as work:
        with progress.task("converting to LiteRT (float32)", total=None):
            float_model = convert_classifier(source, Path(work) / "model_float32.tflite")

        def metadata(precision: str) -> ModelMetadata:
            return classifier_tflite_metadata(source, precision, len(calibration_inputs))

        return write_tflite_files(float_model, folder, precisions, calibration_inputs, metadata, progress)


def convert_classifier(source: SourceModel, target: Path) -> Path:
    """The float32 LiteRT flatbuffer of the classifier at batch 1 and its input size."""
    import litert_torch
    import torch

    # A copy: torch.export's passes may touch the module, and the original is optimize's parity reference.
    module = copy.deepcopy(source.handle.model).float().eval()
    height, width = source.input_hw or (source.imgsz, source.imgsz)
    sample = torch.zeros(1, 3, height, width)
    try:
        with quiet(), torch.inference_mode():
            litert_torch.convert(module, (sample,)).export(str(target))
    except Exception as exc:  # converter errors are long multi-line traces; keep one line
        reason = " ".join(str(exc).split())[:300]
        raise DataError(f"TFLite export of classifier {source.path} failed ({reason})") from exc
    return target


def classifier_tflite_metadata(source: SourceModel, precision: str, calibration_images: int) -> ModelMetadata:
    """The ONNX classifier metadata, at this file's precision, with the LiteRT runtime and INT8 recipe."""
    metadata = classifier_metadata(source, dynamic=False)  # the graph is traced at batch 1
    return dataclasses.replace(
        metadata,
        precision=precision,
        outputs=[LOGITS],
        extra={**metadata.extra, **litert_extra(precision, calibration_images)},
    )
