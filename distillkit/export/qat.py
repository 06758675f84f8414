"""Quantization-aware fine-tuning (QAT) of a YOLO student into an INT8 QDQ ONNX file onnxruntime runs in int8.

Technique: eager-mode fake quantization written here with ``torch.fake_quantize_per_*_affine``
(the ops ``torch.onnx.export`` turns into ``QuantizeLinear``/``DequantizeLinear``), placed where
optimize's ``fast`` recipe quantizes: every convolution's input and per-channel int8 weights, the
convolution output, and both halves of SiLU (``Sigmoid`` and ``Mul``), so onnxruntime fuses the
exported pairs into ``QLinearConv`` / ``QLinearSigmoid`` / ``QLinearMul`` and keeps tensors int8
between convolutions. The YOLO head's decoding (DFL, anchors, box arithmetic, the box+score
Concat) stays float, as in ``fast``: one uint8 scale over pixels and 0–1 scores zeroes the scores.

Why not the libraries (measured with torch 2.14, nncf 3.4, onnxruntime 1.32 on this CPU):
NNCF's PyTorch QAT trains and exports QDQ ONNX, but it places quantizers on operation *inputs* and
treats Conv+SiLU as one fused unit (OpenVINO's pattern): the convolution output is never
quantized, so onnxruntime cannot form ``QLinearConv`` and runs every convolution in float between
dequantize nodes — 84 ms against 79 ms for fp32 and 42 ms for the ``fast`` PTQ file, i.e. no
speed-up at all. PyTorch's PT2E QAT (``prepare_qat_pt2e``) works on one ``torch.export`` graph,
while a YOLO model returns raw maps in training and decoded boxes in inference, and its quantized
ops then need the dynamo ONNX exporter's QDQ translation: two more moving parts for the same result.

Procedure: BatchNorm folded into the convolutions first (ultralytics' ``fuse``), so the weights
trained are the weights deployed and no BN statistics drift during the short fine-tune; activation
ranges initialised on optimize's calibration images with the float model (mean of each image's
min/max, as the ``fast`` recipe's ``CalibMovingAverage``: the PTQ starting point) and then frozen;
weight scales follow the weights (per output channel, ``max|w| / 127``; ``/ 63``, a 7-bit range, on
x86 CPUs without VNNI/AMX like the static recipes: there u8 x s8 products are summed in pairs that
saturate int16 with full-range weights, and onnxruntime's int8 kernels stray from the Q/DQ
arithmetic the model was trained for — measured here on BCCD yolov8n, by a third of a unit on
average after the first convolution with 8 bits, 1e-7 with 7; the fine-tuning trains the coarser
grid's error back). Training uses the model's
own YOLO loss (``init_criterion``) on ultralytics' dataset and dataloader (its augmentation, mosaic
off as in the last epochs of YOLO training), SGD with a small learning rate on a cosine schedule.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distillkit.errors import DataError
from distillkit.export.onnx_export import SourceModel, finalize_onnx
from distillkit.model_metadata import INPUT_NAME, ModelMetadata, onnx_metadata_props
from distillkit.progress import NULL_PROGRESS, Progress, epoch_line, log_line

QAT_FILE = "model_int8_qat.onnx"
_TAG = "_distillkit_fake_quant"  # attribute set on tensors that already went through a fake quantizer
_INT32_LIMIT = 2.0**30  # largest int32 bias magnitude allowed, with a factor 2 of headroom


@dataclass(frozen=True)
class QatSettings:
    epochs: int = 3
    batch: int = 16
    lr: float = 1e-4  # ultralytics' final learning rate (lr0 0.01 x lrf 0.01): the model is already trained
    momentum: float = 0.937
    weight_decay: float = 5e-4
    mosaic: float = 0.0  # YOLO training ends without mosaic (close_mosaic); fine-tuning stays there
    per_channel: bool = True  # int8 weight scale per output channel (False: one per tensor, for targets that need it)
    # None: 7 on x86 CPUs without VNNI/AMX, 8 elsewhere (the rule of the static INT8 recipes,
    # distillkit.cpu_features): there u8 x s8 products are summed in pairs that saturate int16 with
    # full-range weights, and onnxruntime's int8 kernels stray from the Q/DQ arithmetic trained for.
    weight_bits: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QatResult:
    path: Path
    metadata: ModelMetadata
    settings: QatSettings
    train_seconds: float
    images: int
    epoch_losses: list[dict[str, float]] = field(default_factory=list)
    model: nn.Module | None = None  # the fake-quant torch model the file was exported from

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.settings.to_dict(),
            "train_images": self.images,
            "train_seconds": round(self.train_seconds, 1),
            "epoch_losses": self.epoch_losses,
        }


class ActivationFakeQuant(nn.Module):
    """uint8 per-tensor affine fake quantization; ranges observed in calibration, then frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("min_sum", torch.tensor(0.0))
        self.register_buffer("max_sum", torch.tensor(0.0))
        self.register_buffer("observed", torch.tensor(0))
        self.observing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:  # calibration runs the float model, as onnxruntime's calibrator does
            self.min_sum += x.detach().min()
            self.max_sum += x.detach().max()
            self.observed += 1
            return x
        return _tagged(torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255), self)

    def requantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on this quantizer's grid again (a view or a max-pool of its output): exported as Q/DQ."""
        if self.observing:
            return x
        return _tagged(torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255), self)

    def freeze(self) -> None:
        """Scale and zero point from the mean min/max of the calibration images; the range holds 0."""
        self.observing = False
        if int(self.observed) == 0:
            raise DataError("a quantizer saw no calibration data", "the calibration images did not reach it")
        low = min(float(self.min_sum) / int(self.observed), 0.0)
        high = max(float(self.max_sum) / int(self.observed), 0.0)
        scale = max(high - low, 1e-8) / 255.0
        self.scale.fill_(scale)
        self.zero_point.fill_(int(np.clip(round(-low / scale), 0, 255)))


