"""The task registry: ``model_task`` reads what a file records, and the families register what they bring."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from distillkit.errors import UsageError
from distillkit.model_metadata import METADATA_KEY, METADATA_YAML, ModelMetadata, write_sidecar
from distillkit.tasks import FAMILY_MODULES, find, lookup, model_task, registered


def _metadata(task: str) -> ModelMetadata:
    return ModelMetadata(task=task, names=["a", "b"], category_ids=[1, 2], imgsz=[32, 32])


def _onnx(path: Path, metadata: ModelMetadata | None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["out"])],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    model = helper.make_model(graph)
    if metadata is not None:
        model.metadata_props.add(key=METADATA_KEY, value=metadata.to_json())
    onnx.save(model, str(path))
    return path


def test_model_task_reads_the_task_each_format_records(tmp_path: Path) -> None:
    assert model_task(_onnx(tmp_path / "cls.onnx", _metadata("classify"))) == "classify"
    assert model_task(_onnx(tmp_path / "det.onnx", _metadata("segment"))) == "segment"
    assert model_task(_onnx(tmp_path / "plain.onnx", None)) is None  # no distillkit record
    folder = tmp_path / "model_openvino_model"
    folder.mkdir()
    (folder / METADATA_YAML).write_text(f"{METADATA_KEY}: '{_metadata('classify').to_json()}'\n")
    assert model_task(folder) == "classify" and model_task(folder / "model.xml") == "classify"
    engine = tmp_path / "engine" / "model.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"not an engine")
    write_sidecar(engine.parent, _metadata("detect"))
    assert model_task(engine) == "detect"
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    assert model_task(tmp_path / "broken.onnx") is None
    assert model_task(tmp_path / "missing.pt") is None


def test_model_task_of_checkpoints_reads_data_only(tmp_path: Path) -> None:
    torch.save({"distillkit": {"kind": "classifier"}, "model": {}}, tmp_path / "cls.pt")
    torch.save({"format": 1, "epoch": 3}, tmp_path / "other.pt")
    assert model_task(tmp_path / "cls.pt") == "classify"
    assert model_task(tmp_path / "other.pt") is None


def test_families_register_what_the_services_dispatch_to() -> None:
    for name in FAMILY_MODULES:
        importlib.import_module(name)  # each registration module imports without error
    assert set(registered("export.source")) >= {"classify", "detect", "segment"}
    assert set(registered("labelling.teacher")) == {"teacher-dir", "ultralytics", "zero-shot"}
    for role in ("export.onnx", "export.tflite", "export.accuracy", "export.preprocess"):
        assert callable(lookup(role, "classify"))
        assert find(role, "detect") is None  # the service's own (ultralytics) implementation applies
    with pytest.raises(UsageError, match=r"no export\.source is registered for 'pose'"):
        lookup("export.source", "pose")
