"""`distillkit optimize`: verified ONNX, metadata, INT8, the accuracy guard, TensorRT absence, classifiers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from distillkit.errors import DataError
from distillkit.export import check_single_input, read_onnx_metadata
from distillkit.export.tensorrt_export import tensorrt_available
from distillkit.inference import load_model, predict_images
from tests.optimize_helpers import ground_truth_from, make_checkpoint, make_images
from tests.test_cli import run

IMGSZ = 128


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    """A random-weight detector whose scores sit at ~0.27, images, and its own predictions as ground truth.

    Its fp32 predictions are the ground truth, so the PyTorch model scores well; a quantization that
    zeroes the scores scores nothing.
    """
    root = tmp_path_factory.mktemp("optimize")
    checkpoint = make_checkpoint(root / "model" / "best.pt", imgsz=IMGSZ, score_logit=-1.0)
    images = make_images(root / "images", count=6)
    predictions = list(predict_images(load_model(checkpoint), images, conf=0.1, max_det=10))
    assert predictions
    truth = ground_truth_from(predictions, images, (5, 9), root / "images" / "truth.json")
    return checkpoint, images, truth


@pytest.fixture(scope="module")
def optimized(detector: tuple[Path, list[Path], Path]) -> tuple[int, dict[str, Any], Path]:
    """One CLI run: the default INT8 recipe and the deliberately broken one (quantizes the head too)."""
    checkpoint, images, truth = detector
    code, stdout, _ = run(
        "optimize",
        "--model",
        str(checkpoint),
        "--calib-dir",
        str(images[0].parent),
        "--val-data",
        str(truth),
        "--int8-recipe",
        "fast",
        "--int8-recipe",
        "full",
        "--threads",
        "1",
        "--json",
    )
    return code, json.loads(stdout), checkpoint.parent / "optimized"


def _row(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(row for row in report["artefacts"] if row["name"] == name)


def test_accuracy_guard_fails_the_broken_quantization_and_exits_1(optimized: tuple[int, dict[str, Any], Path]) -> None:
    code, report, folder = optimized
    assert code == 1  # one artefact failed and --force was not given
    broken = _row(report, "onnx int8 (full)")
    assert broken["status"] == "failed" and broken["accuracy"] < 0.05
    assert broken["accuracy_drop_points"] > 2.0
    assert report["failed"] == ["onnx int8 (full)"] and report["passed"] is False
    reference = _row(report, "pytorch")
    assert reference["accuracy"] > 0.2  # its own predictions are the ground truth (ties keep it below 1)
    for name in ("onnx fp32", "onnx int8"):
        row = _row(report, name)
        assert row["status"] == "ok" and row["accuracy_drop_points"] <= 2.0, row
    assert json.loads((folder / "report.json").read_text())["failed"] == ["onnx int8 (full)"]


def test_written_files_verified_named_and_reported(optimized: tuple[int, dict[str, Any], Path]) -> None:
    _, report, folder = optimized
    for name in ("model.onnx", "model_int8.onnx", "model_int8_full.onnx", "class_mapping.yaml", "report.json"):
        assert (folder / name).exists(), name
    model = onnx.load(str(folder / "model_int8.onnx"))
    check_single_input(model, "model_int8.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["output0"]
    for row in report["artefacts"]:
        assert row["latency"]["median_ms"] > 0 and row["latency"]["p90_ms"] >= row["latency"]["median_ms"]
    assert report["latency_setup"]["threads"] == 1 and report["latency_setup"]["batch"] == 1
    fp32 = _row(report, "onnx fp32")
    assert fp32["parity_max_abs_diff"]["output0"] < 1e-2 and "latency_ratio" in fp32 and "size_ratio" in fp32


def test_metadata_round_trip(optimized: tuple[int, dict[str, Any], Path]) -> None:
    _, _, folder = optimized
    for name in ("model.onnx", "model_int8.onnx"):
        metadata = read_onnx_metadata(folder / name)
        assert metadata is not None
        assert (metadata.task, metadata.names, metadata.category_ids) == ("detect", ["square", "disc"], [5, 9])
        assert metadata.imgsz == [IMGSZ, IMGSZ] and metadata.class_mapping == {5: 0, 9: 1}
        assert metadata.preprocessing["resize"] == "letterbox" and metadata.preprocessing["pad_value"] == 114
        props = {p.key: p.value for p in onnx.load(str(folder / name)).metadata_props}
        assert props["names"] == "{0: 'square', 1: 'disc'}"  # ultralytics' runtime reads these
    assert read_onnx_metadata(folder / "model_int8.onnx").precision == "int8"  # type: ignore[union-attr]
    sidecar = yaml.safe_load((folder / "class_mapping.yaml").read_text())
    assert sidecar["names"] == ["square", "disc"] and sidecar["class_mapping"] == {5: 0, 9: 1}
    assert sidecar["task"] == "detect" and sidecar["imgsz"] == [IMGSZ, IMGSZ]


def test_int8_is_smaller_and_agrees_with_fp32(optimized: tuple[int, dict[str, Any], Path]) -> None:
    _, report, folder = optimized
    fp32, int8 = _row(report, "onnx fp32"), _row(report, "onnx int8")
    assert int8["size_mb"] < 0.4 * fp32["size_mb"]
    assert (folder / "model_int8.onnx").stat().st_size < 0.4 * (folder / "model.onnx").stat().st_size
    assert int8["parity_max_abs_diff"]["scores"] < 0.05  # scores survive; the broken recipe loses them
    assert _row(report, "onnx int8 (full)")["parity_max_abs_diff"]["scores"] > 0.2


@pytest.mark.parametrize("reduced", [True, False])
def test_int8_weights_are_7_bit_where_the_cpu_lacks_vnni(
    optimized: tuple[int, dict[str, Any], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reduced: bool
) -> None:
    """On x86 without VNNI/AMX, onnxruntime's u8s8 kernels saturate with 8-bit weights (-6.5 points on BCCD here)."""
    from onnx import numpy_helper

    import distillkit.export.quantize as quantize
    from distillkit.export.calibration import preprocess_many

    _, _, folder = optimized
    metadata = read_onnx_metadata(folder / "model.onnx")
    assert metadata is not None
    monkeypatch.setattr(quantize, "int8_weights_need_reduced_range", lambda: reduced)
    inputs = preprocess_many(make_images(tmp_path / "images", count=2), metadata)
    target = tmp_path / "int8.onnx"
    written = quantize.quantize_static_int8(folder / "model.onnx", target, metadata, inputs, "fast")
    assert written.extra["quantization"]["reduce_range"] is reduced
    weights = [
        np.abs(numpy_helper.to_array(init).astype(np.int32)).max()
        for init in onnx.load(str(target)).graph.initializer
        if init.data_type == TensorProto.INT8 and len(init.dims) == 4
    ]
    assert weights
    assert bool(max(weights) <= 64) is reduced  # 7-bit weights span [-64, 63]; 8-bit ones reach 127


