"""TFLite / LiteRT files: fp16 weights and static INT8, for YOLO students and (through their family) classifiers.

YOLO students are described below and read back by ultralytics' runtime. Classifiers are converted
by their family's own exporter (``export.tflite`` in ``distillkit.tasks``: ``distillkit.classify``),
which uses the same precision recipes, writing and verification from here (``write_tflite_files``)
and carries distillkit's entry only; ``LiteRTSession`` lets the classifier runtime run such a file.

The graph is ultralytics' own LiteRT export (``format="litert"``: litert-torch, the detection head
in export mode, box coordinates divided by the input size so that one INT8 scale can carry both
boxes and 0–1 scores), written as a float32 intermediate. ai-edge-quantizer then makes:

- ``model_fp16.tflite``: the convolution weights stored as float16 (half the file). On a CPU the
  XNNPACK delegate unpacks them to float32 at load and computes in float32, so outputs match fp32
  to ~1e-6 and latency is fp32's; GPU delegates and ARM CPUs with FP16 arithmetic use the halves.
- ``model_int8.tflite``: static INT8 (int8 per-channel weights, int8 activations) calibrated on the
  real calibration images ``optimize`` gathers, preprocessed exactly as at inference; graph input
  and outputs stay float32, so every consumer feeds and reads it as it does the fp32 file. For YOLO
  students the head's decoding (DFL softmax and projection, box arithmetic, score sigmoid, the
  coordinate normalisation and the output concatenation: no learned weights but the DFL's fixed
  0..15 projection) stays float32; every convolution of the backbone, neck and head branches is
  int8. With that tail in int8 one per-tensor scale covered box centres, box sizes (background
  anchors' far-reaching DFL distances give widths of 1.6x the input on the BCCD student) and 0-1
  scores: a step of 0.0063 there, i.e. 2 px at 320 px and scores below 0.003 rounded to zero
  (mAP50-95 -2.60 points; -0.51 with the decoding in float32).

Each file carries two zip entries appended to the flatbuffer (the interpreter ignores them):
``metadata.json``, ultralytics' (task, names, imgsz, stride), so ``YOLO("model_int8.tflite")``
runs it with the same letterbox, decoding and NMS as the ``.pt``; and ``distillkit.json``, the
``ModelMetadata`` every distillkit export carries (COCO category ids, preprocessing, precision).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.errors import DataError, UsageError
from distillkit.export.onnx_export import SessionPort, SourceModel
from distillkit.io import atomic_write_bytes
from distillkit.model_metadata import (
    DISTILLKIT_ENTRY,
    YOLO_PREPROCESSING,
    ModelMetadata,
    read_tflite_metadata,
    read_zip_entry,
)
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.tasks import find

INSTALL_HINT = 'pip install "distillkit[tflite]"'
EXPORT_MODULES = ("litert_torch", "ai_edge_quantizer", "ai_edge_litert")
RUNTIME_MODULES = ("ai_edge_litert",)
ULTRALYTICS_ENTRY = "metadata.json"  # the name ultralytics' LiteRTBackend reads
PRECISIONS = ("fp32", "fp16", "int8")
SUFFIX = ".tflite"
YOLO_TASKS = ("detect", "segment")  # the tasks ultralytics' LiteRT exporter converts

# ai-edge-quantizer casts the weights of these ops to float16; the other ops have no weights to halve.
_FP16_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_2D_TRANSPOSE")
PRECISION_NOTES = {
    "fp32": "litert-torch float32 graph",
    "fp16": "float16 weights; a CPU (XNNPACK) computes in float32: half the file, fp32 speed",
    "int8": "static INT8 (ai-edge-quantizer: int8 per-channel weights, int8 activations, float32 I/O)",
}


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here, looked up without importing them."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package that is broken, or a None in sys.modules
            found = False
        if not found:
            missing.append(name)
    return missing


def require_tflite(export: bool = True) -> None:
    """One line naming the extra to install when the packages for TFLite are absent."""
    missing = missing_modules(EXPORT_MODULES if export else RUNTIME_MODULES)
    if missing:
        what = "TFLite export" if export else "running .tflite models"
        raise UsageError(f"{what} needs {', '.join(missing)}, not installed here", INSTALL_HINT)


def check_tflite_task(task: str) -> None:
    """Detection and segmentation go through ultralytics' exporter; any other task needs its family's own."""
    if task in YOLO_TASKS or find("export.tflite", task) is not None:
        return
    raise UsageError(f"TFLite export has no converter for {task!r} models", "use -f onnx")


def check_precisions(precisions: Sequence[str], calibration_inputs: Sequence[np.ndarray]) -> None:
    """Before any conversion: known precisions, and calibration images when INT8 is asked for."""
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise UsageError(f"unknown TFLite precision {unknown[0]!r}", f"use one of {', '.join(PRECISIONS)}")
    if "int8" in precisions and not calibration_inputs:
        raise UsageError("TFLite INT8 needs calibration images", "pass --calib-data COCO.json or --calib-dir DIR")


def tflite_path(folder: Path, precision: str) -> Path:
    return folder / f"model_{precision}{SUFFIX}"


def export_yolo_tflite(
    source: SourceModel,
    folder: Path,
    precisions: Sequence[str],
    calibration_inputs: Sequence[np.ndarray] = (),
    progress: Progress = NULL_PROGRESS,
) -> dict[str, ModelMetadata]:
    """Write ``model_<precision>.tflite`` into ``folder`` for each precision; return each file's metadata."""
    if source.task not in YOLO_TASKS:
        raise UsageError(f"ultralytics' LiteRT export converts detection and segmentation models, not {source.task!r}")
    check_precisions(precisions, calibration_inputs)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as work:
        with progress.task("converting to LiteRT (float32)", total=None):
            float_model = _convert(source, Path(work))
        ultralytics_metadata = _ultralytics_metadata(float_model, source)

        def entries(precision: str) -> dict[str, Any]:
            return {**ultralytics_metadata, "args": {**ultralytics_metadata.get("args", {}), "quantize": precision}}

        def metadata(precision: str) -> ModelMetadata:
            return _metadata(source, precision, len(calibration_inputs))

        return write_tflite_files(
            float_model,
            folder,
            precisions,
            calibration_inputs,
            metadata,
            progress,
            entries,
            float_scopes=yolo_decode_scopes(float_model),
        )


