"""INT8 (static and dynamic) and FP16 versions of an exported ONNX model.

Static INT8 follows the recipe measured on this kind of CPU (see STACK-NOTES and the optimize
report's ``recipes`` section): ``quant_pre_process`` first, calibration on real images through
the inference preprocessing, QDQ format, per-channel int8 weights, uint8 activations. The
``fast`` recipe quantizes every op type *except the YOLO head's decoding* (DFL softmax, box
arithmetic, the Concat that joins boxes with scores): one uint8 scale over pixel coordinates and
0–1 scores rounds every score to zero. Quantizing the SiLU pairs (Sigmoid*Mul), Concat, Add,
MaxPool and Resize keeps tensors int8 between convolutions, which is what makes INT8 pay off on a
CPU; Conv-only QDQ spends most of its gain on quantize/dequantize at every activation.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.cpu_features import int8_weights_need_reduced_range
from distillkit.errors import UsageError
from distillkit.export.onnx_export import finalize_onnx
from distillkit.model_metadata import INPUT_NAME, ModelMetadata, onnx_metadata_props
from distillkit.progress import NULL_PROGRESS, Progress


@dataclass(frozen=True)
class QuantizationRecipe:
    name: str
    quant_format: str = "QDQ"  # QDQ | QOperator
    op_types: tuple[str, ...] | None = None  # None: every op type onnxruntime can quantize
    exclude_head: bool = True  # keep the detection/segmentation head's decoding in float
    per_channel: bool = True
    # 7-bit weights; None: when this CPU lacks VNNI/AMX, where onnxruntime's u8s8 kernels saturate
    reduce_range: bool | None = None
    calibration: str = "minmax"  # minmax | entropy | percentile
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["op_types"] = list(self.op_types) if self.op_types is not None else "all"
        if self.reduce_range is None:
            data["reduce_range"] = f"auto (here: {int8_weights_need_reduced_range()})"
        return data


RECIPES: dict[str, QuantizationRecipe] = {
    "fast": QuantizationRecipe(
        "fast",
        description="every op type but the head's decoding; int8 stays int8 between convolutions (default)",
    ),
    "conv": QuantizationRecipe(
        "conv", op_types=("Conv",), description="Conv only (STACK-NOTES recipe): safe, smaller gain"
    ),
    "full": QuantizationRecipe(
        "full",
        exclude_head=False,
        description="everything including the head; one scale for boxes and scores: zeroes YOLO scores",
    ),
}
DEFAULT_RECIPE = "fast"


def quantize_static_int8(
    source: Path,
    target: Path,
    metadata: ModelMetadata,
    calibration_inputs: Sequence[np.ndarray],
    recipe: QuantizationRecipe | str = DEFAULT_RECIPE,
    progress: Progress = NULL_PROGRESS,
) -> ModelMetadata:
    """Static INT8 of ``source`` (an fp32 ONNX distillkit wrote) into ``target``; returns its metadata."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    recipe = RECIPES[recipe] if isinstance(recipe, str) else recipe
    if recipe.reduce_range is None:
        recipe = replace(recipe, reduce_range=int8_weights_need_reduced_range())
    if not calibration_inputs:
        raise UsageError("no calibration images", "pass --calib-data or --calib-dir with real images")

    class Reader(CalibrationDataReader):
        def __init__(self, bar: Any) -> None:
            self._inputs: Iterator[np.ndarray] = iter(calibration_inputs)
            self._bar = bar

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._inputs, None)
            if item is None:
                return None
            self._bar.advance()
            return {INPUT_NAME: item}

    original = onnx.load(str(source))
    props = onnx_metadata_props(original)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=target.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "quantized.onnx"
        # Shape inference + graph cleanup first: onnxruntime's documented step before static quantization.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        excluded = head_decode_nodes(onnx.load(str(prepared))) if recipe.exclude_head else []
        with progress.task(f"calibrating INT8 ({recipe.name}) on {len(calibration_inputs)} images", total=None) as bar:
            quantize_static(
                str(prepared),
                str(quantized),
                Reader(bar),
                quant_format=QuantFormat.QDQ if recipe.quant_format == "QDQ" else QuantFormat.QOperator,
                op_types_to_quantize=list(recipe.op_types) if recipe.op_types is not None else None,
                nodes_to_exclude=excluded,
                per_channel=recipe.per_channel,
                reduce_range=bool(recipe.reduce_range),
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=_calibration_method(recipe.calibration),
                extra_options={"CalibMovingAverage": recipe.calibration == "minmax"},
            )
        model = onnx.load(str(quantized))
    result = replace(
        metadata,
        precision="int8",
        extra={**metadata.extra, "quantization": {**recipe.to_dict(), "excluded_nodes": len(excluded)}},
    )
    finalize_onnx(model, target, result, {key: value for key, value in props.items() if key != "distillkit"})
    return result


def quantize_dynamic_int8(source: Path, target: Path, metadata: ModelMetadata) -> ModelMetadata:
    """Dynamic INT8 (weights int8, activations quantized at run time): no calibration, usually slower on CPU."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    props = onnx_metadata_props(onnx.load(str(source), load_external_data=False))
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=target.parent) as work:
        quantized = Path(work) / "quantized.onnx"
        quantize_dynamic(str(source), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
        model = onnx.load(str(quantized))
    result = replace(metadata, precision="int8", extra={**metadata.extra, "quantization": {"name": "dynamic"}})
    finalize_onnx(model, target, result, {key: value for key, value in props.items() if key != "distillkit"})
    return result


def convert_fp16(source: Path, target: Path, metadata: ModelMetadata) -> ModelMetadata:
    """FP16 weights and compute, float32 input and outputs (for GPU targets; CPUs run fp16 slowly)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    props = onnx_metadata_props(model)
    # keep_io_types: callers feed the same float32 tensor to every artefact
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    # the converter appends the input/output Cast nodes at the end of the node list, which onnx.checker
    # (run on every artefact we write) rejects as not topologically sorted: put them in order
    from onnxruntime.transformers.onnx_model import OnnxModel

    ordered = OnnxModel(converted)
    ordered.topological_sort()
    converted = ordered.model
    result = replace(metadata, precision="fp16")
    finalize_onnx(converted, target, result, {key: value for key, value in props.items() if key != "distillkit"})
    return result


def head_decode_nodes(model: Any) -> list[str]:
    """Nodes of the YOLO head that decode (not its conv branches), and whatever produces a graph output.

    Ultralytics exports name nodes after module paths (``/model.22/cv2.0/...``); the head is the
    last module, its learned branches are ``cv2``/``cv3`` (boxes, classes), ``cv4`` (mask
    coefficients) and ``proto``; everything else in it is decoding arithmetic.
    """
    indices = [int(match.group(1)) for node in model.graph.node if (match := re.match(r"/model\.(\d+)/", node.name))]
    excluded: set[str] = set()
    if indices:
        prefix = f"/model.{max(indices)}/"
        branch = re.compile(re.escape(prefix) + r"(cv\d|proto)\b")
        excluded |= {n.name for n in model.graph.node if n.name.startswith(prefix) and not branch.match(n.name)}
    outputs = {output.name for output in model.graph.output}
    excluded |= {node.name for node in model.graph.node if outputs.intersection(node.output)}
    return sorted(excluded)


def _calibration_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if name not in methods:
        raise UsageError(f"unknown calibration method {name!r}", f"use one of {', '.join(methods)}")
    return methods[name]
