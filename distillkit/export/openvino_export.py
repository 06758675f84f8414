"""OpenVINO IR (fp32, fp16 weights, INT8 calibrated through NNCF) from distillkit's verified ONNX export.

What Intel CPU boxes (most industrial PCs) run. The IR is converted from ``model.onnx`` — the file
already checked for one ``images`` input and carrying the metadata — so every format starts from
the same graph. INT8 is NNCF's post-training quantization on the real calibration images
optimize gathers (preprocessed exactly as at inference), with the YOLO head's decoding kept in
float: the same nodes the ONNX ``fast`` recipe leaves out (``quantize.head_decode_nodes``), since
one int8 scale over pixel coordinates and 0–1 scores rounds scores to zero.

Each artefact is a folder ``model[_fp16|_int8]_openvino_model/`` holding ``model.xml``,
``model.bin`` and ``metadata.yaml`` — ultralytics' layout, so `infer` and `evaluate` run it
through ultralytics' own runtime like ``.onnx``. ``metadata.yaml`` also holds distillkit's
metadata (class names, COCO category ids, preprocessing) under ``distillkit``.

OpenVINO's CPU plugin picks its own compute precision: bf16 on CPUs with bf16/AMX support even
for an fp32 IR. The precision it used is recorded in each row's notes, and its accuracy is what
the guard measures — never assumed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.errors import DataError, UsageError
from distillkit.export.onnx_export import SessionPort
from distillkit.io import atomic_write_yaml
from distillkit.model_metadata import (
    FOLDER_SUFFIX,
    INPUT_NAME,
    METADATA_KEY,
    METADATA_YAML,
    ModelMetadata,
    load_onnx_graph,
    onnx_metadata_props,
    openvino_model_folder,
    read_openvino_metadata,
)
from distillkit.progress import NULL_PROGRESS, Progress

MODEL_XML = "model.xml"
INSTALL_HINT = 'install the extra: pip install "distillkit[openvino]"'
PRECISIONS = ("fp32", "fp16", "int8")


def openvino_folder(output: Path, precision: str) -> Path:
    """``model_openvino_model`` (fp32), ``model_fp16_openvino_model``, ``model_int8_openvino_model``."""
    stem = "model" if precision == "fp32" else f"model_{precision}"
    return output / f"{stem}{FOLDER_SUFFIX}"


def require_openvino(int8: bool = False) -> None:
    """Fail before any work when the optional runtime (and NNCF for INT8) is missing."""
    missing = [name for name in ("openvino", *(("nncf",) if int8 else ())) if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"OpenVINO export needs {' and '.join(missing)}, which is not installed", INSTALL_HINT)


def import_openvino() -> Any:
    """``openvino`` with its usage telemetry off; a one-line error naming the extra when it is absent.

    openvino and nncf fall back to their own no-op telemetry stubs when ``openvino_telemetry``
    cannot be imported; without this the converter sends usage events (and writes ``~/intel``)
    from machines that are often offline and must not reach out.
    """
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    try:
        import openvino
    except ImportError as exc:
        raise UsageError("the openvino package is not installed", INSTALL_HINT) from exc
    return openvino


def export_openvino(
    onnx_path: Path,
    target: Path,
    metadata: ModelMetadata,
    precision: str,
    calibration_inputs: Sequence[np.ndarray] = (),
    progress: Progress = NULL_PROGRESS,
) -> ModelMetadata:
    """Convert a distillkit ONNX file to an OpenVINO folder at ``target``; returns the folder's metadata."""
    if precision not in PRECISIONS:
        raise UsageError(f"OpenVINO precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    ov = import_openvino()
    model = ov.convert_model(str(onnx_path))
    graph = load_onnx_graph(onnx_path)  # read once: its head nodes (INT8) and ultralytics' entries
    extra: dict[str, Any] = {"runtime": f"openvino {ov.__version__}"}
    if precision == "int8":
        model, excluded = _quantize_int8(model, graph, calibration_inputs, progress)
        extra["quantization"] = {
            "name": "nncf post-training",
            "preset": "mixed",
            "bias_correction": "full (NNCF BiasCorrection)",
            "weights_7bit": "all layers" if _needs_7bit() else "first layer (NNCF default)",
            "calibration_images": len(calibration_inputs),
            "excluded_nodes": excluded,
        }
    result = replace(metadata, precision=precision, extra={**metadata.extra, **extra})
    _set_model_info(model, result)
    ultralytics_keys = onnx_metadata_props(graph)
    ultralytics_keys.pop(METADATA_KEY, None)
    _write_folder(ov, model, target, result, ultralytics_keys, compress_to_fp16=precision == "fp16")
    verify_openvino_folder(target)
    return result


def verify_openvino_folder(folder: Path) -> None:
    """Re-read a written folder: one ``images`` input of shape (N, 3, H, W), and its metadata, as infer reads them."""
    check_openvino_input(folder)
    if read_openvino_metadata(folder) is None:
        raise DataError(f"{folder}/{METADATA_YAML} has no distillkit metadata", "re-export it with distillkit optimize")


def _quantize_int8(
    model: Any, graph: Any, calibration_inputs: Sequence[np.ndarray], progress: Progress
) -> tuple[Any, int]:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from distillkit.export.quantize import head_decode_nodes

    if not calibration_inputs:
        raise UsageError("no calibration images", "pass --calib-data or --calib-dir with real images")
    present = {op.get_friendly_name() for op in model.get_ordered_ops()}
    # OpenVINO keeps the ONNX node names as friendly names, so the ONNX recipe's exclusions apply as they are
    excluded = sorted(set(head_decode_nodes(graph)) & present)
    nncf.set_log_level(logging.ERROR)
    # NNCF draws its own rich bars on stdout, which would break --json output: keep them out
    with (
        progress.task(f"calibrating OpenVINO INT8 on {len(calibration_inputs)} images", total=None),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        quantized = nncf.quantize(
            model,
            nncf.Dataset(list(calibration_inputs)),
            preset=nncf.QuantizationPreset.MIXED,  # symmetric weights, asymmetric activations (SiLU outputs)
            subset_size=len(calibration_inputs),  # calibrate on every image given, not NNCF's 300 default
            # NNCF's full BiasCorrection (the bias shift of each layer measured on the already quantized
            # layers before it, layer by layer) instead of the fast one-pass estimate: measured on the
            # BCCD yolov8n (VNNI CPU, 8-bit weights, 64 images): drop 1.48 -> 0.66 points, calibration
            # time about the same.
            fast_bias_correction=False,
            ignored_scope=nncf.IgnoredScope(names=excluded, validate=False) if excluded else None,
            # x86 CPUs without VNNI/AMX multiply int8 with vpmaddubsw, whose 16-bit sums saturate with
            # 8-bit weights (the ONNX recipe's 7-bit weights, for the same reason). NNCF's default fixes
            # the first layer only; measured on fruits_nuts yolov8n-seg here: mask AP drop 1.17 -> 0.00.
            advanced_parameters=AdvancedQuantizationParameters(overflow_fix=_overflow_fix(OverflowFix)),
        )
    return quantized, len(excluded)


def _overflow_fix(kinds: Any) -> Any:
    """7-bit weights in every layer where the exporting CPU lacks VNNI/AMX, else NNCF's default."""
    return kinds.ENABLE if _needs_7bit() else kinds.FIRST_LAYER


def _needs_7bit() -> bool:
    from distillkit.cpu_features import int8_weights_need_reduced_range

    return int8_weights_need_reduced_range()


def _set_model_info(model: Any, metadata: ModelMetadata) -> None:
    """The ``model_info`` OpenVINO's Model API reads (labels, letterbox, pad, scale), as ultralytics writes it."""
    model.set_rt_info("YOLO" if metadata.task != "classify" else "Classification", ["model_info", "model_type"])
    model.set_rt_info(True, ["model_info", "reverse_input_channels"])
    model.set_rt_info(int(metadata.preprocessing.get("pad_value") or 114), ["model_info", "pad_value"])
    model.set_rt_info([255.0], ["model_info", "scale_values"])
    model.set_rt_info([name.replace(" ", "_") for name in metadata.names], ["model_info", "labels"])
    if metadata.task != "classify":
        model.set_rt_info("fit_to_window_letterbox", ["model_info", "resize_type"])


def _write_folder(
    ov: Any,
    model: Any,
    target: Path,
    metadata: ModelMetadata,
    ultralytics_keys: dict[str, str],
    compress_to_fp16: bool,
) -> None:
    """Write into a temporary folder beside ``target`` and swap it in: never a half-written model folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        ov.save_model(model, str(work / MODEL_XML), compress_to_fp16=compress_to_fp16)
        sidecar: dict[str, Any] = dict(ultralytics_keys)  # strings, as in the ONNX file: ultralytics parses them
        sidecar[METADATA_KEY] = metadata.to_json()
        atomic_write_yaml(work / METADATA_YAML, sidecar)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(work, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_openvino_input(folder: Path) -> None:
    """One input, ``images``, of shape (N, 3, H, W): what ultralytics' runtime feeds."""
    ov = import_openvino()
    xml = next(folder.glob("*.xml"))
    try:
        model = ov.Core().read_model(str(xml))
    except Exception as exc:  # a truncated or foreign IR: say so in one line
        reason = " ".join(str(exc).split())[:300]
        raise UsageError(
            f"{folder} cannot be read by OpenVINO ({reason})", "re-export it with distillkit optimize"
        ) from exc
    shapes = {
        next(iter(port.get_names())) if port.get_names() else "?": port.get_partial_shape() for port in model.inputs
    }
    shape = shapes.get(INPUT_NAME)
    if list(shapes) != [INPUT_NAME] or shape is None or shape.rank.get_length() != 4 or str(shape[1]) not in ("3", "?"):
        described = {name: str(value) for name, value in shapes.items()}
        raise UsageError(
            f"{folder} takes inputs {described}, not one {INPUT_NAME!r} tensor of shape (N, 3, H, W)",
            "pass a detection or segmentation model exported by distillkit optimize",
        )


def compile_openvino(folder: Path, threads: int | None = None) -> Any:
    """Compiled for batch-1 latency on the CPU (LATENCY hint, as ultralytics runs it), ``threads`` threads or all."""
    ov = import_openvino()
    xml = next(openvino_model_folder(folder).glob("*.xml"))
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config.update({"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1})
    return ov.Core().compile_model(str(xml), "CPU", config)


def inference_precision(compiled: Any) -> str:
    """The compute precision the CPU plugin chose (f32, or bf16 on CPUs that have it)."""
    try:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    except Exception:  # older runtimes do not report it
        return "unknown"


def folder_size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file()) / 1e6


class OpenVINOSession:
    """An OpenVINO folder behind onnxruntime's ``InferenceSession`` calls (``get_inputs``, ``get_outputs``, ``run``).

    Code written for an ONNX session (the classifier runtime) then runs the IR unchanged.
    """

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        self._compiled = compile_openvino(folder, threads)
        self._inputs = [self._port(port) for port in self._compiled.inputs]
        self._outputs = [self._port(port) for port in self._compiled.outputs]

    @classmethod
    def _port(cls, port: Any) -> SessionPort:
        names = port.get_names()
        shape = [dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()]
        return SessionPort(next(iter(names)) if names else port.get_any_name(), shape)

    def get_inputs(self) -> list[SessionPort]:
        return self._inputs

    def get_outputs(self) -> list[SessionPort]:
        return self._outputs

    def run(self, names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._compiled(feeds)
        by_name = {self._port(port).name: np.asarray(value) for port, value in results.items()}
        wanted = names or [port.name for port in self._outputs]
        return [by_name[name] for name in wanted]
