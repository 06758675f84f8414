"""Latency and output parity of a model's artefacts on real preprocessed images, this machine.

Latency is the network alone (no image decoding, letterbox or NMS: those are the same for every
artefact), batch 1, a stated number of threads, after warm-up. The artefacts are timed
*interleaved* — a few runs of each in turn, for several rounds — so that load from other processes
on a shared machine lands on all of them alike and the ratios stay meaningful.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.export.onnx_export import SourceModel
from distillkit.progress import NULL_PROGRESS, Progress

Runner = Callable[[np.ndarray], list[np.ndarray]]


# p90 above this multiple of the median: other processes took the CPU during timing, and the
# figures (and their ratios) should not be trusted without a re-run on a quieter machine.
WIDE_SPREAD = 1.5


@dataclass
class LatencyStats:
    median_ms: float
    p90_ms: float
    samples: int
    p10_ms: float | None = None
    round_medians_ms: list[float] = field(default_factory=list)  # one per interleaved round

    @property
    def spread(self) -> float:
        """p90 / median: 1.0 is a quiet machine; the run's noise in one number."""
        return self.p90_ms / self.median_ms if self.median_ms > 0 else float("inf")

    @property
    def too_wide(self) -> bool:
        return self.spread > WIDE_SPREAD

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_ms": round(self.median_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p10_ms": None if self.p10_ms is None else round(self.p10_ms, 3),
            "spread_p90_over_median": round(self.spread, 3),
            "round_medians_ms": [round(value, 3) for value in self.round_medians_ms],
            "samples": self.samples,
        }


def torch_runner(source: SourceModel, threads: int) -> Runner:
    """The PyTorch model as `infer` runs it on a CPU: float32, Conv+BN fused, channels-last (ultralytics' choice)."""
    import torch

    torch.set_num_threads(threads)
    if source.task == "classify":
        module = source.handle.model.float().eval()
    else:
        module = deepcopy(source.handle.model).float().eval().fuse()
        module = module.to(memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return _tensors(module(torch.from_numpy(batch)))

    return run


def _tensors(output: Any) -> list[np.ndarray]:
    """Flatten a YOLO eval output to the arrays an ONNX export returns, in its order.

    YOLO in eval mode returns ``(y, raw)``: ``y`` is the detection tensor, or ``(detections,
    protos)`` for segmentation; ``raw`` (per-level feature maps) is not exported.
    """
    import torch

    if isinstance(output, torch.Tensor):
        return [output.detach().float().numpy()]
    first = output[0] if isinstance(output, (tuple, list)) else output
    if isinstance(first, torch.Tensor):
        rest = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
        extra = [rest] if isinstance(rest, torch.Tensor) and rest.dim() == 4 and first.dim() == 3 else []
        return [t.detach().float().numpy() for t in [first, *extra]]
    return [t.detach().float().numpy() for t in first if isinstance(t, torch.Tensor)]


def onnx_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # onnxruntime warns about unused initializers of quantized graphs
    # onnxruntime's idle workers spin-wait for more work by default. Timed interleaved with PyTorch,
    # those spinning threads took the cores PyTorch needed and inflated its latency 20-30x; without
    # spinning every runtime gets the machine to itself while it runs. Spinning during run() only
    # (allow_spinning 1 + session.force_spinning_stop 1) was measured as the alternative on a 2-core
    # Xeon, yolov8n at 320 px, 2 threads: 14.2 ms against 16.9 ms here on a quiet machine, but
    # 34.0 ms against 18.0 ms while another process held a core (a spinning worker waits on a
    # descheduled peer). This baseline stays: steady under load, and on a quiet machine ~1.2x
    # slower than onnxruntime with its default spinning.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runner(path: Path, threads: int) -> Runner:
    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(output) for output in session.run(None, {name: batch})]

    return run


def openvino_runner(path: Path, threads: int, compiled: Any = None) -> Runner:
    """An OpenVINO folder compiled for batch-1 latency with ``threads`` CPU threads (or the given compiled model)."""
    from distillkit.export.openvino_export import compile_openvino

    compiled = compiled if compiled is not None else compile_openvino(path, threads)

    def run(batch: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(output) for output in compiled(batch).values()]

    return run


