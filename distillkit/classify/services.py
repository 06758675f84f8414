"""What the classify family brings to the shared services, registered by task in ``distillkit.tasks``.

``export`` (`optimize`) finds here how to open a classifier checkpoint as a ``SourceModel``, export it to
ONNX and to TFLite, score it and its artefacts, and preprocess an image as the classifier's own loader does.
Nothing heavy is imported here: each function imports the family's code when it is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.tasks import register

TASK = "classify"


def source_model(path: Path, imgsz: int | None = None) -> Any:
    """A train-classifier checkpoint opened for `optimize` (``export.SourceModel``)."""
    from distillkit.classify.export import load_classifier_source

    return load_classifier_source(path, imgsz)


def export_onnx(source: Any, target: Path, **options: Any) -> Any:
    """torch.onnx export with the classifier's metadata (``classify.export.export_classifier_onnx``)."""
    from distillkit.classify.export import export_classifier_onnx

    return export_classifier_onnx(source, target, **options)


def export_tflite(
    source: Any,
    folder: Path,
    precisions: Sequence[str],
    calibration_inputs: Sequence[Any] = (),
    progress: Progress = NULL_PROGRESS,
) -> dict[str, Any]:
    """litert-torch conversion and ai-edge-quantizer precisions (``classify.tflite_export``)."""
    from distillkit.classify.tflite_export import export_classifier_tflite

    return export_classifier_tflite(source, folder, precisions, calibration_inputs, progress)


def accuracy(
    val_data: Path,
    models: Sequence[Path],
    task: str,
    imgsz: int,
    images_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> list[Any]:
    """Accuracy of each classifier file (.pt, .onnx, OpenVINO, .tflite) alone, by `evaluate`'s classifier evaluator."""
    from distillkit.classify.evaluate import evaluate_classifiers
    from distillkit.export.accuracy import Accuracy

    del task, imgsz  # the classifier's own input size and preprocessing come from each file
    results = []
    for model in models:
        summary = evaluate_classifiers([model], val_data, images_dir=images_dir, progress=progress).models[0]
        results.append(Accuracy("accuracy", float(summary.accuracy), {"macro_f1": float(summary.macro_f1)}))
    return results


def preprocess(path: Path, shape: tuple[int, int], steps: dict[str, Any]) -> Any:
    """One image as the classifier's input (1, 3, H, W): its own loading code (EXIF, cv2 resize, mean/std)."""
    from distillkit.classify.dataset import resize, to_tensor
    from distillkit.images import read_rgb

    image = resize(read_rgb(path), shape, str(steps.get("interpolation", "bilinear")))
    mean = steps.get("mean") or [0.0, 0.0, 0.0]
    std = steps.get("std") or [1.0, 1.0, 1.0]
    return to_tensor(image, mean, std).numpy()[None]


register("export.source", TASK, source_model)
register("export.onnx", TASK, export_onnx)
register("export.tflite", TASK, export_tflite)
register("export.accuracy", TASK, accuracy)
register("export.preprocess", TASK, preprocess)