def write_tflite_files(
    float_model: Path,
    folder: Path,
    precisions: Sequence[str],
    calibration_inputs: Sequence[np.ndarray],
    metadata_for: Callable[[str], ModelMetadata],
    progress: Progress = NULL_PROGRESS,
    ultralytics_for: Callable[[str], dict[str, Any]] | None = None,
    float_scopes: Sequence[str] = (),
) -> dict[str, ModelMetadata]:
    """``model_<precision>.tflite`` from a float32 LiteRT file, each with its metadata entries, verified.

    Shared by every converter so that all tasks get the same fp16 / INT8 recipes and the same checks.
    ``ultralytics_for`` gives ultralytics' entry (YOLO students only: their runtime needs it).
    ``float_scopes``: regexes of op scopes INT8 leaves in float32 (``yolo_decode_scopes``); what
    stayed float is counted from the written file into the metadata.
    """
    written: dict[str, ModelMetadata] = {}
    for precision in precisions:
        target = tflite_path(folder, precision)
        with progress.task(f"writing {target.name}", total=None):
            flatbuffer = precision_flatbuffer(float_model, precision, calibration_inputs, float_scopes)
            metadata = metadata_for(precision)
            if precision == "int8":
                metadata = _with_op_precisions(metadata, flatbuffer, float_scopes)
            ultralytics = ultralytics_for(precision) if ultralytics_for is not None else None
            atomic_write_bytes(target, with_entries(flatbuffer, ultralytics, metadata))
            verify_tflite_file(target)
        written[precision] = metadata
    return written