def weight_scale(weight: torch.Tensor, per_channel: bool = True, bits: int = 8) -> torch.Tensor:
    """Symmetric ``max|w| / (2^(bits-1) - 1)`` (onnxruntime's int8 scale at 8 bits), per output channel or not."""
    magnitude = weight.detach().abs()
    peak = magnitude.amax(dim=tuple(range(1, weight.dim()))) if per_channel else magnitude.max()
    return peak.clamp_min(1e-8) / float(2 ** (bits - 1) - 1)


class QuantConv(nn.Module):
    """A BN-folded convolution (+ optional SiLU) with fake quantization where onnxruntime puts QDQ."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None, per_channel: bool = True, bits: int = 8) -> None:
        super().__init__()
        self.conv = conv
        self.per_channel = per_channel
        self.bits = bits  # weights use [-(2^(bits-1)-1), 2^(bits-1)-1] of int8
        self.act = act
        self.silu = isinstance(act, nn.SiLU)
        self.input_quant = ActivationFakeQuant()
        self.output_quant = ActivationFakeQuant()
        self.sigmoid_quant = ActivationFakeQuant() if self.silu else None
        self.mul_quant = ActivationFakeQuant() if self.silu else None
        self.register_buffer("weight_scale", weight_scale(conv.weight, per_channel, bits))
        self.weights_frozen = False
        self.freezing = False

    def freeze_weights(self) -> None:
        """Fix the weight scales at the next forward pass (for export: constants, not ops computing them)."""
        self.freezing = True

    def quantized_weight(self, input_scale: torch.Tensor | None) -> torch.Tensor:
        if self.weights_frozen:
            scale = self.weight_scale
        else:  # while training the scale follows the weights (gradients pass the rounding straight through)
            scale = weight_scale(self.conv.weight, self.per_channel, self.bits)
            if input_scale is not None and self.conv.bias is not None:
                # The int32 bias has scale input x weight: raise a weight scale too small for the bias to
                # fit (onnxruntime's quantizer does the same), else the written bias would overflow.
                needed = self.conv.bias.detach().abs() / (input_scale.detach() * _INT32_LIMIT)
                scale = torch.maximum(scale, needed if self.per_channel else needed.max())
            if self.freezing:
                self.weight_scale = scale.detach().clone()
                self.weights_frozen, self.freezing = True, False
        zero = torch.zeros(scale.shape, dtype=torch.int32, device=scale.device)
        if not self.per_channel:
            return torch.fake_quantize_per_tensor_affine(self.conv.weight, scale, zero, -128, 127)
        return torch.fake_quantize_per_channel_affine(self.conv.weight, scale, zero, 0, -128, 127)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, quantizer = _quantized_input(x, self.input_quant)
        input_scale = quantizer.scale if quantizer is not None and not quantizer.observing else None
        conv = self.conv
        weight = self.quantized_weight(input_scale)
        y = F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        y = self.output_quant(y)
        if self.silu:
            assert self.sigmoid_quant is not None and self.mul_quant is not None
            return self.mul_quant(y * self.sigmoid_quant(torch.sigmoid(y)))
        if self.act is not None and not isinstance(self.act, nn.Identity):
            return self.act(y)  # another activation stays float; the next convolution quantizes its input
        return y


def _tagged(tensor: torch.Tensor, quantizer: ActivationFakeQuant) -> torch.Tensor:
    setattr(tensor, _TAG, quantizer)
    return tensor


def _quantizer_of(x: torch.Tensor) -> tuple[ActivationFakeQuant | None, bool]:
    """The quantizer whose grid ``x`` is on, and whether ``x`` is that quantizer's output itself."""
    own = getattr(x, _TAG, None)
    if own is not None:
        return own, True
    base = x._base  # a chunk/split view of a quantized tensor (C2f) keeps its grid
    return (getattr(base, _TAG, None) if base is not None else None), False