def test_cpu_features_read_vnni_from_cpuinfo(tmp_path: Path) -> None:
    from distillkit.cpu_features import INT8_DOT_FLAGS, read_cpuinfo

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_vnni\n\n")
    name, flags = read_cpuinfo(cpuinfo)
    assert name == "Some CPU" and flags is not None and any(flag in flags for flag in INT8_DOT_FLAGS)
    assert read_cpuinfo(tmp_path / "missing") == (None, None)


def test_single_input_check_rejects_two_inputs(tmp_path: Path) -> None:
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])
    prompt = helper.make_tensor_value_info("prompt", TensorProto.FLOAT, [1, 3, 8, 8])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph(
        [helper.make_node("Add", ["images", "prompt"], ["output0"])], "g", [images, prompt], [out]
    )
    with pytest.raises(DataError, match="expected exactly one named 'images'"):
        check_single_input(helper.make_model(graph), "two_inputs.onnx")
    renamed = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    single = helper.make_graph([helper.make_node("Relu", ["input"], ["output0"])], "g", [renamed], [out])
    with pytest.raises(DataError, match=r"\['input'\]"):
        check_single_input(helper.make_model(single), "renamed.onnx")


@pytest.mark.skipif(tensorrt_available()[0], reason="TensorRT and a GPU are present here")
def test_tensorrt_absent_gives_a_clear_message_and_exit_2(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "best.pt", imgsz=64)
    code, _, stderr = run("optimize", "--model", str(checkpoint), "--format", "engine", "--quantize", "fp16")
    assert code == 2
    assert "TensorRT export needs the tensorrt package and a CUDA GPU" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "optimized" / "model.onnx").exists()


