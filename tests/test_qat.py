"""`optimize --qat-epochs`: the QAT fallback for a static INT8 file that fails the accuracy guard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from distillkit.export import check_single_input, read_onnx_metadata
from distillkit.inference import load_model, predict_images
from tests.optimize_helpers import ground_truth_from, make_checkpoint, make_images
from tests.test_cli import run

IMGSZ = 128


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    """A random-weight detector (scores ~0.27), images, and its own predictions as ground truth (see test_optimize)."""
    root = tmp_path_factory.mktemp("qat")
    checkpoint = make_checkpoint(root / "model" / "best.pt", imgsz=IMGSZ, score_logit=-1.0)
    images = make_images(root / "images", count=6)
    predictions = list(predict_images(load_model(checkpoint), images, conf=0.1, max_det=10))
    assert predictions
    truth = ground_truth_from(predictions, images, (5, 9), root / "images" / "truth.json")
    return checkpoint, images, truth


@pytest.fixture(scope="module")
def qat_run(detector: tuple[Path, list[Path], Path]) -> tuple[int, dict[str, Any], str, Path]:
    """The `full` recipe (it quantizes the head and zeroes the scores) fails; --qat-epochs 1 replaces it."""
    checkpoint, images, truth = detector
    folder = checkpoint.parent / "qat_out"
    code, stdout, stderr = run(
        "optimize", "--model", str(checkpoint), "--calib-dir", str(images[0].parent), "--val-data", str(truth),
        "--int8-recipe", "full", "--qat-epochs", "1", "--qat-data", str(truth), "--threads", "1",
        "--latency-rounds", "1", "--output", str(folder), "--json",
    )  # fmt: skip
    return code, json.loads(stdout), stderr, folder


def _row(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(row for row in report["artefacts"] if row["name"] == name)


def test_qat_row_replaces_the_failed_int8_row_and_the_command_passes(
    qat_run: tuple[int, dict[str, Any], str, Path],
) -> None:
    code, report, stderr, folder = qat_run
    assert code == 0, stderr
    ptq, qat = _row(report, "onnx int8"), _row(report, "onnx int8 (qat)")
    assert ptq["status"] == "failed (replaced by qat)" and ptq["accuracy_drop_points"] > 2.0
    assert qat["status"] == "ok" and qat["accuracy_drop_points"] <= 2.0, qat
    assert qat["file"] == str(folder / "model_int8_qat.onnx") and qat["precision"] == "int8"
    assert qat["latency"]["median_ms"] > 0 and "latency_ratio" in qat and "size_ratio" in qat
    assert qat["parity_max_abs_diff"]["scores"] < 0.1  # the head's decoding stayed float: scores survive
    assert report["passed"] is True and report["failed"] == []
    names = [row["name"] for row in report["artefacts"]]
    passed = {name: row["passed"] for name, row in zip(names, report["matrix"], strict=True)}
    assert passed["onnx int8"] is False and passed["onnx int8 (qat)"] is True  # the matrix keeps the PTQ failure
    assert report["qat"]["epochs"] == 1 and report["qat"]["train_seconds"] > 0 and report["qat"]["lr"] > 0
    assert report["qat"]["replaced"] == ["onnx int8"] and len(report["qat"]["epoch_losses"]) == 1
    assert any("model_int8_qat.onnx (QAT) passes" in notice for notice in report["notices"])
    assert json.loads((folder / "report.json").read_text())["qat"]["status"] == "ok"


def test_qat_file_is_single_input_qdq_with_int8_weights_and_metadata(
    qat_run: tuple[int, dict[str, Any], str, Path],
) -> None:
    _, _, _, folder = qat_run
    model = onnx.load(str(folder / "model_int8_qat.onnx"))
    check_single_input(model, "model_int8_qat.onnx")
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    types = {init.data_type for init in model.graph.initializer}
    assert TensorProto.INT8 in types and TensorProto.INT32 in types  # weights int8, biases int32
    int8_weights = [i for i in model.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) == 4]
    assert len(int8_weights) >= 50  # every convolution but the head's DFL
    float_4d = [i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) == 4]
    assert len(float_4d) <= 1, float_4d  # at most DFL's fixed integral kernel
    assert (folder / "model_int8_qat.onnx").stat().st_size < 0.4 * (folder / "model.onnx").stat().st_size
    metadata = read_onnx_metadata(folder / "model_int8_qat.onnx")
    assert metadata is not None and metadata.precision == "int8"
    assert (metadata.task, metadata.names, metadata.category_ids) == ("detect", ["square", "disc"], [5, 9])
    assert metadata.imgsz == [IMGSZ, IMGSZ] and metadata.extra["quantization"]["name"] == "qat"
    assert metadata.extra["quantization"]["epochs"] == 1


def test_qat_file_runs_in_infer_and_evaluate(
    qat_run: tuple[int, dict[str, Any], str, Path], detector: tuple[Path, list[Path], Path]
) -> None:
    _, _, _, folder = qat_run
    _, images, truth = detector
    predictions = list(predict_images(load_model(folder / "model_int8_qat.onnx"), images, conf=0.1, max_det=10))
    assert predictions and {p["category_id"] for p in predictions} <= {5, 9}
    code, stdout, stderr = run(
        "evaluate", "--model", str(folder / "model_int8_qat.onnx"), "--data", str(truth), "--json"
    )
    assert code == 0, stderr
    assert "bbox" in stdout


def test_qat_onnx_matches_the_fake_quant_torch_model(detector: tuple[Path, list[Path], Path], tmp_path: Path) -> None:
    """The exported file computes what the trained fake-quant model computes (tolerances: int8 rounding)."""
    import onnxruntime as ort
    import torch

    from distillkit.export.benchmark import _tensors
    from distillkit.export.calibration import preprocess_many
    from distillkit.export.onnx_export import export_yolo_onnx, load_source_model
    from distillkit.export.qat import QatSettings, qat_int8

    checkpoint, images, truth = detector
    source = load_source_model(checkpoint)
    metadata = export_yolo_onnx(source, tmp_path / "model.onnx")
    inputs = preprocess_many(images, metadata)
    result = qat_int8(source, truth, tmp_path / "qat.onnx", metadata, inputs, QatSettings(epochs=1, batch=4))
    assert result.model is not None and result.images == len(images)

    def session(level: Any) -> Any:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        return ort.InferenceSession(str(tmp_path / "qat.onnx"), options, providers=["CPUExecutionProvider"])

    reference = session(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)  # Q/DQ as written: the fake-quant arithmetic
    fused = session(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)  # the int8 kernels `infer` runs
    for batch in inputs:
        with torch.no_grad():
            expected = _tensors(result.model(torch.from_numpy(batch)))[0]
        exact, kernels = reference.run(None, {"images": batch})[0], fused.run(None, {"images": batch})[0]
        assert exact.shape == expected.shape == (1, 6, 336)
        assert np.abs(exact[:, 4:] - expected[:, 4:]).max() < 0.03  # scores; a rounding flip moves a few
        assert np.median(np.abs(exact[:, :4] - expected[:, :4])) < 0.5  # box pixels
        # int8 kernels (u8s8 saturation on CPUs without VNNI moves some values, as for the PTQ file)
        assert np.mean(np.abs(kernels[:, 4:] - expected[:, 4:])) < 0.02


def test_qat_options_are_checked_before_any_work(detector: tuple[Path, list[Path], Path], tmp_path: Path) -> None:
    checkpoint, images, truth = detector
    base = ["optimize", "--model", str(checkpoint), "--calib-dir", str(images[0].parent), "--output", str(tmp_path)]
    code, _, stderr = run(*base, "--val-data", str(truth), "--qat-epochs", "2")
    assert code == 2 and "--qat-epochs needs training data" in stderr and "--qat-data" in stderr
    code, _, stderr = run(*base, "--qat-epochs", "2", "--qat-data", str(truth))
    assert code == 2 and "--qat-epochs needs --val-data" in stderr
    code, _, stderr = run(
        *base, "--quantize", "fp16", "--val-data", str(truth), "--qat-epochs", "1", "--qat-data", str(truth)
    )
    assert code == 2 and "--qat-epochs needs --quantize int8 and --format onnx" in stderr
    assert "Traceback" not in stderr and not list(tmp_path.iterdir())  # nothing was written


def test_failed_int8_without_qat_suggests_the_options(detector: tuple[Path, list[Path], Path], tmp_path: Path) -> None:
    checkpoint, images, truth = detector
    code, stdout, stderr = run(
        "optimize", "--model", str(checkpoint), "--calib-dir", str(images[0].parent), "--val-data", str(truth),
        "--int8-recipe", "full", "--threads", "1", "--latency-rounds", "1", "--output", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 1
    hint = "--qat-epochs 3 --qat-data TRAIN.json"
    assert hint in stderr  # the CLI warning about the failed row
    row = _row(json.loads(stdout), "onnx int8")
    assert row["status"] == "failed" and any(hint in note for note in row["notes"])
    assert json.loads(stdout)["qat"] is None and not (tmp_path / "model_int8_qat.onnx").exists()
