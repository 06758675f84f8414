"""Loading exported models (``.onnx``, TensorRT ``.engine``, OpenVINO folders, LiteRT ``.tflite``) for
`infer` and `evaluate`.

Detection and segmentation files run through ultralytics' own runtime (``AutoBackend``, reached
with ``YOLO(path)``): the letterbox, decoding, NMS and mask assembly are then the very code that
runs the ``.pt``, so a ``.onnx`` and its ``.pt`` give the same detections by construction, and
TensorRT engines and LiteRT files come for free. Ultralytics is imported through ``import_ultralytics()``
(``YOLO_AUTOINSTALL=0``): its ``check_requirements`` then only checks that onnxruntime is
installed and never pip-installs. Class names and COCO category ids come from the distillkit
metadata inside the file (or the sidecar ``class_mapping.yaml`` for engines). Classifier exports
are run by ``distillkit.classify.runtime`` from the same metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distillkit.errors import UsageError
from distillkit.export.openvino_export import check_openvino_input
from distillkit.inference.loaded import LoadedModel
from distillkit.model_metadata import (
    INPUT_NAME,
    ModelMetadata,
    is_openvino_model,
    load_onnx_graph,
    openvino_model_folder,
    read_onnx_metadata,
    read_openvino_metadata,
    read_sidecar,
    read_tflite_metadata,
)
from distillkit.ultralytics_env import import_ultralytics

EXPORTED_SUFFIXES = (".onnx", ".engine", ".tflite")


def load_exported_model(path: Path) -> LoadedModel:
    if is_openvino_model(path):
        path = openvino_model_folder(path)  # ultralytics recognises the folder, not the .xml inside
        metadata = read_openvino_metadata(path)
        check_openvino_input(path)  # also: openvino installed (else the extra to install), telemetry off
    elif path.suffix == ".tflite":
        metadata = _tflite_metadata(path)
    else:
        metadata = read_onnx_metadata(path) if path.suffix == ".onnx" else None
    sidecar = read_sidecar(path.parent) or {}
    if metadata is not None and metadata.task == "classify":
        raise UsageError(
            f"{path.name} is a classifier export", "classifiers run through distillkit.classify (infer/evaluate do it)"
        )
    if path.suffix == ".engine":
        _check_tensorrt_runtime(path)
    elif path.suffix == ".onnx":
        _check_image_input(path)
    import_ultralytics()
    from ultralytics import YOLO

    task = metadata.task if metadata is not None else sidecar.get("task")
    try:
        model = YOLO(str(path), task=task) if task else YOLO(str(path))
        model_names = model.names  # the runtime session is opened here, lazily: an unloadable file fails now
    except Exception as exc:  # a corrupt or foreign file: say so in one line
        reason = " ".join(str(exc).split())
        raise UsageError(f"{path} cannot be loaded ({reason})", "pass a model written by distillkit optimize") from exc
    if metadata is not None:
        names = dict(enumerate(metadata.names))
        category_ids = _ids(metadata.category_ids)
        parameters = metadata.parameters
    else:
        names = {int(k): str(v) for k, v in model_names.items()} if model_names else {}
        stored = sidecar.get("class_mapping")
        category_ids = {int(i): int(c) for c, i in stored.items()} if stored else {i: i for i in names}
        parameters = sidecar.get("parameters")
    if path.suffix == ".onnx" and parameters is None:
        parameters = count_onnx_parameters(path)
    return LoadedModel(path, model, task or model.task, names, category_ids, parameters)


def _check_image_input(path: Path) -> None:
    """One input, ``images``, a batch of 3-channel pictures (N, 3, H, W): what ultralytics' runtime feeds.

    Anything else (a text or prompt input, a graph for other data) would fail deep inside onnxruntime.
    """
    graph = load_onnx_graph(path).graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    shapes = {value.name: [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim] for value in inputs}
    dims = shapes.get(INPUT_NAME, [])
    if list(shapes) != [INPUT_NAME] or len(dims) != 4 or dims[1] not in (3, ""):
        raise UsageError(
            f"{path} takes inputs {shapes} (name: shape), not one {INPUT_NAME!r} tensor of shape (N, 3, H, W)",
            "pass a detection or segmentation model exported by distillkit optimize (prompt-free, image input only)",
        )


def _tflite_metadata(path: Path) -> ModelMetadata | None:
    """The runtime installed (else the extra to install), one image input, then the stored metadata."""
    from distillkit.export.tflite_export import check_image_input, require_tflite

    require_tflite(export=False)
    check_image_input(path)
    return read_tflite_metadata(path)


def _ids(category_ids: Sequence[int]) -> dict[int, int]:
    return {index: int(category) for index, category in enumerate(category_ids)}


def count_onnx_parameters(path: Path) -> int:
    """Learned values in the file: weight initializers, not quantization scales or shape constants."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    total = 0
    for initializer in model.graph.initializer:
        name = initializer.name
        if name.endswith(("_scale", "_zero_point")) or len(initializer.dims) == 0:
            continue
        if initializer.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            continue  # shapes and indices
        total += int(np.prod(numpy_helper.to_array(initializer).shape))
    return total


def _check_tensorrt_runtime(path: Path) -> None:
    from distillkit.export.tensorrt_export import tensorrt_available

    available, reason = tensorrt_available()
    if not available:
        raise UsageError(
            f"{path.name} is a TensorRT engine, which needs {reason}", "use the .onnx file on this machine"
        )