def test_bad_options_are_usage_errors(detector: tuple[Path, list[Path], Path]) -> None:
    checkpoint, _, _ = detector
    code, _, stderr = run("optimize", "--model", str(checkpoint), "--quantize", "int4")
    assert code == 2 and "unknown --quantize 'int4'" in stderr
    code, _, stderr = run("optimize", "--model", str(checkpoint))  # int8 without calibration images
    assert code == 2 and "--calib-data" in stderr


@pytest.mark.slow  # torch-pruning traces the whole graph: ~30 s on a busy 2-core machine
def test_pruned_model_runs_exports_and_is_reported(detector: tuple[Path, list[Path], Path], tmp_path: Path) -> None:
    from distillkit.export import OptimizeOptions, optimize_model

    checkpoint, images, _ = detector
    options = OptimizeOptions(
        quantize=("none",), prune=0.3, calib_dir=images[0].parent, output=tmp_path, latency_rounds=1, parity_images=2
    )
    result = optimize_model(checkpoint, options)
    names = [a.name for a in result.artefacts]
    assert names == ["pytorch", "pruned 30%", "onnx fp32"]
    pruned = load_model(tmp_path / "model_pruned.pt")
    assert pruned.parameters < 0.8 * load_model(checkpoint).parameters
    assert read_onnx_metadata(tmp_path / "model.onnx").parameters == pruned.parameters  # type: ignore[union-attr]
    assert any("fine-tuning" in notice for notice in result.notices)


def test_classifier_export_has_logits_metadata_and_matches_torch(tmp_path: Path) -> None:
    import torch

    from distillkit.classify import ClassifierMeta, ClassifierSpec, build_classifier, save_classifier
    from distillkit.classify.export import export_classifier_onnx
    from distillkit.classify.runtime import open_classifier
    from distillkit.export.onnx_export import load_source_model
    from distillkit.export.quantize import quantize_static_int8

    model = build_classifier(ClassifierSpec("test_resnet", 3)).model.eval()
    meta = ClassifierMeta(model.spec, ["ok", "scratch", "dent"], False, 48, [0.5] * 3, [0.25] * 3)
    checkpoint = save_classifier(tmp_path / "best.pt", model, meta)
    source = load_source_model(checkpoint)
    assert source.task == "classify" and source.input_hw == (48, 48)
    metadata = export_classifier_onnx(source, tmp_path / "model.onnx", dynamic=True)
    exported = onnx.load(str(tmp_path / "model.onnx"))
    assert [i.name for i in exported.graph.input] == ["images"] and [o.name for o in exported.graph.output] == [
        "logits"
    ]
    stored = read_onnx_metadata(tmp_path / "model.onnx")
    assert stored is not None and stored.task == "classify" and stored.names == ["ok", "scratch", "dent"]
    assert stored.preprocessing["mean"] == [0.5] * 3 and stored.dynamic_batch
    runtime = open_classifier(tmp_path / "model.onnx")  # the classifier runtime `infer`/`evaluate` use
    batch = torch.randn(2, 3, 48, 48)
    assert torch.allclose(runtime.logits(batch), model(batch), atol=1e-4)
    images = make_images(tmp_path / "images", count=4, size=(48, 48))
    from distillkit.export.calibration import preprocess_many

    quantize_static_int8(
        tmp_path / "model.onnx", tmp_path / "model_int8.onnx", metadata, preprocess_many(images, metadata)
    )
    int8 = open_classifier(tmp_path / "model_int8.onnx")
    assert int8.logits(batch).shape == (2, 3)
    assert np.isfinite(int8.logits(batch).numpy()).all()


