"""`optimize -f tflite` for classifiers: files, metadata, parity with PyTorch, the guard, `infer`/`evaluate` on .tflite.

One classifier trained for seconds and one `optimize` run (all three precisions from one litert-torch
conversion) are shared by the module: the conversion is the slow step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distillkit.export.tflite_export import (
    EXPORT_MODULES,
    ULTRALYTICS_ENTRY,
    check_tflite_task,
    flatbuffer_bytes,
    missing_modules,
    open_interpreter,
    read_tflite_metadata,
    read_zip_entry,
    verify_tflite_file,
)
from tests.test_classify_train import CLASSES, FAST, make_tree
from tests.test_cli import run

if missing_modules(EXPORT_MODULES):
    pytest.skip('the tflite extra is not installed (pip install "distillkit[tflite]")', allow_module_level=True)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

IMGSZ = 32  # FAST trains at 32 px
PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(best.pt, train tree, test tree): a real train-classifier checkpoint, two short epochs (accuracy ~0.6)."""
    from distillkit.classify.train import train_classifier

    root = tmp_path_factory.mktemp("tflite_classify")
    train = make_tree(root / "train", 10, seed=0)
    test = make_tree(root / "test", 4, seed=1)
    train_classifier(train, root / "exp", overrides=[*FAST, "training_dynamics.epochs=2"], val_fraction=0.25)
    return root / "exp" / "best.pt", train, test


@pytest.fixture(scope="module")
def optimized(classifier: tuple[Path, Path, Path]) -> tuple[int, dict[str, Any], Path, str]:
    """One `optimize -f tflite -q none -q fp16 -q int8` run with the accuracy guard, as a user runs it."""
    checkpoint, train, test = classifier
    folder = checkpoint.parent / "optimized"
    code, stdout, stderr = run(
        "optimize", "-m", str(checkpoint), "-f", "tflite", "-q", "none", "-q", "fp16", "-q", "int8",
        "--calib-dir", str(train), "--val-data", str(test), "--max-drop", "100", "--threads", "1",
        "--latency-rounds", "1", "--output", str(folder), "--json",
    )  # fmt: skip
    return code, json.loads(stdout) if code == 0 else {}, folder, stderr


