"""ONNX export of `train-classifier` models: input ``images``, output ``logits``, task ``classify``.

The classify family's exporter: ``distillkit.classify.services`` registers it for the task ``classify``,
and `optimize` (``distillkit.export``) reaches it through ``distillkit.tasks``, never by importing it.

The classifier comes from ``distillkit.classify.load_classifier`` (an eval-mode ``nn.Module`` taking
normalised (B, 3, H, W) floats and returning (B, C) logits, with ``class_names``, ``multi_label``,
``imgsz``, ``mean`` and ``std``). Its preprocessing (resize to the input size with its
interpolation, /255, mean/std) and decision settings (temperature, threshold, and the per-class
thresholds when they were tuned) are stored in the metadata, which ``distillkit.classify.runtime``
reads: the ONNX file alone says how to feed it.

Evidential classifiers (``classifier.loss: evidential``) keep their uncertainty: the metadata says
``evidential: true`` (false for every other classifier) and the graph has a second output ``alpha``
(``softplus(logits) + 1``, the Dirichlet parameters), so any ONNX consumer gets ``u = K / sum(alpha)``
and the probabilities from ``logits`` exactly as before. Other classifiers keep the single ``logits`` output.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from distillkit.errors import DataError, UsageError
from distillkit.export.onnx_export import DEFAULT_OPSET, SourceModel, finalize_onnx
from distillkit.model_metadata import INPUT_NAME, ModelMetadata

LOGITS = "logits"
ALPHA = "alpha"  # evidential exports only: Dirichlet parameters, u = K / alpha.sum(1)


def load_classifier_source(path: Path, imgsz: int | None = None) -> SourceModel:
    from distillkit.classify.checkpoint import load_classifier

    classifier = load_classifier(path, device="cpu")
    return classifier_source(path, classifier, imgsz)


def classifier_source(path: Path, classifier: Any, imgsz: int | None = None) -> SourceModel:
    """A ``SourceModel`` from any object with the ``load_classifier`` interface."""
    names = [str(name) for name in classifier.class_names]
    category_ids = _category_ids(classifier, len(names))
    size = classifier.imgsz
    height, width = (imgsz, imgsz) if imgsz else (size, size) if isinstance(size, int) else tuple(size)
    return SourceModel(
        path=path,
        task="classify",
        names=names,
        category_ids=category_ids,
        imgsz=int(max(height, width)),
        input_hw=(int(height), int(width)),
        multi_label=bool(classifier.multi_label),
        mean=tuple(float(v) for v in classifier.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in classifier.std),  # type: ignore[arg-type]
        handle=classifier,
    )


def _category_ids(classifier: Any, count: int) -> list[int]:
    # A classifier trained from COCO may know its category ids; otherwise the class index stands in.
    for attribute in ("category_ids", "class_ids"):
        ids = getattr(classifier, attribute, None)
        if ids is not None and len(ids) == count:
            return [int(value) for value in ids]
    mapping = getattr(classifier, "class_mapping", None)  # category id -> index, as train-student stores it
    if isinstance(mapping, dict) and len(mapping) == count:
        by_index = {int(index): int(category) for category, index in mapping.items()}
        return [by_index[index] for index in range(count)]
    return list(range(count))


def classifier_metadata(source: SourceModel, dynamic: bool) -> ModelMetadata:
    handle = source.handle
    return ModelMetadata(
        task="classify",
        names=source.names,
        category_ids=source.category_ids,
        imgsz=list(source.input_hw or (source.imgsz, source.imgsz)),
        preprocessing={
            "resize": "resize",
            "interpolation": str(getattr(handle, "interpolation", None) or _meta(handle, "interpolation", "bilinear")),
            "scale": 1 / 255,
            "channel_order": "RGB",
            "layout": "NCHW",
            "mean": list(source.mean or (0.0, 0.0, 0.0)),
            "std": list(source.std or (1.0, 1.0, 1.0)),
        },
        dynamic_batch=dynamic,
        multi_label=source.multi_label,
        parameters=int(sum(p.numel() for p in handle.model.parameters())),
        source=str(source.path),
        extra={
            "temperature": float(getattr(handle, "temperature", 1.0)),
            "threshold": float(getattr(handle, "threshold", 0.5)),
            # written for every classifier, so a file without it is an export older than the flag
            "evidential": is_evidential_source(source),
            # tuned per-class thresholds only when the checkpoint has them: absent means the scalar applies
            **({"thresholds": tuned} if (tuned := _tuned_thresholds(handle)) is not None else {}),
        },
    )


def is_evidential_source(source: SourceModel) -> bool:
    """Trained with the evidential loss: its ``research:`` model name says ``evidential=1``."""
    name = getattr(getattr(getattr(source.handle, "meta", None), "spec", None), "name", None)
    if not isinstance(name, str) or not name.startswith("research:"):
        return False
    from distillkit.classify.research.uncertainty import name_is_evidential

    return name_is_evidential(name)


def _tuned_thresholds(handle: object) -> list[float] | None:
    values = getattr(getattr(handle, "meta", None), "thresholds", None)
    return None if values is None else [float(v) for v in values]


def _meta(handle: object, key: str, default: str) -> str:
    meta = getattr(handle, "meta", None)
    return str(getattr(meta, key, default)) if meta is not None else default


def export_classifier_onnx(
    source: SourceModel, target: Path, dynamic: bool = False, opset: int = DEFAULT_OPSET, simplify: bool = True
) -> ModelMetadata:
    """torch.onnx export (TorchScript exporter: no onnxscript needed), onnxslim, verification, metadata."""
    import onnx
    import torch

    module = source.handle.model.eval()
    outputs = [LOGITS]
    if is_evidential_source(source):
        from distillkit.classify.research.uncertainty import EvidentialOutputs

        module, outputs = EvidentialOutputs(module).eval(), [LOGITS, ALPHA]
    height, width = source.input_hw or (source.imgsz, source.imgsz)
    dummy = torch.zeros(1, 3, height, width)
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}} if dynamic else None
    try:
        with torch.inference_mode():
            torch.onnx.export(
                module,
                (dummy,),
                buffer,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # exporter errors are long multi-line traces; keep one line
        raise DataError(f"ONNX export of classifier {source.path} failed ({str(exc).splitlines()[0]})") from exc
    model = onnx.load_from_string(buffer.getvalue())
    if simplify:
        import onnxslim

        model = onnxslim.slim(model)
    metadata = classifier_metadata(source, dynamic)
    if not isinstance(model, onnx.ModelProto):  # pragma: no cover - onnxslim returns a ModelProto
        raise UsageError("onnxslim returned no model")
    finalize_onnx(model, target, metadata, {"task": "classify", "names": str(dict(enumerate(source.names)))})
    return metadata