def _convert(source: SourceModel, work: Path) -> Path:
    """ultralytics' LiteRT exporter on a copy of the checkpoint: it writes beside its input."""
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics import YOLO

    copy = work / "model.pt"
    shutil.copyfile(source.path, copy)
    try:
        with quiet():
            written = YOLO(str(copy)).export(
                format="litert", imgsz=source.imgsz, batch=1, half=False, device="cpu", verbose=False
            )
    except Exception as exc:  # the exporter raises bare exceptions; say which model and why
        raise DataError(f"TFLite export of {source.path} failed ({' '.join(str(exc).split())})") from exc
    return Path(written)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep the converters' chatter off the terminal and ``--json``'s stdout.

    litert-torch prints its steps to stdout and ai-edge-quantizer prints a size summary there and
    draws tqdm bars (tens of thousands of steps) on stderr; distillkit shows its own progress.
    Python-level output is dropped; anything native code writes to file descriptor 1 goes to 2.
    Errors still surface as the exceptions they raise.
    """
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    sys.stdout.flush()  # what distillkit printed so far still goes to the real stdout
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous


def _ultralytics_metadata(float_model: Path, source: SourceModel) -> dict[str, Any]:
    entries = read_zip_entry(float_model, ULTRALYTICS_ENTRY) or {}
    # Names as ultralytics reads them, in case the checkpoint lacked them (as for ONNX).
    entries["names"] = {str(index): name for index, name in enumerate(source.names)}
    return entries


def precision_flatbuffer(
    float_model: Path, precision: str, calibration_inputs: Sequence[np.ndarray], float_scopes: Sequence[str] = ()
) -> bytes:
    """The model at ``precision``: fp32 as converted, fp16 weights, or static INT8 with float32 I/O.

    ``float_scopes``: INT8 only, regexes of the op scopes (an op's output tensor names) kept in float32.
    """
    if precision == "fp32":
        return flatbuffer_bytes(float_model)
    from ai_edge_quantizer import quantizer

    engine = quantizer.Quantizer(str(float_model))
    with quiet():
        if precision == "fp16":
            _fp16_recipe(engine)
            result = engine.quantize()
        else:
            _int8_recipe(engine, float_scopes)
            calibration = engine.calibrate(_calibration_data(float_model, calibration_inputs))
            result = engine.quantize(calibration_result=calibration)
    if result.quantized_model is None:  # pragma: no cover - ai-edge-quantizer raises first
        raise DataError(f"ai-edge-quantizer wrote no {precision} model")
    return bytes(result.quantized_model)


def _fp16_recipe(engine: Any) -> None:
    from ai_edge_quantizer import qtyping, recipe

    for op in _FP16_OPS:
        engine.add_weight_only_config(
            regex=".*",
            operation_name=getattr(qtyping.TFLOperationName, op),
            num_bits=16,
            algorithm_key=recipe.AlgorithmName.FLOAT_CASTING,
        )


def _int8_recipe(engine: Any, float_scopes: Sequence[str] = ()) -> None:
    from ai_edge_quantizer import qtyping, recipe

    engine.load_quantization_recipe(recipe.static_wi8_ai8())
    # Float32 graph input and outputs (int8 inside): the file is then fed and read like the fp32 one,
    # by ultralytics' runtime, distillkit's latency runner and on-device code alike.
    for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        engine.update_quantization_recipe(regex=".*", operation_name=op, algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    for scope in float_scopes:  # after the static config: the latest matching entry wins
        engine.update_quantization_recipe(
            regex=scope,
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            algorithm_key=recipe.AlgorithmName.NO_QUANTIZE,
        )


# Op scopes (output tensor names, which litert-torch derives from module paths) of a YOLO head's decoding:
# the head module's own ops ("...head.Detect_22;18;" — its conv branches sit under "...head.Detect_22/..."),
# its DFL, and the coordinate normalisation ultralytics' LiteRT exporter wraps the model in.
_DECODE_SCOPES = (
    r"ultralytics\.nn\.modules\.head\.\w+_\d+;",
    r"ultralytics\.nn\.modules\.block\.DFL_",
    r"_NormalizeCoords;",
)


def yolo_decode_scopes(float_model: Path) -> list[str]:
    """Scope regexes of a YOLO LiteRT graph's decoding tail, which INT8 keeps in float32.

    The head's module scopes, and the op writing each detection output (rank 3: boxes, scores and any
    mask coefficients in one tensor), named by the graph: that concatenation gets no module scope.
    """
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    graph = tfl_flatbuffer_utils.read_model(flatbuffer_bytes(float_model)).subgraphs[0]
    outputs = [graph.tensors[index] for index in graph.outputs]
    names = [tfl_flatbuffer_utils.get_tensor_name(t) for t in outputs if len(t.shape) == 3]
    return [*_DECODE_SCOPES, *(f"^{re.escape(name)};$" for name in names)]


def _with_op_precisions(metadata: ModelMetadata, flatbuffer: bytes, float_scopes: Sequence[str]) -> ModelMetadata:
    """The INT8 metadata with what the file computes in int8 and what stayed float32, counted from the file."""
    counts = op_precisions(flatbuffer)
    quantization = {**metadata.extra.get("quantization", {}), **counts}
    if float_scopes:
        quantization["float32_scope"] = "YOLO head decoding (DFL, box decode, score sigmoid, output concatenation)"
    return replace(metadata, extra={**metadata.extra, "quantization": quantization})


def op_precisions(flatbuffer: bytes) -> dict[str, Any]:
    """Ops by the type of their first output: how many run int8 / int16, and the float32 ones by op name.

    QUANTIZE / DEQUANTIZE (the conversions between the two) are left out.
    """
    from ai_edge_litert.schema_py_generated import BuiltinOperator
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    model = tfl_flatbuffer_utils.read_model(flatbuffer)
    graph = model.subgraphs[0]
    integer: Counter[str] = Counter()
    floats: Counter[str] = Counter()
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex].builtinCode
        if code in (BuiltinOperator.QUANTIZE, BuiltinOperator.DEQUANTIZE) or not op.outputs:
            continue
        kind = str(tfl_flatbuffer_utils.TENSOR_CODE_TO_TYPE[graph.tensors[op.outputs[0]].type]).lower()
        if kind == "float32":
            floats[str(tfl_flatbuffer_utils.TFL_OP_CODE_TO_NAME.get(code, code)).rsplit(".", 1)[-1]] += 1
        else:
            integer[kind] += 1
    return {"ops_by_output_type": {**integer, "float32": sum(floats.values())}, "float32_ops": dict(floats)}


def _calibration_data(float_model: Path, inputs: Sequence[np.ndarray]) -> dict[str, list[dict[str, np.ndarray]]]:
    """The images as the graph's one signature input, batch 1 each (the graph is traced at batch 1)."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(float_model)).get_signature_list()
    key, signature = next(iter(signatures.items()))
    (name,) = signature["inputs"]
    samples = [
        {name: np.ascontiguousarray(batch[index : index + 1], dtype=np.float32)}
        for batch in inputs
        for index in range(len(batch))
    ]
    return {key: samples}