def _row(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(row for row in report["artefacts"] if row["name"] == name)


def _test_images(test: Path) -> list[Path]:
    return sorted(test.rglob("*.png"))


def _top1(model: Path, images: list[Path]) -> np.ndarray:
    """Top-1 class index per image through the classifier runtime `infer` / `evaluate` use."""
    import torch

    from distillkit.classify.predict import predict_paths
    from distillkit.classify.runtime import open_classifier

    with torch.inference_mode():
        predictions = predict_paths(open_classifier(model), images, batch_size=8)
    return np.asarray(predictions.probabilities).argmax(axis=1)


def test_optimize_writes_measured_and_guarded_tflite_rows(optimized: tuple[int, dict[str, Any], Path, str]) -> None:
    code, report, folder, stderr = optimized
    assert code == 0, stderr
    names = [row["name"] for row in report["artefacts"]]
    assert names == ["pytorch", "onnx fp32", "tflite fp32", "tflite fp16", "tflite int8"], names
    assert report["task"] == "classify" and (folder / "report.json").is_file()
    assert json.loads((folder / "report.json").read_text())["artefacts"] == report["artefacts"]
    for precision in PRECISIONS:
        row = _row(report, f"tflite {precision}")
        assert row["format"] == "tflite" and row["precision"] == precision and row["status"] == "ok", row
        assert Path(row["file"]) == folder / f"model_{precision}.tflite"
        assert row["latency"]["median_ms"] > 0 and "latency_ratio" in row and "size_ratio" in row
        assert row["metric"] == "accuracy" and "accuracy_drop_points" in row
        assert set(row["parity_max_abs_diff"]) == {"output0"}  # the logits, compared with the .pt's
    # logits on real images: fp32 as converted (measured 1e-6), fp16 weights computed in float32 (1e-4)
    assert _row(report, "tflite fp32")["parity_max_abs_diff"]["output0"] < 1e-4
    assert _row(report, "tflite fp32")["accuracy_drop_points"] == 0
    assert _row(report, "tflite fp16")["parity_max_abs_diff"]["output0"] < 1e-2
    assert _row(report, "tflite int8")["size_mb"] < 0.4 * _row(report, "tflite fp32")["size_mb"]
    assert _row(report, "tflite fp16")["size_mb"] < 0.6 * _row(report, "tflite fp32")["size_mb"]
    tflite_rows = [row for row in report["matrix"] if row["format"] == "tflite"]
    assert [row["precision"] for row in tflite_rows] == list(PRECISIONS)
    assert all(row["passed"] is True and row["median_ms"] > 0 for row in tflite_rows)


def test_files_have_one_nchw_image_input_logits_and_the_metadata(
    optimized: tuple[int, dict[str, Any], Path, str],
) -> None:
    from distillkit.model_metadata import read_onnx_metadata
    from distillkit.tasks import model_task

    _, _, folder, _ = optimized
    onnx_metadata = read_onnx_metadata(folder / "model.onnx")
    assert onnx_metadata is not None
    for precision in PRECISIONS:
        path = folder / f"model_{precision}.tflite"
        interpreter = open_interpreter(path)
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        assert len(inputs) == 1 and list(inputs[0]["shape"]) == [1, 3, IMGSZ, IMGSZ]  # NCHW, as the torch model
        assert inputs[0]["dtype"] == np.float32 and outputs[0]["dtype"] == np.float32  # float I/O, int8 inside
        assert len(outputs) == 1 and list(outputs[0]["shape"]) == [1, len(CLASSES)]
        metadata = read_tflite_metadata(path)
        assert metadata is not None and model_task(path) == "classify"
        assert (metadata.task, metadata.names, metadata.precision) == ("classify", list(CLASSES), precision)
        assert metadata.imgsz == [IMGSZ, IMGSZ] and metadata.outputs == ["logits"]
        assert metadata.preprocessing == onnx_metadata.preprocessing  # fed exactly like model.onnx
        assert metadata.extra["runtime"] == "litert" and "temperature" in metadata.extra
        assert ("quantization" in metadata.extra) == (precision == "int8")
        assert read_zip_entry(path, ULTRALYTICS_ENTRY) is None  # no ultralytics runtime reads a classifier
        verify_tflite_file(path)


def test_verify_refuses_a_classifier_file_without_its_metadata(
    optimized: tuple[int, dict[str, Any], Path, str], tmp_path: Path
) -> None:
    from distillkit.errors import DataError

    _, _, folder, _ = optimized
    bare = tmp_path / "model_fp32.tflite"
    bare.write_bytes(flatbuffer_bytes(folder / "model_fp32.tflite"))
    with pytest.raises(DataError, match="distillkit metadata entry missing"):
        verify_tflite_file(bare)


def test_fp32_logits_match_pytorch_on_real_images(
    classifier: tuple[Path, Path, Path], optimized: tuple[int, dict[str, Any], Path, str]
) -> None:
    import torch

    from distillkit.classify.runtime import open_classifier
    from distillkit.export.calibration import preprocess_many
    from distillkit.model_metadata import read_tflite_metadata

    checkpoint, _, test = classifier
    _, _, folder, _ = optimized
    path = folder / "model_fp32.tflite"
    metadata = read_tflite_metadata(path)
    assert metadata is not None
    batch = torch.from_numpy(np.concatenate(preprocess_many(_test_images(test), metadata)))
    runtime = open_classifier(path)
    assert runtime.kind == "tflite" and runtime.class_names == list(CLASSES) and runtime.input_hw == (IMGSZ, IMGSZ)
    expected = open_classifier(checkpoint).logits(batch)
    actual = runtime.logits(batch)  # 12 images through a batch-1 graph: split by the runtime
    assert actual.shape == expected.shape == (len(batch), len(CLASSES))
    assert float((actual - expected).abs().max()) < 1e-4


def test_evaluate_and_infer_on_tflite_agree_with_the_checkpoint(
    classifier: tuple[Path, Path, Path], optimized: tuple[int, dict[str, Any], Path, str], tmp_path: Path
) -> None:
    checkpoint, _, test = classifier
    _, _, folder, _ = optimized
    images = _test_images(test)
    reference = _top1(checkpoint, images)
    assert (_top1(folder / "model_fp32.tflite", images) == reference).all()
    assert (_top1(folder / "model_fp16.tflite", images) == reference).all()
    # INT8 may flip an image whose two best classes are nearly tied: at most 1 in 6 here
    assert np.mean(_top1(folder / "model_int8.tflite", images) != reference) <= 1 / 6

    code, stdout, stderr = run("evaluate", "--data", str(test), "-m", str(checkpoint), "--json")
    assert code == 0, stderr
    pt_accuracy = json.loads(stdout)["accuracy"]
    code, stdout, stderr = run("evaluate", "--data", str(test), "-m", str(folder / "model_fp32.tflite"), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["accuracy"] == pt_accuracy

    code, stdout, stderr = run("infer", str(images[0]), "-m", str(folder / "model_int8.tflite"), "-o",
                               str(tmp_path / "infer"), "--json")  # fmt: skip
    assert code == 0, stderr
    (record,) = json.loads(stdout)["results"]
    assert record["classes"] and set(record["probabilities"]) == set(CLASSES)


def test_missing_extra_is_one_line_before_any_work(
    classifier: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint, train, _ = classifier
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if the extra were not installed
    out = tmp_path / "out"
    code, _, stderr = run("optimize", "-m", str(checkpoint), "-f", "tflite", "-q", "fp16", "--calib-dir",
                          str(train), "-o", str(out))  # fmt: skip
    assert code == 2 and stderr.count("\n") == 1 and 'pip install "distillkit[tflite]"' in stderr, stderr
    assert "litert_torch" in stderr and not (out / "model.onnx").exists()


def test_a_task_without_a_converter_is_one_usage_error() -> None:
    from distillkit.errors import UsageError

    check_tflite_task("classify")  # registered by the classify family
    with pytest.raises(UsageError, match="no converter for 'pose'"):
        check_tflite_task("pose")
