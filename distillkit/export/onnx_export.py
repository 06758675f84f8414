"""ONNX export of YOLO students (ultralytics' exporter), verified; other families register their own exporter.

Every file is checked after writing, not assumed: exactly one input named ``images``, named outputs,
``onnx.checker`` clean; then the distillkit metadata is written into it (see ``distillkit.model_metadata``).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillkit.errors import DataError, UsageError
from distillkit.io import atomic_write_bytes
from distillkit.model_metadata import (
    INPUT_NAME,
    YOLO_PREPROCESSING,
    ModelMetadata,
    check_single_input,
    onnx_metadata_props,
    write_onnx_metadata,
)

DEFAULT_OPSET = 18  # measured here: ultralytics' default for this onnx version; fp32 ONNX matches torch to ~1e-4


@dataclass
class SessionPort:
    """An input or output as onnxruntime's session lists it: what the OpenVINO and LiteRT adapters give too."""

    name: str
    shape: list[Any]  # None for a dynamic dimension


@dataclass
class SourceModel:
    """A model to optimize: a YOLO student checkpoint or a distillkit classifier."""

    path: Path
    task: str
    names: list[str]
    category_ids: list[int]
    imgsz: int
    multi_label: bool = False
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    input_hw: tuple[int, int] | None = None  # classifiers may be rectangular
    handle: Any = None  # ultralytics.YOLO, or the classifier object from distillkit.classify


def load_source_model(path: str | Path, imgsz: int | None = None) -> SourceModel:
    """Open a ``.pt`` for optimization: a train-student / ultralytics checkpoint or a classifier.

    The family of the checkpoint's task opens it (``export.source`` in ``distillkit.tasks``): a checkpoint
    recording no task is an ultralytics one (the YOLO students' loader, registered for ``detect``).
    """
    from distillkit.tasks import lookup, model_task

    model_path = Path(path)
    if not model_path.is_file():
        raise UsageError(f"model {model_path} not found", "pass a .pt written by train-student or train-classifier")
    if model_path.suffix != ".pt":
        raise UsageError(f"{model_path.name}: optimize starts from a PyTorch checkpoint", "pass the .pt file")
    return lookup("export.source", model_task(model_path) or "detect")(model_path, imgsz)


def export_yolo_onnx(
    source: SourceModel, target: Path, dynamic: bool = False, opset: int = DEFAULT_OPSET, simplify: bool = True
) -> ModelMetadata:
    """Export with ultralytics (onnxslim simplification), verify, add metadata, write ``target``."""
    import onnx

    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics import YOLO

    # The exporter writes beside its input: work on a copy so nothing appears next to the user's model.
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent) as work:
        copy = Path(work) / "model.pt"
        shutil.copyfile(source.path, copy)
        try:
            written = YOLO(str(copy)).export(
                format="onnx",
                imgsz=source.imgsz,
                dynamic=dynamic,
                simplify=simplify,
                opset=opset,
                batch=1,
                half=False,
                device="cpu",
                verbose=False,
            )
        except Exception as exc:  # the exporter raises bare exceptions; say which model and why
            raise DataError(f"ONNX export of {source.path} failed ({exc})") from exc
        model = onnx.load(str(written))
    ultralytics_keys = onnx_metadata_props(model)
    metadata = ModelMetadata(
        task=source.task,
        names=source.names,
        category_ids=source.category_ids,
        imgsz=[source.imgsz, source.imgsz],
        preprocessing=dict(YOLO_PREPROCESSING),
        dynamic_batch=dynamic,
        outputs=[output.name for output in model.graph.output],
        parameters=int(sum(p.numel() for p in source.handle.model.parameters())),
        source=str(source.path),
    )
    # Names as ultralytics reads them, in case the checkpoint lacked them (its exporter writes them).
    ultralytics_keys["names"] = str(dict(enumerate(source.names)))
    finalize_onnx(model, target, metadata, ultralytics_keys)
    return metadata


def finalize_onnx(
    model: Any, target: Path, metadata: ModelMetadata, ultralytics_keys: dict[str, str] | None = None
) -> None:
    """Verify a graph (single ``images`` input, named outputs, checker), add metadata, write atomically."""
    import onnx

    check_single_input(model, target)
    unnamed = [index for index, output in enumerate(model.graph.output) if not output.name]
    if unnamed:
        raise DataError(f"{target}: outputs {unnamed} have no name", "export with output names")
    metadata.outputs = [output.name for output in model.graph.output]
    write_onnx_metadata(model, metadata, ultralytics_keys)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise DataError(f"{target} fails onnx.checker ({exc})") from exc
    atomic_write_bytes(target, model.SerializeToString())


def verify_onnx_file(path: Path) -> None:
    """Re-read a written file and check it again: the guarantee holds for the file, not the graph in memory."""
    import onnx

    model = onnx.load(str(path))
    check_single_input(model, path)
    onnx.checker.check_model(model, full_check=True)
    if model.graph.input[0].name != INPUT_NAME:  # pragma: no cover - check_single_input covers it
        raise DataError(f"{path}: first input is not {INPUT_NAME!r}")
