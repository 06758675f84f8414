"""`train-student` end to end on generated images: real ultralytics training, offline, on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from distillkit.errors import UsageError
from distillkit.students.student_model import resolve_student
from distillkit.students.train import CHECKPOINT_KEY, train_student
from tests.test_cli import run

# A setting that learns the two-shape set below in a few CPU seconds (measured: mAP50-95 > 0 by epoch 10).
FAST = [
    "student.model=yolov8n",
    "student.imgsz=128",
    "student.batch=8",
    "student.nbs=8",
    "student.optimizer=SGD",
    "student.lr0=0.05",
    "student.warmup_epochs=0",
    "student.plots=false",
    "student.workers=0",
    "augmentation.mosaic=0",
]


def make_shapes(root: Path, count: int, seed: int) -> Path:
    """Red squares (category 5) and blue discs (category 9) on a dark background, COCO boxes."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for index in range(count):
        image = Image.new("RGB", (128, 128), (30, 30, 30))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 3))):
            size = int(rng.integers(30, 50))
            x, y = int(rng.integers(0, 128 - size)), int(rng.integers(0, 128 - size))
            square = bool(rng.integers(0, 2))
            if square:
                draw.rectangle([x, y, x + size - 1, y + size - 1], fill=(240, 60, 60))
            else:
                draw.ellipse([x, y, x + size - 1, y + size - 1], fill=(60, 60, 240))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": 5 if square else 9,
                    "bbox": [x, y, size, size],
                    "iscrowd": 0,
                }
            )
        image.save(root / "images" / f"{index}.png")
        images.append({"id": index + 1, "file_name": f"images/{index}.png", "width": 128, "height": 128})
    path = root / "annotations.json"
    categories = [{"id": 5, "name": "square"}, {"id": 9, "name": "disc"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes(root / "train", 48, 0), make_shapes(root / "val", 16, 1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))


@pytest.fixture(scope="module")
def trained(shapes: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One real training run through the CLI, shared by the tests that need a trained student."""
    train, val = shapes
    out = tmp_path_factory.mktemp("trained") / "student"
    args = ["train-student", "--data", str(train), "--val", str(val), "--output", str(out), "--epochs", "10", "--json"]
    for item in FAST:
        args += ["--set", item]
    code, stdout, stderr = run(*args)
    assert code == 0, stderr
    return out, json.loads(stdout)


def test_end_to_end_training_learns_and_writes_every_output(trained: tuple[Path, dict[str, Any]]) -> None:
    out, report = trained
    assert report["task"] == "detect" and report["epochs_run"] == 10
    assert report["metrics"]["metrics/mAP50-95(B)"] > 0.0  # it learned something on held-out images
    for name in (
        "best.pt",
        "last.pt",
        "class_mapping.yaml",
        "distillation_config.yaml",
        "metadata.json",
        "results.csv",
        "plots/training_curves.png",
        "yolo_data/dataset.yaml",
    ):
        assert (out / name).exists(), name
    mapping = yaml.safe_load((out / "class_mapping.yaml").read_text())
    assert mapping["names"] == ["square", "disc"] and mapping["class_mapping"] == {5: 0, 9: 1}
    checkpoint = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    assert checkpoint["model"].names == {0: "square", 1: "disc"}  # class names travel inside the checkpoint
    assert checkpoint[CHECKPOINT_KEY]["class_mapping"] == {5: 0, 9: 1}
    config = yaml.safe_load((out / "distillation_config.yaml").read_text())
    assert config["student"]["epochs"] == 10 and config["data"]["class_names"] == ["square", "disc"]


def test_infer_streams_coco_results_and_overlays(
    trained: tuple[Path, dict[str, Any]], shapes: tuple[Path, Path], tmp_path: Path
) -> None:
    out, _ = trained
    _, val = shapes
    code, stdout, stderr = run(
        "infer",
        "--model",
        str(out / "best.pt"),
        str(val.parent / "images"),
        "--output",
        str(tmp_path / "infer"),
        "--conf",
        "0.001",
        "--max-det",
        "100",
        "--save-vis",
        "--json",
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["images"] == 16 and summary["median_latency_ms"] > 0
    predictions = json.loads((tmp_path / "infer" / "predictions.json").read_text())
    assert isinstance(predictions, list) and len(predictions) == summary["detections"] > 0
    first = predictions[0]
    assert {"file_name", "category_id", "category_name", "bbox", "score"} <= set(first)
    assert {p["category_id"] for p in predictions} <= {5, 9}  # the dataset's ids, not class indices
    assert {p["category_name"] for p in predictions} <= {"square", "disc"}
    assert len(list((tmp_path / "infer" / "vis").glob("*.jpg"))) == 16

    # the same predictions scored by file name equal `evaluate --model` (image ids) on the same images
    code, by_file, err = run("evaluate", "-d", str(val), "-p", str(tmp_path / "infer" / "predictions.json"), "--json")
    assert code == 0, err
    code, by_model, err = run("evaluate", "-d", str(val), "-m", str(out / "best.pt"), "--json")
    assert code == 0, err
    assert json.loads(by_model)["results"][0]["bbox"]["AP"] == pytest.approx(json.loads(by_file)["bbox"]["AP"])


def test_evaluate_models_side_by_side(
    trained: tuple[Path, dict[str, Any]], shapes: tuple[Path, Path], tmp_path: Path
) -> None:
    out, _ = trained
    _, val = shapes
    code, stdout, err = run(
        "evaluate",
        "-d",
        str(val),
        "-m",
        str(out / "best.pt"),
        "-m",
        str(out / "last.pt"),
        "-o",
        str(tmp_path / "eval"),
        "--json",
    )
    assert code == 0, err
    rows = json.loads(stdout)["models"]
    assert [Path(r["model"]).name for r in rows] == ["best.pt", "last.pt"]
    assert rows[0]["parameters"] > 1_000_000 and rows[1]["parameters_ratio"] == 1.0
    assert rows[0]["median_latency_ms"] > 0 and rows[0]["size_mb"] > 1
    assert (tmp_path / "eval" / "best" / "metrics.json").exists()
    assert (tmp_path / "eval" / "predictions_last.json").exists()
    code, _, err = run("evaluate", "-d", str(val))
    assert code == 2 and "either --predictions or --model" in err


def test_infer_bad_inputs(trained: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = trained
    code, _, err = run("infer", "-m", str(out / "best.pt"), str(tmp_path / "nothing-here"), "-o", str(tmp_path / "o"))
    assert code == 2 and "neither an image file" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    (tmp_path / "a.png").write_bytes(b"")
    code, _, err = run("infer", "-m", str(junk), str(tmp_path / "a.png"), "-o", str(tmp_path / "o"))
    assert code == 2 and "not an ultralytics checkpoint" in err and err.count("\n") == 1


def test_interrupted_run_resumes_and_reuses_the_converted_data(shapes: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = shapes
    out = tmp_path / "student"
    settings = [*FAST, "student.epochs=3", "student.imgsz=64"]

    def interrupt(trainer: object) -> None:
        if trainer.epoch == 1:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_student(train, val, out, overrides=settings, callbacks={"on_train_epoch_start": interrupt})
    assert (out / "train" / "weights" / "last.pt").exists()
    with pytest.raises(UsageError, match="already holds a training run"):
        train_student(train, val, out, overrides=settings)
    resumed = train_student(train, val, out, overrides=settings, resume=True)
    assert resumed.resumed and resumed.epochs_run == 3
    assert resumed.dataset.reused  # converted once, not again


def test_resume_without_a_run_is_a_usage_error(shapes: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = shapes
    code, out, err = run("train-student", "-d", str(train), "-v", str(val), "-o", str(tmp_path / "x"), "--resume")
    assert code == 2 and out == "" and "nothing to resume" in err


def test_validation_set_with_other_categories_is_refused(shapes: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = shapes
    other = json.loads(val.read_text())
    other["categories"].append({"id": 11, "name": "triangle"})
    shutil.copytree(val.parent / "images", tmp_path / "images")
    (tmp_path / "val.json").write_text(json.dumps(other))
    code, _, err = run("train-student", "-d", str(train), "-v", str(tmp_path / "val.json"), "-o", str(tmp_path / "s"))
    assert code == 1 and "other categories" in err


def test_student_resolution_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILLKIT_WEIGHTS", str(tmp_path / "weights"))
    scratch = resolve_student("yolov8s")
    assert scratch.source == "yolov8s.yaml" and not scratch.pretrained and "from scratch" in (scratch.notice or "")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "yolov8s.pt").write_bytes(b"weights")
    local = resolve_student("yolov8s")
    assert local.pretrained and local.source == str((tmp_path / "weights" / "yolov8s.pt").resolve())
    assert resolve_student("yolov8s", pretrained=False).source == "yolov8s.yaml"
    with pytest.raises(UsageError, match="never downloads"):
        resolve_student("missing/yolo11x.pt")


@pytest.mark.parametrize("student", ["notes.txt", "yolov99", "fake.pt"])
def test_student_that_ultralytics_cannot_load_is_a_usage_error(
    shapes: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, student: str
) -> None:
    # a text file, an unknown architecture name, a .pt that is no checkpoint: one line, exit 2, no "internal error"
    train, val = shapes
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.pt").write_text("hello")
    code, _, err = run(
        "train-student", "-d", str(train), "-v", str(val), "-o", str(tmp_path / "s"), "--student", student
    )
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: --student {student} cannot be loaded") and "internal error" not in err


def test_segmentation_student_on_mask_data(tmp_path: Path) -> None:
    from distillkit.data.synthetic import generate_inspection_dataset

    annotations = generate_inspection_dataset(tmp_path / "data", num_images=8, seed=2)
    result = train_student(
        annotations,
        annotations,
        tmp_path / "seg",
        overrides=[*FAST, "student.model=yolov8n-seg", "student.epochs=1", "student.imgsz=64"],
    )
    assert result.task == "segment"
    assert "metrics/mAP50-95(M)" in result.metrics
    labels = list((tmp_path / "seg" / "yolo_data" / "labels" / "train").glob("*.txt"))
    assert any(len(line.split()) > 5 for p in labels for line in p.read_text().splitlines())  # polygons, not boxes


# ------------------------------------------------------------------------------------------------
# copy-paste favouring rare classes


def test_rare_class_donors_favour_images_of_rare_classes() -> None:
    import random

    from distillkit.students.copy_paste import RareClassDonors

    polygon = [np.zeros((3, 2))]
    labels = [
        {"cls": np.array([[0.0], [0.0]]), "segments": polygon * 2},  # common class only
        {"cls": np.array([[0.0], [1.0]]), "segments": polygon * 2},  # holds the rare class 1
        {"cls": np.array([[0.0]]), "segments": polygon},
        {"cls": np.zeros((0, 1)), "segments": []},  # nothing to paste
        {"cls": np.array([[1.0]]), "segments": []},  # boxes without polygons: nothing to paste either
    ]
    donors = RareClassDonors(labels)
    assert donors.weights == [0.25, 1.0, 0.25, 0.0, 0.0]  # class 0: 4 instances with polygons, class 1: one
    random.seed(0)
    drawn = [donors() for _ in range(3000)]
    assert {3, 4}.isdisjoint(drawn)
    assert 0.6 < drawn.count(1) / len(drawn) < 0.73  # 1 / 1.5 of the draws, against 1/5 when uniform
    assert RareClassDonors([labels[3]])() == 0  # nothing anywhere: ultralytics' uniform choice


def test_rare_class_paste_is_installed_in_a_segmentation_run(tmp_path: Path) -> None:
    from ultralytics.data.augment import CopyPaste

    from distillkit.data.synthetic import generate_inspection_dataset
    from distillkit.students.copy_paste import RareClassDonors, copy_paste_transforms

    data = generate_inspection_dataset(tmp_path / "data", num_images=8, seed=3, image_size=(64, 64))
    seen: list[CopyPaste] = []

    def inspect(trainer: Any) -> None:
        seen.extend(copy_paste_transforms(trainer.train_loader.dataset.transforms))

    settings = [
        *FAST,
        "student.model=yolov8n-seg",
        "student.epochs=1",
        "student.imgsz=64",
        "student.workers=0",
        "augmentation.copy_paste=0.5",
        "augmentation.copy_paste_rare_classes=true",
    ]
    result = train_student(data, data, tmp_path / "exp", overrides=settings, callbacks={"on_train_start": inspect})
    assert result.epochs_run == 1
    assert seen and all(p.mode == "mixup" and isinstance(p.get_indexes, RareClassDonors) for p in seen)
    # a detection student cannot paste: the key is reported as having no effect instead of ignored
    detect = train_student(
        data,
        data,
        tmp_path / "detect",
        overrides=[*settings[:-2], "student.model=yolov8n", "augmentation.copy_paste_rare_classes=true"],
    )
    assert any("copy_paste_rare_classes has no effect" in notice for notice in detect.notices)


def test_piped_run_prints_one_line_per_epoch_with_losses_and_metrics(shapes: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = shapes
    sets = [arg for item in [*FAST, "student.imgsz=64"] for arg in ("--set", item)]
    code, out, err = run(
        "train-student", "-d", str(train), "-v", str(val), "-o", str(tmp_path / "s"), "--epochs", "2", *sets, "--json"
    )
    assert code == 0, err
    document = json.loads(out)  # stdout stays one JSON document: the lines go to stderr
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]  # ultralytics' closing validation is not an epoch
    assert any(line.startswith("best.pt  precision(B) ") for line in err.splitlines())
    for line in lines:
        for name in ("box_loss", "cls_loss", "dfl_loss", "precision(B)", "recall(B)", "mAP50(B)", "mAP50-95(B)"):
            assert f"  {name} " in line, (name, line)
    final = {k: v for k, v in document["metrics"].items() if k.startswith("metrics/")}
    zero = all(v == 0 for v in final.values())
    assert ("every validation metric is 0" in err) == zero  # warned exactly when the run learnt nothing


def test_all_zero_warning_names_the_likely_causes() -> None:
    from distillkit.students.train import all_zero_warning

    zeros = {"metrics/precision(B)": 0.0, "metrics/recall(B)": 0.0, "metrics/mAP50(B)": 0.0, "metrics/mAP50-95(B)": 0.0}
    warning = all_zero_warning(zeros, epochs=20, steps_per_epoch=2, pretrained=False)
    assert warning is not None and "40 optimiser steps" in warning and "student.pretrained=false" in warning
    assert "--epochs" in warning and "\n" not in warning
    assert "pretrained" not in (all_zero_warning(zeros, 20, 2, pretrained=True) or "").split("(")[1]
    assert all_zero_warning({**zeros, "metrics/mAP50(B)": 0.01}, 20, 2, pretrained=False) is None
    assert all_zero_warning({}, 20, 2, pretrained=False) is None


def test_epoch_lines_reach_a_piped_console() -> None:
    import io

    from rich.console import Console

    from distillkit.cli.console import LineProgress, Output
    from distillkit.progress import epoch_line

    line = epoch_line(3, 20, {"box_loss": 1.23456, "lr": 0.00001, "mAP50-95(B)": 0.0}, 12.34)
    assert line == "epoch 3/20  box_loss 1.2346  lr 1.00e-05  mAP50-95(B) 0.0000  12.3s"
    buffer = io.StringIO()
    progress = Output(stderr=Console(file=buffer, force_terminal=False, width=40)).progress()
    assert isinstance(progress, LineProgress)
    progress.log(line)
    assert buffer.getvalue() == line + "\n"  # whole, unwrapped, no escape codes
    assert Output(quiet=True).progress().log(line) is None