def test_fp16_artefacts_pass_the_checker_and_agree(detector: tuple[Path, list[Path], Path], tmp_path: Path) -> None:
    """onnxruntime's fp16 converter leaves its Cast nodes out of order; the written file must still verify."""
    import torch

    from distillkit.classify import ClassifierMeta, ClassifierSpec, build_classifier, save_classifier
    from distillkit.classify.export import export_classifier_onnx
    from distillkit.classify.runtime import open_classifier
    from distillkit.export.onnx_export import load_source_model
    from distillkit.export.quantize import convert_fp16

    checkpoint, images, _ = detector
    out = tmp_path / "fp16"
    code, stdout, stderr = run(
        "optimize", "--model", str(checkpoint), "--quantize", "fp16", "--calib-dir", str(images[0].parent),
        "--output", str(out), "--threads", "1", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    row = _row(json.loads(stdout), "onnx fp16")
    assert row["status"] == "ok" and row["precision"] == "fp16" and max(row["parity_max_abs_diff"].values()) < 1e-2
    onnx.checker.check_model(onnx.load(str(out / "model_fp16.onnx")))
    weights = [t for t in onnx.load(str(out / "model_fp16.onnx")).graph.initializer if t.dims and len(t.dims) == 4]
    assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights)

    model = build_classifier(ClassifierSpec("test_resnet", 3)).model.eval()
    meta = ClassifierMeta(model.spec, ["ok", "scratch", "dent"], False, 48, [0.5] * 3, [0.25] * 3)
    source = load_source_model(save_classifier(tmp_path / "best.pt", model, meta))
    metadata = export_classifier_onnx(source, tmp_path / "model.onnx", dynamic=True)
    convert_fp16(tmp_path / "model.onnx", tmp_path / "model_fp16.onnx", metadata)
    batch = torch.randn(2, 3, 48, 48)
    assert torch.allclose(open_classifier(tmp_path / "model_fp16.onnx").logits(batch), model(batch), atol=5e-2)


@pytest.mark.slow  # pruning + one epoch of ultralytics training
def test_pruned_model_fine_tunes_on_data_whose_images_live_elsewhere(
    detector: tuple[Path, list[Path], Path], tmp_path: Path
) -> None:
    """--prune-finetune-epochs trains the pruned graph itself, finding the images through --images-dir."""
    import shutil

    from distillkit.export import OptimizeOptions, optimize_model

    checkpoint, images, truth = detector
    train = shutil.copy(truth, tmp_path / "train.json")  # away from its images: only images_dir finds them
    options = OptimizeOptions(
        quantize=("none",),
        prune=0.3,
        prune_finetune_epochs=1,
        prune_data=Path(train),
        images_dir=images[0].parent,
        calib_dir=images[0].parent,
        output=tmp_path / "out",
        latency_rounds=1,
        parity_images=2,
    )
    result = optimize_model(checkpoint, options)
    assert any(notice.startswith("fine-tuned 1 epochs") for notice in result.notices)
    pruned = load_model(tmp_path / "out" / "model_pruned.pt")
    assert pruned.parameters < 0.8 * load_model(checkpoint).parameters  # training kept the pruned graph


def test_openvino_int8_uses_7bit_weights_in_every_layer_where_the_cpu_lacks_vnni(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the same vpmaddubsw saturation as onnxruntime's: NNCF's overflow fix on every layer, not the first only
    from types import SimpleNamespace

    import distillkit.cpu_features as cpu
    from distillkit.export import openvino_export

    kinds = SimpleNamespace(ENABLE="enable", FIRST_LAYER="first layer")
    monkeypatch.setattr(cpu, "int8_weights_need_reduced_range", lambda: True)
    assert openvino_export._overflow_fix(kinds) == "enable"
    monkeypatch.setattr(cpu, "int8_weights_need_reduced_range", lambda: False)
    assert openvino_export._overflow_fix(kinds) == "first layer"
