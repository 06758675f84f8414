"""Outputs never land on an input file or inside an input folder (distillkit.paths), for every command.

Each refusal happens before any work, so the tests need no real model: a garbage "checkpoint" is
never opened when the layout is refused, and an allowed layout gets as far as the model's own error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from distillkit.errors import UsageError
from distillkit.paths import check_output_apart_from_files, check_output_outside_inputs, image_folders
from tests.test_cli import run

MIXING = "would mix with the inputs"


@pytest.fixture
def data(tmp_path: Path, coco: dict[str, Any]) -> Path:
    """data/train.json with its images in data/images/ (the default images folder)."""
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    for image in coco["images"]:
        Image.new("RGB", (image["width"], image["height"]), (40, 40, 40)).save(images / image["file_name"])
    path = tmp_path / "data" / "train.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.fixture
def garbage_model(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "best.pt"
    path.parent.mkdir()
    path.write_text("not a checkpoint")
    return path


def _tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


def _refused(root: Path, *args: str, fragment: str) -> str:
    """Run a command expected to be refused: exit 2, one line naming the problem, nothing written."""
    before = _tree(root)
    code, stdout, stderr = run(*args)
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and fragment in stderr and "Traceback" not in stderr, stderr
    assert stdout == ""
    assert _tree(root) == before
    return stderr


def test_helper_refuses_inputs_and_their_insides_not_siblings(tmp_path: Path, data: Path) -> None:
    images = data.parent / "images"
    with pytest.raises(UsageError, match="inside the input folder"):
        check_output_outside_inputs(images / "out", [images])
    with pytest.raises(UsageError, match="inside the input folder"):
        check_output_outside_inputs(images, [None, images])
    with pytest.raises(UsageError, match="is the input file"):
        check_output_outside_inputs(tmp_path / "data" / ".." / "data" / "train.json", [data], "--output")
    # siblings, parents and the annotation file's own folder are fine
    inputs = [data, *image_folders([data])]
    for output in (tmp_path / "exp", tmp_path, data.parent / "run1"):
        check_output_outside_inputs(output, inputs)
    assert image_folders([data], images_dir=tmp_path / "elsewhere") == [tmp_path / "elsewhere"]
    # symlinks are followed both ways
    link = tmp_path / "link"
    link.symlink_to(images, target_is_directory=True)
    with pytest.raises(UsageError, match="inside the input folder"):
        check_output_outside_inputs(link / "out", [images])
    with pytest.raises(UsageError, match="inside the input folder"):
        check_output_outside_inputs(images / "out", [link])
    # images given as files: only their own folder is refused
    with pytest.raises(UsageError, match="holds the input image"):
        check_output_apart_from_files(images, [images / "a.png"], "--gradcam")
    check_output_apart_from_files(images / "sub", [images / "a.png"])


def test_infer_refuses_outputs_among_its_sources(tmp_path: Path, data: Path, garbage_model: Path) -> None:
    images = data.parent / "images"
    model = ["-m", str(garbage_model)]
    _refused(tmp_path, "infer", *model, str(images), "-o", str(images), fragment="inside the input folder")
    _refused(tmp_path, "infer", *model, str(images), "-o", str(images / "out"), fragment="--output")
    _refused(tmp_path, "infer", *model, str(images / "a.png"), "-o", str(images), fragment=MIXING)
    _refused(tmp_path, "infer", *model, f"{images}/*.png", "-o", str(images), fragment=MIXING)
    # `infer run/vis -o run --save-vis` would write overlays over the inputs themselves
    vis = tmp_path / "run" / "vis"
    vis.mkdir(parents=True)
    (vis / "a.png").write_bytes((images / "a.png").read_bytes())
    _refused(tmp_path, "infer", *model, str(vis), "-o", str(vis.parent), "--save-vis", fragment="--save-vis folder")
    _refused(tmp_path, "infer", *model, str(vis / "a.png"), "-o", str(vis.parent), "--save-vis", fragment=MIXING)
    _refused(tmp_path, "infer", *model, str(images), "-o", str(garbage_model), fragment="is the input file")
    # without --save-vis that parent is a fine --output, and a file source allows a sub-folder of its
    # own: both get as far as opening the (garbage) model
    for source, output in ((vis, vis.parent), (images / "a.png", images / "sub")):
        code, _, stderr = run("infer", *model, str(source), "-o", str(output))
        assert code != 0 and MIXING not in stderr and "inside the input" not in stderr, stderr
        assert not (images / "sub").exists()


def test_evaluate_refuses_outputs_on_or_in_inputs(tmp_path: Path, data: Path, garbage_model: Path) -> None:
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]))
    base = ["evaluate", "-d", str(data), "-p", str(predictions), "--iou-type", "bbox"]
    _refused(tmp_path, *base, "-o", str(predictions), fragment="is the input file")
    _refused(tmp_path, *base, "-o", str(data), fragment="is the input file")
    _refused(tmp_path, *base, "-o", str(data.parent / "images" / "eval"), fragment="inside the input folder")
    elsewhere = tmp_path / "pictures"
    elsewhere.mkdir()
    model = ["-m", str(garbage_model), "--images-dir", str(elsewhere)]
    _refused(tmp_path, "evaluate", "-d", str(data), *model, "-o", str(elsewhere / "e"), fragment="--output")
    _refused(tmp_path, "evaluate", "-d", str(data), *model, "-o", str(garbage_model), fragment="is the input file")
    # a classifier's class-per-folder tree: an eval folder in it would become a class next time
    tree = data.parent / "images"
    _refused(
        tmp_path, "evaluate", "-d", str(tree), "-m", str(garbage_model), "-o", str(tree / "eval"), fragment="--output"
    )
    # a sibling folder works end to end
    code, _, stderr = run(*base, "-o", str(tmp_path / "eval"), "--json")
    assert code == 0, stderr
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_train_teacher_refuses_an_experiment_in_the_images(tmp_path: Path, data: Path) -> None:
    base = ["train-teacher", "-d", str(data), "-v", str(data)]
    _refused(tmp_path, *base, "-o", str(data.parent / "images" / "exp"), fragment="inside the input folder")
    _refused(tmp_path, *base, "-o", str(data), fragment="is the input file")
    other = tmp_path / "pictures"
    other.mkdir()
    _refused(tmp_path, *base, "--images-dir", str(other), "-o", str(other / "exp"), fragment="--output")
    # next to the data (and even in the annotation file's folder) the run gets as far as --only
    for output in (tmp_path / "exp", data.parent / "run1"):
        code, _, stderr = run(*base, "-o", str(output), "--only", "bogus")
        assert code == 2 and "--only 'bogus'" in stderr, stderr
        assert not output.exists()


def test_train_student_refuses_an_output_in_its_inputs(tmp_path: Path, data: Path) -> None:
    base = ["train-student", "-d", str(data), "-v", str(data)]
    _refused(tmp_path, *base, "-o", str(data.parent / "images" / "s"), fragment="inside the input folder")
    _refused(tmp_path, *base, "-o", str(data), fragment="is the input file")
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    _refused(tmp_path, *base, "--unlabeled", str(unlabeled), "-o", str(unlabeled / "s"), fragment="inside the input")
    code, _, stderr = run(*base, "-o", str(tmp_path / "s"), "--student", "no-such-model")
    assert code == 2 and MIXING not in stderr and "no-such-model" in stderr, stderr
    assert not (tmp_path / "s").exists()


def test_optimize_refuses_an_output_in_its_inputs(tmp_path: Path, data: Path, garbage_model: Path) -> None:
    images = data.parent / "images"
    base = ["optimize", "-m", str(garbage_model), "--calib-dir", str(images)]
    _refused(tmp_path, *base, "-o", str(images / "opt"), fragment="inside the input folder")
    _refused(tmp_path, *base, "-o", str(garbage_model), fragment="is the input file")
    calib = ["optimize", "-m", str(garbage_model), "--calib-data", str(data)]
    _refused(tmp_path, *calib, "-o", str(images / "opt"), fragment="inside the input folder")
    code, _, stderr = run(*base, "-o", str(tmp_path / "opt"))
    assert code != 0 and MIXING not in stderr and "inside the input" not in stderr, stderr


def test_config_never_writes_over_its_data(tmp_path: Path, data: Path) -> None:
    original = data.read_bytes()
    base = ["config", "-d", str(data)]
    _refused(tmp_path, *base, "-o", str(data.parent), "--filename", data.name, fragment="is the input file")
    _refused(tmp_path, *base, "-o", str(data.parent / "images"), fragment="inside the input folder")
    assert data.read_bytes() == original
