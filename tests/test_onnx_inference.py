"""`infer` and `evaluate` take the .onnx files `optimize` writes exactly as they take the .pt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillkit.errors import UsageError
from distillkit.export.onnx_export import export_yolo_onnx, load_source_model
from distillkit.inference import load_model
from tests.optimize_helpers import ground_truth_from, make_checkpoint, make_images
from tests.test_cli import run


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))


@pytest.fixture(scope="module", params=["detect", "segment"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    root = tmp_path_factory.mktemp(f"onnx_{request.param}")
    checkpoint = make_checkpoint(root / "best.pt", task=request.param, imgsz=96, score_logit=0.0)
    onnx_path = root / "optimized" / "model.onnx"
    onnx_path.parent.mkdir()
    export_yolo_onnx(load_source_model(checkpoint), onnx_path)
    images = make_images(root / "images", count=3, size=(96, 96))
    return checkpoint, onnx_path, images


def _infer(model: Path, images: list[Path], output: Path) -> list[dict]:
    code, stdout, stderr = run("infer", str(images[0].parent), "--model", str(model), "--output", str(output), "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["images"] == len(images)
    return json.loads((output / "predictions.json").read_text())


def test_onnx_and_pt_predictions_agree(exported: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    checkpoint, onnx_path, images = exported
    from_pt = _infer(checkpoint, images, tmp_path / "pt")
    from_onnx = _infer(onnx_path, images, tmp_path / "onnx")
    assert from_pt, "the test model must produce detections"
    assert {d["category_id"] for d in from_onnx} <= {5, 9}  # the training data's ids, not class indices
    key = lambda d: (d["file_name"], -d["score"], d["bbox"])  # noqa: E731
    top_pt = sorted(from_pt, key=key)[:20]
    matched = 0
    for entry in top_pt:
        same_image = [d for d in from_onnx if d["file_name"] == entry["file_name"]]
        best = min(same_image, key=lambda d: sum(abs(a - b) for a, b in zip(d["bbox"], entry["bbox"], strict=True)))
        if (
            best["category_id"] == entry["category_id"]
            and abs(best["score"] - entry["score"]) < 1e-3
            and max(abs(a - b) for a, b in zip(best["bbox"], entry["bbox"], strict=True)) < 0.5
        ):
            matched += 1
    assert matched >= 0.9 * len(top_pt)
    if "segment" in str(onnx_path.parent.parent):
        assert all("segmentation" in d and d["segmentation"]["size"] == [96, 96] for d in from_onnx)


def test_evaluate_scores_onnx_like_pt(exported: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    checkpoint, onnx_path, images = exported
    truth_entries = [d for d in _infer(checkpoint, images, tmp_path / "truth") if d["score"] >= 0.3][:30]
    truth = ground_truth_from(truth_entries, images, (5, 9), images[0].parent / "truth.json")
    code, stdout, stderr = run("evaluate", "--data", str(truth), "-m", str(checkpoint), "-m", str(onnx_path), "--json")
    assert code == 0, stderr
    rows = json.loads(stdout)["models"]
    assert rows[1]["model"] == str(onnx_path) and rows[1]["parameters"] == rows[0]["parameters"]
    assert rows[0]["AP"] > 0.1 and abs(rows[1]["AP"] - rows[0]["AP"]) < 0.02


def test_sliced_inference_runs_onnx_like_pt(exported: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    """--slice goes through the same runtime for both formats: same merged detections (and masks for -seg)."""
    checkpoint, onnx_path, images = exported
    results = []
    for model, name in ((checkpoint, "pt"), (onnx_path, "onnx")):
        code, stdout, stderr = run(
            "infer", str(images[0].parent), "-m", str(model), "-o", str(tmp_path / name),
            "--slice", "64x64", "--slice-overlap", "0.5", "--slice-full", "--save-vis", "--json",
        )  # fmt: skip
        assert code == 0, stderr
        assert json.loads(stdout)["images"] == len(images)
        results.append(json.loads((tmp_path / name / "predictions.json").read_text()))
        assert len(list((tmp_path / name / "vis").glob("*.jpg"))) == len(images)
    from_pt, from_onnx = results
    assert from_pt and abs(len(from_pt) - len(from_onnx)) <= max(2, len(from_pt) // 10)
    best_pt = max(from_pt, key=lambda d: d["score"])
    assert any(
        d["file_name"] == best_pt["file_name"]
        and max(abs(a - b) for a, b in zip(d["bbox"], best_pt["bbox"], strict=True)) < 0.5
        for d in from_onnx
    )
    if "segment" in str(onnx_path.parent.parent):
        assert all(d["segmentation"]["size"] == [96, 96] for d in from_pt + from_onnx)


def test_onnx_without_metadata_uses_the_sidecar_or_indices(tmp_path: Path) -> None:
    import onnx

    checkpoint = make_checkpoint(tmp_path / "best.pt", imgsz=64)
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    export_yolo_onnx(load_source_model(checkpoint), target)
    model = onnx.load(str(target))
    kept = [p for p in model.metadata_props if p.key != "distillkit"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    foreign = tmp_path / "foreign" / "model.onnx"
    foreign.parent.mkdir()
    onnx.save(model, str(foreign))
    assert load_model(foreign).category_ids == {0: 0, 1: 1}  # a plain ultralytics export: indices
    (foreign.parent / "class_mapping.yaml").write_text("class_mapping: {5: 0, 9: 1}\n")
    assert load_model(foreign).category_ids == {0: 5, 1: 9}


def test_unsupported_format_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "model.mlmodel"
    path.write_bytes(b"x")
    with pytest.raises(UsageError, match=r"\.pt, \.onnx, \.engine or \.tflite"):
        load_model(path)


def _tiny_graph(path: Path, inputs: dict[str, list[int]]) -> Path:
    """An ONNX file that is no YOLO export: Identity on its first input, with the given inputs."""
    import onnx
    from onnx import TensorProto, helper

    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()]
    first = next(iter(inputs))
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, inputs[first])
    graph = helper.make_graph([helper.make_node("Identity", [first], ["y"])], "g", values, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # readable by this onnxruntime
    onnx.save(model, str(path))
    return path


def test_onnx_that_is_no_image_model_is_one_line(tmp_path: Path) -> None:
    # each of these used to end in "internal error" (protobuf, onnxruntime) instead of naming the file's problem
    images = make_images(tmp_path / "images", count=1, size=(64, 64))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("not a model")
    cases = [
        (garbage, "is not a readable ONNX file"),
        (_tiny_graph(tmp_path / "x.onnx", {"x": [1, 3, 64, 64]}), "not one 'images' tensor"),
        (_tiny_graph(tmp_path / "prompt.onnx", {"images": [1, 3, 64, 64], "text": [1, 8]}), "'text': [1, 8]"),
        (_tiny_graph(tmp_path / "flat.onnx", {"images": [1, 64]}), "not one 'images' tensor"),
        (_tiny_graph(tmp_path / "identity.onnx", {"images": [1, 3, 64, 64]}), "onnxruntime cannot run"),
    ]
    for model, fragment in cases:
        code, _, err = run("infer", str(images[0]), "-m", str(model), "-o", str(tmp_path / "out"))
        assert code == 2 and err.count("\n") == 1 and fragment in err, (model.name, err)
        assert "internal error" not in err


def test_evaluate_refuses_a_model_trained_on_other_classes(
    exported: tuple[Path, Path, list[Path]], tmp_path: Path
) -> None:
    # same category ids (5, 9), other names: it used to be scored silently (AP 0) as if it were the same data
    checkpoint, onnx_path, images = exported
    truth = ground_truth_from([], images, (5, 9), tmp_path / "truth.json", names=("apple", "pear"))
    for model in (checkpoint, onnx_path):
        code, out, err = run(
            "evaluate", "--data", str(truth), "-m", str(model), "--images-dir", str(images[0].parent), "--json"
        )
        assert code == 1 and err.count("\n") == 1, err
        assert "trained on other classes" in err and "'square'" in err and "'apple'" in err
        assert json.loads(out)["exit_code"] == 1  # --json: the error is the one document on stdout


def test_infer_names_unreadable_images_and_non_image_files(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "best.pt", imgsz=64)
    images = make_images(tmp_path / "images", count=1, size=(64, 64))
    (images[0].parent / "broken.jpg").write_text("not a picture")
    code, _, err = run("infer", str(images[0].parent), "-m", str(checkpoint), "-o", str(tmp_path / "out"))
    # the unreadable file is skipped and named; the readable image is still predicted
    assert code == 0 and err.count("\n") == 1 and "skipped: cannot read image" in err and "broken.jpg" in err, err
    assert (tmp_path / "out" / "predictions.json").exists()
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    code, _, err = run("infer", str(notes), "-m", str(checkpoint), "-o", str(tmp_path / "out"))
    assert code == 2 and "notes.txt is not an image file" in err, err
