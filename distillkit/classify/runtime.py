"""One interface over classifier files: torch checkpoints and exported ONNX, OpenVINO and LiteRT models.

``open_classifier(path)`` returns a ``ClassifierRuntime``: class names, input size, normalisation,
and ``logits(batch)`` for a normalised (B, 3, H, W) float tensor. Evaluation and inference are
written against it, so an exported model is scored exactly like its checkpoint. ``evidential`` says
the logits are Dirichlet evidence (``loss: evidential``), from the checkpoint's model name or the
ONNX metadata, so both report the same uncertainty u = K / S.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillkit.classify.checkpoint import LoadedClassifier, load_classifier
from distillkit.classify.thresholds import DecisionThresholds, checked_thresholds, decision_thresholds
from distillkit.errors import UsageError
from distillkit.tasks import model_task

PathLike = str | os.PathLike[str]


@dataclass
class ClassifierRuntime:
    """A classifier ready to run, whatever file it came from."""

    path: Path
    class_names: list[str]
    multi_label: bool
    input_hw: tuple[int, int]
    mean: list[float]
    std: list[float]
    interpolation: str = "bilinear"
    temperature: float = 1.0
    threshold: float = 0.5
    tuned_thresholds: list[float] | None = None  # per class, tuned on validation data (classifier.tune_thresholds)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    loaded: LoadedClassifier | None = None  # torch checkpoints only (Grad-CAM needs the module)
    session: Any = None  # onnxruntime.InferenceSession for .onnx files, an adapter with its interface otherwise
    fixed_batch: int | None = None  # ONNX exported with a static batch size
    evidential: bool = False  # logits are Dirichlet evidence: infer/evaluate add u = K / S (classify/research)
    notes: list[str] = field(default_factory=list)  # things the user should know about this file

    @property
    def kind(self) -> str:
        if self.loaded is not None:
            return "torch"
        if self.path.is_dir():
            return "openvino"
        return "tflite" if self.path.suffix.lower() == ".tflite" else "onnx"

    @property
    def thresholds(self) -> list[float]:
        """Per-class decision thresholds (multi-label): the tuned ones when stored, else ``threshold`` repeated."""
        return self.decision().values

    def decision(self, override: float | None = None) -> DecisionThresholds:
        """The per-class cuts to apply and their source; ``override`` (``--threshold``) replaces them all."""
        return decision_thresholds(self.tuned_thresholds, self.threshold, len(self.class_names), override)

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, C) logits for a normalised batch, on CPU."""
        if self.loaded is not None:
            return self.loaded.model(batch.to(self.device)).float().cpu()
        name = self.session.get_inputs()[0].name
        # only `logits`: evidential exports also output `alpha`, which the runtime derives from the logits itself
        wanted = [self.session.get_outputs()[0].name]
        arrays = batch.cpu().numpy().astype(np.float32)
        if self.fixed_batch is not None and self.fixed_batch != arrays.shape[0]:
            parts = [self.session.run(wanted, {name: arrays[i : i + 1]})[0] for i in range(arrays.shape[0])]
            return torch.from_numpy(np.concatenate(parts).astype(np.float32))
        return torch.from_numpy(np.asarray(self.session.run(wanted, {name: arrays})[0], dtype=np.float32))

    def probabilities(self, logits: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        scaled = logits / self.temperature if calibrated else logits
        return torch.sigmoid(scaled) if self.multi_label else torch.softmax(scaled, dim=1)


def _resolve_device(device: str | None) -> torch.device:
    from distillkit.training import resolve_device

    return resolve_device(device or "auto")


def open_classifier(path: PathLike, device: str | None = None) -> ClassifierRuntime:
    """Open a classifier checkpoint or its ONNX, OpenVINO or .tflite export; UsageError for anything else."""
    from distillkit.model_metadata import is_openvino_model

    source = Path(path)
    if is_openvino_model(source) and model_task(source) == "classify":
        return _open_openvino(source)
    if not source.is_file():
        raise UsageError(f"model {source} does not exist", "pass a train-classifier best.pt or its ONNX export")
    if source.suffix.lower() == ".onnx":
        return _open_onnx(source, device)
    if source.suffix.lower() == ".tflite":
        return _open_tflite(source)
    target = _resolve_device(device)
    loaded = load_classifier(source, device=target)
    meta = loaded.meta
    return ClassifierRuntime(
        path=source,
        class_names=list(meta.class_names),
        multi_label=meta.multi_label,
        input_hw=loaded.input_hw,
        mean=list(meta.mean),
        std=list(meta.std),
        interpolation=meta.interpolation,
        temperature=meta.temperature,
        threshold=meta.threshold,
        tuned_thresholds=checked_thresholds(meta.thresholds, len(meta.class_names), source),
        device=target,
        loaded=loaded,
        evidential=_name_is_evidential(meta.spec.name),
    )


def _name_is_evidential(spec_name: str) -> bool:
    if not spec_name.startswith("research:"):  # plain timm names never are; skip importing the research package
        return False
    from distillkit.classify.research.uncertainty import name_is_evidential

    return name_is_evidential(spec_name)


def _onnx_evidential(source: Path, extra: dict[str, Any], origin: str | None, notes: list[str]) -> bool:
    """The ``evidential`` metadata flag; for exports older than the flag, a note when their source checkpoint is."""
    flag = extra.get("evidential")
    if flag is not None:
        return bool(flag)
    if origin and Path(origin).is_file():
        from distillkit.classify.research.uncertainty import checkpoint_is_evidential

        if checkpoint_is_evidential(Path(origin)):
            notes.append(
                f"{source} was exported before distillkit stored the evidential flag: no uncertainty from it; "
                f"re-export {origin} with distillkit optimize"
            )
    return False


def _open_onnx(source: Path, device: str | None) -> ClassifierRuntime:
    import onnxruntime as ort

    from distillkit.model_metadata import read_onnx_metadata

    metadata = read_onnx_metadata(source)
    if metadata is None or metadata.task != "classify":
        raise UsageError(f"{source} is not a classifier export (no task=classify metadata)", "export it with optimize")
    providers = ["CPUExecutionProvider"]
    if device not in (None, "cpu") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(source), providers=providers)
    return _exported_runtime(source, metadata, session)