def _quantized_input(x: torch.Tensor, fallback: ActivationFakeQuant) -> tuple[torch.Tensor, ActivationFakeQuant | None]:
    """``x`` on an int8 grid, and the quantizer of that grid."""
    quantizer, direct = _quantizer_of(x)
    if quantizer is None:
        return fallback(x), fallback  # a Concat, Add or the image: a new range, as onnxruntime gives it
    # A view of a quantized tensor gets the same Q/DQ again, so a DequantizeLinear sits right
    # before the convolution (onnxruntime fuses QLinearConv only then); values do not change.
    return (x if direct else quantizer.requantize(x)), quantizer


def _pass_grid(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
    """MaxPool and Upsample keep their input's grid: same Q/DQ after them (int8 max-pool and resize)."""
    quantizer, _ = _quantizer_of(inputs[0]) if inputs and isinstance(inputs[0], torch.Tensor) else (None, False)
    return quantizer.requantize(output) if quantizer is not None else output


def _concat_output(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
    quantizer = getattr(module, "output_quant", None)
    return quantizer(output) if quantizer is not None else output


def prepare_qat_model(source: SourceModel, per_channel: bool = True, bits: int = 8) -> nn.Module:
    """A float copy of the YOLO model, BN folded, fake quantizers inserted outside the head's decoding."""
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.nn.modules import Concat, Conv

    model = deepcopy(source.handle.model).float().eval()
    model.fuse()  # BN folded into the convolutions: what is trained is what is deployed
    head = model.model[-1]
    branches = [getattr(head, name) for name in ("cv2", "cv3", "cv4") if hasattr(head, name)]
    _replace_convs(model, Conv, per_channel, bits)
    for branch_list in branches:  # the head's last 1x1 conv of each branch is a bare nn.Conv2d
        for sequential in branch_list:
            last = len(sequential) - 1
            if isinstance(sequential[last], nn.Conv2d):
                sequential[last] = QuantConv(sequential[last], None, per_channel, bits)
    for module in model.modules():
        if isinstance(module, (nn.MaxPool2d, nn.Upsample)):
            module.register_forward_hook(_pass_grid)
        elif isinstance(module, Concat):
            module.output_quant = ActivationFakeQuant()
            module.register_forward_hook(_concat_output)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    head.dfl.requires_grad_(False)  # DFL's conv is a fixed integral, not a learned layer
    return model


def _replace_convs(parent: nn.Module, conv_type: type, per_channel: bool, bits: int) -> None:
    for name, child in list(parent.named_children()):
        if type(child).__name__ == "DFL":
            continue
        if isinstance(child, conv_type) and not hasattr(child, "bn") and isinstance(child.conv, nn.Conv2d):
            replacement = QuantConv(child.conv, child.act, per_channel, bits)
            for attribute in ("i", "f", "type", "np"):  # ultralytics' graph bookkeeping on top-level layers
                if hasattr(child, attribute):
                    setattr(replacement, attribute, getattr(child, attribute))
            setattr(parent, name, replacement)
        else:
            _replace_convs(child, conv_type, per_channel, bits)


def activation_quantizers(model: nn.Module) -> list[ActivationFakeQuant]:
    return [module for module in model.modules() if isinstance(module, ActivationFakeQuant)]


def calibrate(model: nn.Module, inputs: Sequence[np.ndarray], progress: Progress = NULL_PROGRESS) -> None:
    """Activation ranges from the calibration images through the float model (the PTQ starting point)."""
    quantizers = activation_quantizers(model)
    for quantizer in quantizers:
        quantizer.observing = True
    model.eval()
    with torch.no_grad(), progress.task(f"QAT: calibrating on {len(inputs)} images", total=len(inputs)) as bar:
        for batch in inputs:
            model(torch.from_numpy(batch))
            bar.advance()
    unused = [quantizer for quantizer in quantizers if int(quantizer.observed) == 0]
    for quantizer in unused:  # e.g. a Concat whose output only the decoding reads: keep it out of the graph
        quantizer.observing = True
    for quantizer in quantizers:
        if quantizer not in unused:
            quantizer.freeze()


def qat_int8(
    source: SourceModel,
    train_data: Path,
    target: Path,
    metadata: ModelMetadata,
    calibration_inputs: Sequence[np.ndarray],
    settings: QatSettings,
    images_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> QatResult:
    """Calibrate, fine-tune ``settings.epochs`` epochs with fake quantization, write ``target`` (QDQ INT8)."""
    from distillkit.export.prune import yolo_training_data

    if not calibration_inputs:
        raise DataError("QAT needs the calibration images of the INT8 quantization")
    from distillkit.cpu_features import int8_weights_need_reduced_range

    if settings.weight_bits is None:
        settings = replace(settings, weight_bits=7 if int8_weights_need_reduced_range() else 8)
    assert settings.weight_bits is not None
    torch.manual_seed(settings.seed)
    model = prepare_qat_model(source, settings.per_channel, settings.weight_bits)
    calibrate(model, calibration_inputs, progress)
    yaml_path = yolo_training_data(train_data, images_dir, source.task, target.parent / "qat_data", progress)
    start = time.perf_counter()
    losses, images = train_qat(model, yaml_path, source, settings, progress)
    seconds = time.perf_counter() - start
    extra = {
        "quantization": {
            "name": "qat",
            "technique": "fake-quant fine-tuning (QDQ at conv inputs/outputs and SiLU, head decoding float)",
            "weights": f"int8 ({settings.weight_bits}-bit range) symmetric per "
            + ("output channel" if settings.per_channel else "tensor"),
            "activations": "uint8 per tensor",
            "calibration_images": len(calibration_inputs),
            **settings.to_dict(),
            "train_data": str(train_data),
        }
    }
    result = replace(metadata, precision="int8", extra={**metadata.extra, **extra})
    export_qat_onnx(model, target, result, source)
    return QatResult(target, result, settings, seconds, images, losses, model)


def train_qat(
    model: nn.Module, yaml_path: Path, source: SourceModel, settings: QatSettings, progress: Progress
) -> tuple[list[dict[str, float]], int]:
    """The fine-tuning loop: ultralytics' dataloader and the model's own loss; Ctrl-C stops at a batch boundary."""
    from distillkit.interrupts import deferred_interrupt

    loader, hyperparameters = _train_loader(yaml_path, source, settings)
    model.args = hyperparameters  # the loss reads its box/cls/dfl gains there
    criterion = model.init_criterion()
    decay = [p for name, p in model.named_parameters() if p.requires_grad and name.endswith("weight")]
    rest = [p for name, p in model.named_parameters() if p.requires_grad and not name.endswith("weight")]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=settings.lr,
        momentum=settings.momentum,
        nesterov=True,
    )
    steps = max(1, settings.epochs * len(loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    history: list[dict[str, float]] = []
    with deferred_interrupt(defer=True) as interrupt:
        for epoch in range(1, settings.epochs + 1):
            model.train()
            started = time.perf_counter()
            totals: dict[str, float] = {}
            with progress.task(f"QAT epoch {epoch}/{settings.epochs}", total=len(loader)) as bar:
                for batch in _batches(loader):
                    interrupt.check()  # a batch boundary: nothing is half-written
                    loss, items = criterion(model(batch["img"]), batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.sum().backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)  # ultralytics' clipping
                    optimizer.step()
                    schedule.step()
                    for name, value in _loss_items(items, criterion).items():
                        totals[name] = totals.get(name, 0.0) + value
                    bar.advance()
            means = {name: value / len(loader) for name, value in totals.items()}
            history.append({"epoch": epoch, **{key: round(value, 5) for key, value in means.items()}})
            log_line(progress, "QAT " + epoch_line(epoch, settings.epochs, means, time.perf_counter() - started))
    model.eval()
    return history, len(loader.dataset)


def _loss_items(items: Any, criterion: Any) -> dict[str, float]:
    """The loss parts by name: a dict in this ultralytics, a tensor in the order of ``loss_names`` before."""
    if isinstance(items, dict):
        return {str(name): float(value) for name, value in items.items()}
    return {
        str(name): float(value) for name, value in zip(criterion.loss_names, items.detach().flatten(), strict=False)
    }


def _batches(loader: Any) -> Iterator[dict[str, Any]]:
    for batch in loader:
        batch["img"] = batch["img"].float() / 255.0
        yield batch


def _train_loader(yaml_path: Path, source: SourceModel, settings: QatSettings) -> tuple[Any, Any]:
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    overrides = {
        "task": source.task,
        "mode": "train",
        "imgsz": source.imgsz,
        "batch": settings.batch,
        "workers": 0,
        "mosaic": settings.mosaic,
        "seed": settings.seed,
        "plots": False,
        "verbose": False,
    }
    cfg = get_cfg(overrides=overrides)
    data = check_det_dataset(str(yaml_path))
    dataset = build_yolo_dataset(cfg, data["train"], settings.batch, data, mode="train", stride=32)
    if len(dataset) == 0:
        raise DataError(f"no training images in {yaml_path}")
    batch = min(settings.batch, len(dataset))
    return build_dataloader(dataset, batch, workers=0, shuffle=True, pin_memory=False, device="cpu"), cfg


def export_qat_onnx(model: nn.Module, target: Path, metadata: ModelMetadata, source: SourceModel) -> None:
    """torch.onnx export (fake quantizers become Q/DQ), weights stored as int8, biases int32, metadata, verified."""
    import onnx

    head = model.model[-1]
    head.export, head.format, head.dynamic, head.shape = True, "onnx", False, None  # ultralytics' export layout
    names = ["output0", "output1"] if source.task == "segment" else ["output0"]
    example = torch.zeros(1, 3, source.imgsz, source.imgsz)
    for module in model.modules():
        if isinstance(module, QuantConv):
            module.freeze_weights()
    with torch.no_grad():
        model(example)  # freezes the weight scales
    with tempfile.TemporaryDirectory(prefix=".qat-", dir=target.parent) as work:
        raw = Path(work) / "qat.onnx"
        try:
            with torch.no_grad():
                torch.onnx.export(
                    model, example, str(raw), opset_version=18, input_names=[INPUT_NAME], output_names=names,
                    dynamo=False,  # the TorchScript exporter maps fake_quantize_* to QuantizeLinear/DequantizeLinear
                )  # fmt: skip
        except Exception as exc:  # the exporter raises bare exceptions; say what failed
            raise DataError(f"ONNX export of the QAT model failed ({exc})") from exc
        finally:
            head.export = False
        graph = onnx.load(str(raw))
    store_int8_weights(graph)
    props = {"names": str(dict(enumerate(source.names))), "task": source.task, "imgsz": str([source.imgsz] * 2)}
    finalize_onnx(graph, target, metadata, {**onnx_metadata_props(graph), **props, "stride": "32"})


def store_int8_weights(model: Any) -> None:
    """Fold QuantizeLinear of constant weights into int8 initializers; give Conv biases an int32 DequantizeLinear.

    The exporter writes ``float weight -> QuantizeLinear -> DequantizeLinear``: a 4x larger file, and
    onnxruntime fuses ``QLinearConv`` only when every Conv input, the bias too, comes from a dequantize.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = _constants(model)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed: set[int] = set()
    new_initializers = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in constants:
            continue
        value, scale, zero = (constants[name] for name in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        quantized = _quantize(value, scale, zero, axis)
        name = node.output[0] + "_int"
        new_initializers.append(numpy_helper.from_array(quantized, name))
        for consumer in consumers.get(node.output[0], []):
            consumer.input[:] = [name if item == node.output[0] else item for item in consumer.input]
        removed.add(id(node))
    dequantized = {node.output[0]: node for node in graph.node if node.op_type == "DequantizeLinear"}
    added = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in constants:
            continue
        source_x, source_w = dequantized.get(node.input[0]), dequantized.get(node.input[1])
        if source_x is None or source_w is None:
            continue
        bias_value = constants[node.input[2]].astype(np.float64)
        scale = (constants[source_x.input[1]] * constants[source_w.input[1]]).astype(np.float32).reshape(-1)
        bias_scale = np.ascontiguousarray(np.broadcast_to(scale, bias_value.shape))  # per channel, as axis=0 says
        bias = np.rint(bias_value / bias_scale)
        if np.abs(bias).max() >= 2**31:  # tiny input and weight scales: int32 cannot hold it, keep it float
            continue
        bias_q = bias.astype(np.int32)
        stem = node.input[2]
        new_initializers += [
            numpy_helper.from_array(bias_q, stem + "_int32"),
            numpy_helper.from_array(bias_scale, stem + "_scale"),
            numpy_helper.from_array(np.zeros_like(bias_q), stem + "_zero"),
        ]
        added.append(
            helper.make_node(
                "DequantizeLinear", [stem + "_int32", stem + "_scale", stem + "_zero"], [stem + "_dq"], axis=0
            )
        )
        node.input[2] = stem + "_dq"
    kept = [node for node in graph.node if id(node) not in removed]
    del graph.node[:]
    graph.node.extend(added + kept)
    graph.initializer.extend(new_initializers)
    _drop_unused(model)


def _constants(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            attribute = next((a for a in node.attribute if a.name == "value"), None)
            if attribute is not None:
                values[node.output[0]] = numpy_helper.to_array(attribute.t)
        elif node.op_type == "Identity" and node.input[0] in values:  # the exporter's shared equal constants
            values[node.output[0]] = values[node.input[0]]
    return values


def _quantize(value: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear on a constant: round half to even, saturate to the zero point's type."""
    shape = [1] * value.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = scale.size
    info = np.iinfo(zero.dtype)
    quantized = np.rint(value / scale.reshape(shape)) + zero.reshape(shape).astype(np.int64)
    return np.clip(quantized, info.min, info.max).astype(zero.dtype)


def _drop_unused(model: Any) -> None:
    """Remove nodes and initializers nothing reads any more (the folded weights and their constants)."""
    graph = model.graph
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