def tflite_runner(path: Path, threads: int) -> Runner:
    """Run a ``.tflite`` on the NCHW float32 batches of the other runners; outputs in ONNX order and layout.

    ONNX gives ``output0`` (N, 4+nc[+32], anchors) with boxes in input pixels, then (segmentation)
    the prototypes (N, 32, h, w). The LiteRT graph gives boxes divided by the input size: they are
    multiplied back here, as ultralytics' LiteRTBackend does. NHWC files (onnx2tf exports) are
    fed and read channels-last. A classifier's logits (N, C) are already the ONNX output.
    """
    from distillkit.export.tflite_export import check_image_input, input_is_nhwc, onnx_layout, open_interpreter
    from distillkit.model_metadata import read_tflite_metadata

    interpreter = open_interpreter(path, threads)
    check_image_input(path, interpreter)
    detail = interpreter.get_input_details()[0]
    nhwc = input_is_nhwc(detail)
    outputs = [output["index"] for output in interpreter.get_output_details()]
    metadata = read_tflite_metadata(path)
    classifier = metadata is not None and metadata.task == "classify"

    def run(batch: np.ndarray) -> list[np.ndarray]:
        height, width = batch.shape[2:]
        interpreter.set_tensor(detail["index"], batch.transpose(0, 2, 3, 1) if nhwc else batch)
        interpreter.invoke()
        arrays = [interpreter.get_tensor(index).copy() for index in outputs]
        return arrays if classifier else onnx_layout(arrays, height, width, nhwc)

    return run


def engine_runner(path: Path) -> Runner:
    """A TensorRT engine through ultralytics' AutoBackend on the first CUDA device."""
    import torch

    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.nn.autobackend import AutoBackend

    backend = AutoBackend(str(path), device=torch.device("cuda:0"), verbose=False)

    def run(batch: np.ndarray) -> list[np.ndarray]:
        output = backend(torch.from_numpy(batch).to("cuda:0"))
        outputs = output if isinstance(output, (list, tuple)) else [output]
        torch.cuda.synchronize()
        return [o.float().cpu().numpy() for o in outputs if isinstance(o, torch.Tensor)]

    return run


def measure_latency(
    runners: dict[str, Runner],
    inputs: Sequence[np.ndarray],
    warmup: int = 3,
    rounds: int = 5,
    per_round: int = 6,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, LatencyStats]:
    """Median and p90 milliseconds per image for each runner, timed interleaved over ``rounds``."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    with progress.task("timing artefacts", total=rounds * len(runners)) as bar:
        for run in runners.values():
            for index in range(warmup):
                run(inputs[index % len(inputs)])
        for round_index in range(rounds):
            for name, run in runners.items():
                for step in range(per_round):
                    batch = inputs[(round_index * per_round + step) % len(inputs)]
                    start = time.perf_counter()
                    run(batch)
                    samples[name].append((time.perf_counter() - start) * 1000.0)
                bar.advance()
    return {name: _stats(values, per_round) for name, values in samples.items()}


def _stats(values: list[float], per_round: int) -> LatencyStats:
    rounds = [values[start : start + per_round] for start in range(0, len(values), per_round)]
    return LatencyStats(
        median_ms=float(np.median(values)),
        p90_ms=float(np.percentile(values, 90)),
        samples=len(values),
        p10_ms=float(np.percentile(values, 10)),
        round_medians_ms=[float(np.median(chunk)) for chunk in rounds],
    )


def output_parity(
    reference: Runner, candidate: Runner, inputs: Sequence[np.ndarray], score_rows: slice | None = None
) -> dict[str, float]:
    """Largest absolute difference per output (``output0``, ``output1``...) over the images.

    ``score_rows`` (YOLO: rows 4..4+nc of ``output0``) adds a ``scores`` entry: box rows are in
    pixels, so their difference is not comparable with the 0–1 class scores.
    """
    worst: dict[str, float] = {}

    def keep(key: str, value: float) -> None:
        worst[key] = max(worst.get(key, 0.0), value)

    for batch in inputs:
        expected, actual = reference(batch), candidate(batch)
        for index, (a, b) in enumerate(zip(expected, actual, strict=False)):
            if a.shape != b.shape:
                keep(f"output{index}", float("inf"))
                continue
            difference = np.abs(a.astype(np.float64) - b)
            keep(f"output{index}", float(difference.max()))
            if index == 0 and score_rows is not None:
                keep("scores", float(difference[:, score_rows].max()))
    return worst