def _open_openvino(source: Path) -> ClassifierRuntime:
    from distillkit.export.openvino_export import OpenVINOSession
    from distillkit.model_metadata import openvino_model_folder, read_openvino_metadata

    folder = openvino_model_folder(source)
    metadata = read_openvino_metadata(folder)
    if metadata is None or metadata.task != "classify":  # pragma: no cover - model_task checked it
        raise UsageError(f"{source} is not a classifier export (no task=classify metadata)", "export it with optimize")
    return _exported_runtime(folder, metadata, OpenVINOSession(folder))


def _open_tflite(source: Path) -> ClassifierRuntime:
    """A LiteRT file on the CPU (the interpreter has no CUDA path: ``device`` does not apply)."""
    from distillkit.export.tflite_export import LiteRTSession
    from distillkit.model_metadata import read_tflite_metadata

    metadata = read_tflite_metadata(source)
    if metadata is None or metadata.task != "classify":
        raise UsageError(f"{source} is not a classifier export (no task=classify metadata)", "export it with optimize")
    return _exported_runtime(source, metadata, LiteRTSession(source))


def _exported_runtime(source: Path, metadata: Any, session: Any) -> ClassifierRuntime:
    """A runtime over an exported file's session: onnxruntime's, or an OpenVINO / LiteRT adapter with its interface."""
    shape = session.get_inputs()[0].shape
    fixed = shape[0] if isinstance(shape[0], int) else None
    pre = metadata.preprocessing or {}
    extra = metadata.extra or {}
    height, width = (metadata.imgsz + metadata.imgsz)[:2] if len(metadata.imgsz) == 1 else metadata.imgsz[:2]
    notes: list[str] = []
    evidential = _onnx_evidential(source, extra, metadata.source, notes)
    return ClassifierRuntime(
        path=source,
        class_names=list(metadata.names),
        multi_label=bool(metadata.multi_label),
        input_hw=(int(height), int(width)),
        mean=list(pre.get("mean") or [0.0, 0.0, 0.0]),
        std=list(pre.get("std") or [1.0, 1.0, 1.0]),
        interpolation=str(pre.get("interpolation", "bilinear")),
        temperature=float(extra.get("temperature", pre.get("temperature", 1.0))),
        threshold=float(extra.get("threshold", pre.get("threshold", 0.5))),
        # exports written before per-class thresholds were carried have none: the scalar applies
        tuned_thresholds=checked_thresholds(extra.get("thresholds"), len(metadata.names), source),
        session=session,
        fixed_batch=fixed,
        evidential=evidential,
        notes=notes,
    )