def _metadata(source: SourceModel, precision: str, calibration_images: int) -> ModelMetadata:
    extra: dict[str, Any] = {
        "coordinates": "normalised by the input size in the graph",
        **litert_extra(precision, calibration_images),
    }
    return ModelMetadata(
        task=source.task,
        names=list(source.names),
        category_ids=list(source.category_ids),
        imgsz=[source.imgsz, source.imgsz],
        preprocessing=dict(YOLO_PREPROCESSING),
        precision=precision,
        outputs=["output0", "output1"] if source.task == "segment" else ["output0"],
        parameters=int(sum(p.numel() for p in source.handle.model.parameters())),
        source=str(source.path),
        extra=extra,
    )


def litert_extra(precision: str, calibration_images: int) -> dict[str, Any]:
    """The ``extra`` metadata every distillkit .tflite carries: the runtime, and how INT8 was made."""
    extra: dict[str, Any] = {"runtime": "litert"}
    if precision == "int8":
        extra["quantization"] = {
            "tool": "ai-edge-quantizer",
            "recipe": "static_wi8_ai8, float32 input and outputs",
            "calibration_images": calibration_images,
        }
    return extra


def with_entries(flatbuffer: bytes, ultralytics_metadata: dict[str, Any] | None, metadata: ModelMetadata) -> bytes:
    """The flatbuffer followed by a zip of the metadata entries (zip readers find a trailing archive).

    ``ultralytics_metadata`` None: no ultralytics entry (classifiers, which only distillkit's runtime reads).
    """
    buffer = io.BytesIO()
    buffer.write(flatbuffer)
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        if ultralytics_metadata is not None:
            archive.writestr(ULTRALYTICS_ENTRY, json.dumps(ultralytics_metadata))
        archive.writestr(DISTILLKIT_ENTRY, metadata.to_json())
    return buffer.getvalue()


def flatbuffer_bytes(path: Path) -> bytes:
    """The model alone: the bytes before the first appended zip entry (all of them when there is none)."""
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return data[: min(info.header_offset for info in archive.infolist())]
    except (zipfile.BadZipFile, ValueError):  # no appended archive (ValueError: an empty one)
        return data


