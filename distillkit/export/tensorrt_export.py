"""TensorRT engines (FP16, or INT8 calibrated on real images) built from distillkit's ONNX export.

Only where the ``tensorrt`` package and a CUDA GPU exist; distillkit never installs anything. The
build is ultralytics' ``onnx2engine`` (it keeps the head's Sigmoid in FP32 and its output
convolutions in FP16 under INT8, which preserves score calibration) applied to our verified
``model.onnx``; the engine carries ultralytics' metadata header, so `infer` and `evaluate` load it
through the same runtime as the ONNX file, and the sidecar ``class_mapping.yaml`` gives the ids.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.errors import DataError, UsageError
from distillkit.model_metadata import ModelMetadata, onnx_metadata_props

TENSORRT_MISSING = (
    "TensorRT export needs the tensorrt package and a CUDA GPU; {reason}. "
    "Install TensorRT for your CUDA version on the target machine (distillkit never installs it) "
    "or export --format onnx here and build the engine where the GPU is"
)


def tensorrt_available() -> tuple[bool, str]:
    """(True, "") when an engine can be built here, else (False, what is missing)."""
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the tensorrt package is not installed")
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        cuda = False
    if not cuda:
        missing.append("no CUDA device is visible")
    return (not missing, " and ".join(missing))


def require_tensorrt() -> None:
    available, reason = tensorrt_available()
    if not available:
        raise UsageError(TENSORRT_MISSING.format(reason=reason))


class _CalibrationBatches:
    """What ultralytics' calibrator iterates: dicts with ``img`` as uint8-range (1, 3, H, W) tensors."""

    batch_size = 1

    def __init__(self, inputs: Sequence[np.ndarray]) -> None:
        self.inputs = inputs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        for item in self.inputs:  # the calibrator divides by 255: hand it our preprocessed tensor times 255
            yield {"img": torch.from_numpy(np.ascontiguousarray(item * 255.0, dtype=np.float32))}

    def __len__(self) -> int:
        return len(self.inputs)


def build_engine(
    onnx_path: Path,
    target: Path,
    metadata: ModelMetadata,
    precision: str,
    calibration_inputs: Sequence[np.ndarray] = (),
    workspace_gb: float | None = None,
) -> Path:
    """Build ``target`` (.engine) from a distillkit fp32 ONNX file; ``precision`` is fp16 or int8."""
    require_tensorrt()
    import onnx

    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.utils.export.engine import onnx2engine

    if precision not in ("fp16", "int8"):
        raise UsageError(f"TensorRT precision {precision!r} is not supported", "use fp16 or int8")
    if precision == "int8" and not calibration_inputs:
        raise UsageError("a TensorRT INT8 engine needs calibration images", "pass --calib-data or --calib-dir")
    props = onnx_metadata_props(onnx.load(str(onnx_path), load_external_data=False))
    header: dict[str, Any] = {key: value for key, value in props.items() if key != "distillkit"}
    header["distillkit"] = metadata.to_json()
    height, width = metadata.imgsz
    try:
        onnx2engine(
            str(onnx_path),
            target,
            workspace=workspace_gb,
            quantize=8 if precision == "int8" else 16,
            dynamic=metadata.dynamic_batch,
            shape=(1, 3, height, width),
            dataset=_CalibrationBatches(calibration_inputs) if precision == "int8" else None,
            metadata=header,
        )
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"TensorRT could not build {target.name} ({exc})") from exc
    return target