def open_interpreter(path: Path, threads: int | None = None) -> Any:
    """A LiteRT interpreter with tensors allocated; a one-line UsageError for a file it cannot read."""
    require_tflite(export=False)
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except Exception as exc:  # ValueError / RuntimeError from the flatbuffer reader: not a TFLite model
        reason = " ".join(str(exc).split())
        raise UsageError(
            f"{path} is not a readable TFLite file ({reason})", "pass a .tflite written by distillkit optimize"
        ) from exc
    return interpreter


def check_image_input(path: Path, interpreter: Any | None = None) -> None:
    """One input, a batch of 3-channel pictures (N, 3, H, W) or (N, H, W, 3): what ultralytics' runtime feeds."""
    interpreter = interpreter or open_interpreter(path)
    inputs = interpreter.get_input_details()
    shapes = {detail["name"]: [int(d) for d in detail["shape"]] for detail in inputs}
    dims = next(iter(shapes.values())) if len(shapes) == 1 else []
    if len(dims) != 4 or 3 not in (dims[1], dims[3]):
        raise UsageError(
            f"{path} takes inputs {shapes} (name: shape), not one image tensor of shape (N, 3, H, W)",
            "pass a model exported by distillkit optimize (prompt-free, image input only)",
        )


def verify_tflite_file(path: Path) -> None:
    """Re-read a written file: the interpreter loads it, one image input, the entries its readers need.

    Every file needs distillkit's entry; a YOLO student also ultralytics' (its runtime reads that one),
    and a classifier one output of (1, number of classes): the logits its runtime reads first.
    """
    interpreter = open_interpreter(path)
    check_image_input(path, interpreter)
    metadata = read_tflite_metadata(path)
    if metadata is None:
        raise DataError(f"{path}: distillkit metadata entry missing after writing")
    if metadata.task in YOLO_TASKS and read_zip_entry(path, ULTRALYTICS_ENTRY) is None:
        raise DataError(f"{path}: ultralytics metadata entry missing after writing")
    if metadata.task == "classify":
        shapes = [[int(d) for d in detail["shape"]] for detail in interpreter.get_output_details()]
        if not shapes or shapes[0] != [1, len(metadata.names)]:
            raise DataError(f"{path}: outputs {shapes}, expected logits [1, {len(metadata.names)}] first")


def input_is_nhwc(detail: dict[str, Any]) -> bool:
    """A channels-last image input (onnx2tf-style files); litert-torch keeps the torch model's NCHW."""
    shape = detail["shape"]
    return int(shape[-1]) == 3 and int(shape[1]) != 3


class LiteRTSession:
    """A ``.tflite`` behind onnxruntime's ``InferenceSession`` calls (``get_inputs``, ``get_outputs``, ``run``).

    Code written for an ONNX session (the classifier runtime) then runs the LiteRT file unchanged. The
    input is always fed NCHW, as to the ONNX file; a channels-last file is transposed here.
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self._interpreter = open_interpreter(path, threads)
        check_image_input(path, self._interpreter)
        self._input = self._interpreter.get_input_details()[0]
        self._nhwc = input_is_nhwc(self._input)
        shape = [int(d) for d in self._input["shape"]]
        nchw = [shape[0], shape[3], shape[1], shape[2]] if self._nhwc else shape
        self._inputs = [SessionPort(str(self._input["name"]), nchw)]
        details = self._interpreter.get_output_details()
        self._outputs = [SessionPort(str(d["name"]), [int(v) for v in d["shape"]]) for d in details]
        self._output_index = {str(d["name"]): int(d["index"]) for d in details}

    def get_inputs(self) -> list[SessionPort]:
        return self._inputs

    def get_outputs(self) -> list[SessionPort]:
        return self._outputs

    def run(self, names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (batch,) = feeds.values()
        batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1) if self._nhwc else batch, dtype=np.float32)
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        wanted = names or [port.name for port in self._outputs]
        # copies: the interpreter reuses its output buffers on the next invoke
        return [self._interpreter.get_tensor(self._output_index[name]).copy() for name in wanted]


def onnx_layout(arrays: list[np.ndarray], height: int, width: int, nhwc: bool = False) -> list[np.ndarray]:
    detections = [a for a in arrays if a.ndim == 3]
    prototypes = [a.transpose(0, 3, 1, 2) if nhwc else a for a in arrays if a.ndim == 4]
    for array in detections:
        array[:, [0, 2]] *= width
        array[:, [1, 3]] *= height
    return [*detections, *prototypes]
