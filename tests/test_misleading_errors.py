"""Errors that misled (issue 14): each case the issue lists, and guards against the kind coming back.

Every test runs the CLI in-process on tiny generated data; only the `infer` case loads a (random, tiny) model.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from distillkit.cli.app import app
from tests.conftest import BASE_COCO
from tests.helpers import square
from tests.test_cli import run

DISTILLKIT = Path(__file__).resolve().parents[1] / "distillkit"
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def _coco(n_images: int) -> dict[str, Any]:
    """``n_images`` images of 100x80, each with one box, two classes."""
    coco: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}],
    }
    for image_id in range(1, n_images + 1):
        coco["images"].append({"id": image_id, "file_name": f"{image_id}.png", "width": 100, "height": 80})
        coco["annotations"].append(
            {"id": image_id, "image_id": image_id, "category_id": 1 + image_id % 2, "bbox": [1, 1, 9, 9]}
        )
    return coco


def _write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


def _commands() -> dict[str, Any]:
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def _long_options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")}


def _all_long_options() -> set[str]:
    group = typer.main.get_command(app)
    found = _long_options(group) | {"--help", "--debug"}
    for command in _commands().values():
        found |= _long_options(command)
    return found


def _json_error(out: str) -> dict[str, Any]:
    document = json.loads(out)  # exactly one document: json.loads refuses anything after it
    assert set(document) == {"error", "hint", "exit_code"}, document
    return document


# --------------------------------------------------------------------------------------------- 1. suggestions


def test_train_student_suggests_a_repair_it_can_use(tmp_path: Path) -> None:
    # It used to say "pass --drop-invalid", an option train-student does not have.
    coco = _coco(6)
    coco["annotations"][0]["bbox"] = [1, 1, 0, 0]  # zero size, no mask: unrepairable
    bad = _write(tmp_path / "bad.json", coco)
    code, out, err = run("train-student", "-d", str(bad), "-v", str(bad), "-o", str(tmp_path / "exp"))
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert "invalid_bbox" in err and "pass --drop-invalid" not in err
    train_student = _commands()["train-student"]
    suggested = re.findall(r"'(distillkit validate [^']*)'", err)
    outside = re.sub(r"'distillkit validate [^']*'", "", err)
    assert all(flag in _long_options(train_student) for flag in OPTION.findall(outside)), err
    # the suggested repair works as written, and its output is what train-student then reads
    repair = [line for line in suggested if "--drop-invalid" in line]
    assert len(repair) == 1, err
    args = shlex.split(repair[0])[1:]
    args[args.index("clean.json")] = str(tmp_path / "clean.json")
    code, _, err = run(*args, "--skip-images")
    assert code == 0, err
    assert len(json.loads((tmp_path / "clean.json").read_text())["annotations"]) == 5


def test_dropping_is_not_suggested_when_it_would_not_help(tmp_path: Path) -> None:
    coco = _coco(4)
    coco["categories"].append({"id": 1, "name": "again"})  # a dataset-level error: --drop-invalid cannot clear it
    bad = _write(tmp_path / "bad.json", coco)
    code, _, err = run("split", str(bad), "--drop-invalid")
    assert code == 1 and "--drop-invalid" not in err and f"'distillkit validate {bad}'" in err, err


def _hint_strings() -> list[tuple[str, int, str]]:
    """(file, line, text) of every string in an error's arguments, and of the issue catalogue's fixes."""
    found = []
    for path in sorted(DISTILLKIT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        roots: list[ast.AST] = []
        if path.name == "issues.py":  # the catalogue of validate's findings, each with its fix
            roots.append(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name.endswith("Error"):  # UsageError, DataError, ConfigError, ...
                    roots.append(node)
        for root in roots:
            for sub in ast.walk(root):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    found.append((str(path.relative_to(DISTILLKIT.parent)), sub.lineno, sub.value))
    return found


def test_every_option_an_error_names_exists() -> None:
    # A wrong suggestion fails here: every --option in an error's text is an option of some command.
    options = _all_long_options()
    strings = _hint_strings()
    assert len(strings) > 100  # the scan finds the errors
    wrong = [
        f"{file}:{line}: {flag}" for file, line, text in strings for flag in OPTION.findall(text) if flag not in options
    ]
    assert not wrong, wrong


def test_a_command_module_names_only_its_own_options() -> None:
    # distillkit/cli/<name>_cmd.py raises for the command <name>: its errors may only name that command's options.
    commands = _commands()
    checked = 0
    for file, line, text in _hint_strings():
        module = Path(file).name
        if not (file.startswith("distillkit/cli/") and module.endswith("_cmd.py")):
            continue
        command = commands[module.removesuffix("_cmd.py").replace("_", "-")]
        own = _long_options(command) | {"--help"}
        for flag in OPTION.findall(text):
            checked += 1
            assert flag in own, f"{file}:{line}: {flag} is not an option of '{command.name}'"
    assert checked > 5


def test_no_command_declares_a_flag_twice() -> None:
    # `optimize -q` was --quantize and --quiet at once: the later one won and the --help example failed.
    for name, command in _commands().items():
        seen: dict[str, str] = {}
        for param in command.params:
            for flag in (*param.opts, *param.secondary_opts):
                assert flag not in seen, f"{name}: {flag} is both {seen[flag]} and {param.name}"
                seen[flag] = str(param.name)


# --------------------------------------------------------------------------------------------- 2. optimize -q


def test_optimize_help_example_quantize_flags_parse(tmp_path: Path) -> None:
    code, out, _ = run("optimize", "--help")
    assert code == 0 and "-q int8 -q fp16" in out
    missing = tmp_path / "best.pt"
    calib = tmp_path / "calib"
    calib.mkdir()
    code, out, err = run("optimize", "-m", str(missing), "-q", "int8", "-q", "fp16", "--calib-dir", str(calib))
    assert code == 2 and err.count("\n") == 1, err
    assert f"model {missing} not found" in err  # got past the options to the model
    code, _, err = run("optimize", "-m", str(missing), "--quiet")
    assert code == 2 and "not found" in err  # --quiet is still there, long only


def test_quiet_keeps_its_short_flag_elsewhere(tmp_path: Path) -> None:
    data = _write(tmp_path / "data.json", _coco(3))
    assert run("validate", str(data), "-q", "--skip-images") == (0, "", "")


# --------------------------------------------------------------------------------------------- 3. --images-dir


def test_validate_missing_images_dir_is_a_usage_error(tmp_path: Path) -> None:
    data = _write(tmp_path / "data.json", _coco(3))
    missing = tmp_path / "nonexistent"
    code, out, err = run("validate", str(data), "--images-dir", str(missing))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"--images-dir {missing} does not exist" in err
    code, _, err = run("validate", str(data), "--images-dir", str(data))
    assert code == 2 and "is not a folder" in err


# --------------------------------------------------------------------------------------------- 4. empty splits


@pytest.mark.parametrize("command", ["validate", "split"])
def test_a_split_that_would_be_empty_is_refused(tmp_path: Path, command: str) -> None:
    data = _write(tmp_path / "data.json", _coco(20))
    ratio = ["--split"] if command == "validate" else ["--ratios"]
    extra = ["--skip-images"] if command == "validate" else []
    code, _, err = run(command, str(data), *ratio, "0.98,0.01,0.01", *extra)
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: "), err
    line = err.strip().splitlines()[-1]
    assert "split 'val' (ratio 0.01) would get no images" in line
    assert "raise its ratio to 0.05 or more" in line and "100 or more at 0.01" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]  # nothing written
    # the minimum it names is enough
    code, _, err = run(command, str(data), *ratio, "0.9,0.05,0.05", *extra, "--quiet")
    assert code == 0, err
    assert all(json.loads((tmp_path / f"{name}.json").read_text())["images"] for name in ("train", "val", "test"))


# --------------------------------------------------------------------------------------------- 5. --output-dir


@pytest.mark.parametrize("command", ["validate", "split"])
def test_split_output_dir_inside_the_images_folder_is_refused(tmp_path: Path, command: str) -> None:
    data = _write(tmp_path / "data.json", _coco(6))
    images = tmp_path / "images"
    images.mkdir()
    ratio = ["--split", "0.5,0.5"] if command == "validate" else ["--ratios", "0.5,0.5"]
    code, out, err = run(command, str(data), *ratio, "--output-dir", str(images / "splits"))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "--output-dir" in err and "inside the input folder" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data.json", "images"]
    if command == "validate":  # the same for --images-dir, and for the repaired file
        other = tmp_path / "pictures"
        other.mkdir()
        code, _, err = run(command, str(data), *ratio, "--images-dir", str(other), "--output-dir", str(other))
        assert code == 2 and "inside the input folder" in err
        code, _, err = run(command, str(data), "--output", str(images / "clean.json"))
        assert code == 2 and "--output" in err and "inside the input folder" in err
    code, _, err = run(command, str(data), *ratio, "--output-dir", str(tmp_path / "splits"), "--quiet")
    assert code == 0, err  # a sibling folder is fine


# --------------------------------------------------------------------------------------------- 6. NaN literals


def test_nan_and_infinity_literals_are_read_and_reported_per_annotation(tmp_path: Path) -> None:
    coco = copy.deepcopy(BASE_COCO)
    coco["annotations"][0]["bbox"] = [10, float("nan"), 20, 20]
    coco["annotations"][1]["segmentation"] = [[*square(50, 20, 10)[:3], float("inf"), *square(50, 20, 10)[4:]]]
    coco["annotations"][2]["area"] = float("-inf")
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(coco))  # Python's json writes NaN / Infinity / -Infinity literals
    assert b"NaN" in path.read_bytes() and b"-Infinity" in path.read_bytes()

    code, out, err = run("validate", str(path), "--json", "--skip-images")
    assert code == 1, err
    assert "not valid JSON" not in err
    report = json.loads(out)
    errors = {issue["code"]: issue["ids"] for issue in report["errors"]}
    warnings = {issue["code"]: issue["ids"] for issue in report["warnings"]}
    assert errors["invalid_bbox"] == [1]  # the NaN box, by annotation id
    assert errors["invalid_polygon"] == [2]  # the Infinity coordinate
    assert warnings["invalid_area"] == [3]  # a -Infinity area is recomputed in the repaired file

    # commands that need valid data name the annotation too, and anything else stays "not valid JSON"
    code, _, err = run("split", str(path))
    assert code == 1 and "invalid_bbox" in err and "annotation 1" in err, err
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [NaN, }')
    code, _, err = run("validate", str(broken))
    assert code == 1 and "not valid JSON" in err


# --------------------------------------------------------------------------------------------- 7. infer


def test_infer_skips_a_truncated_image_and_names_it(tmp_path: Path, torch_one_thread: None) -> None:
    from tests.optimize_helpers import ground_truth_from, make_checkpoint, make_images

    checkpoint = make_checkpoint(tmp_path / "best.pt", imgsz=64)
    images = make_images(tmp_path / "images", count=2, size=(64, 64))
    whole = images[0].read_bytes()
    truncated = images[0].parent / "truncated.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    out_dir = tmp_path / "out"
    code, out, err = run("infer", str(images[0].parent), "-m", str(checkpoint), "-o", str(out_dir), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["images"] == 2 and summary["skipped"] == 1
    assert summary["skipped_images"][0]["file_name"] == str(truncated.resolve())
    assert "warning: skipped: cannot read image" in err and "truncated.png" in err
    predicted = {entry["file_name"] for entry in json.loads((out_dir / "predictions.json").read_text())}
    assert predicted == {str(p.resolve()) for p in images}  # the others were predicted

    # evaluate scores every ground-truth image: there the unreadable file stays an error, now naming it
    truth = ground_truth_from([], [*images, truncated], (5, 9), tmp_path / "truth.json")
    code, _, err = run("evaluate", "-d", str(truth), "-m", str(checkpoint), "--images-dir", str(images[0].parent))
    assert code == 1 and err.count("\n") == 1 and f"cannot read image {truncated}" in err, err

    # nothing readable at all stays an error, and no predictions file is written
    code, out, err = run("infer", str(truncated), "-m", str(checkpoint), "-o", str(tmp_path / "none"))
    assert code == 1 and out == "" and "none of the 1 images could be read" in err and "truncated.png" in err, err
    assert not (tmp_path / "none" / "predictions.json").exists()


# --------------------------------------------------------------------------------------------- 8. evaluate -p


def test_evaluate_leaves_out_predictions_for_images_outside_the_ground_truth(tmp_path: Path) -> None:
    gt = _coco(2)
    truth = _write(tmp_path / "gt.json", gt)
    exact = [{**ann, "score": 0.9} for ann in gt["annotations"]]
    elsewhere = [
        {"image_id": 99, "category_id": 1, "bbox": [1, 1, 9, 9], "score": 0.9},
        {"file_name": "folder/not_in_gt.png", "category_id": 2, "bbox": [1, 1, 9, 9], "score": 0.8},
    ]
    predictions = _write(tmp_path / "predictions.json", exact + elsewhere)
    code, out, err = run("evaluate", "-d", str(truth), "-p", str(predictions), "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["bbox"]["AP"] == pytest.approx(1.0)  # unknown images are no false positives, as in pycocotools
    assert "2 detections are for images not in the ground truth" in err
    assert any("2 detections are for images not in the ground truth" in w for w in document["warnings"])

    only_elsewhere = _write(tmp_path / "elsewhere.json", elsewhere)
    code, out, err = run("evaluate", "-d", str(truth), "-p", str(only_elsewhere))
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert "none of the 2 detections is for an image of the ground truth" in err and "image_id 99" in err


# --------------------------------------------------------------------------------------------- 9. --json errors


def test_json_errors_are_one_document_on_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run("validate", str(tmp_path / "missing.json"))  # without --json stdout stays empty
    assert code == 2 and out == "" and err.startswith("error: file not found")
    code, out, err = run("validate", str(tmp_path / "missing.json"), "--json")
    assert code == 2 and err.startswith("error: file not found") and err.count("\n") == 1
    expected = {"error": f"file not found: {tmp_path / 'missing.json'}", "hint": "check the path", "exit_code": 2}
    assert _json_error(out) == expected

    notjson = tmp_path / "broken.json"
    notjson.write_text("{not json")
    code, out, err = run("validate", str(notjson), "--json")
    document = _json_error(out)
    assert code == 1 and document["exit_code"] == 1 and "not valid JSON" in document["error"]
    assert document["hint"] == "fix or re-export the file" and err.count("\n") == 1

    data = _write(tmp_path / "data.json", _coco(3))
    code, out, err = run("validate", str(data), "--bogus", "--json")  # a usage error of the parser
    document = _json_error(out)
    assert code == 2 and document["exit_code"] == 2 and "No such option: --bogus" in document["error"]
    assert document["hint"] == "see 'distillkit validate --help'"

    code, out, _ = run("split", str(data), "--ratios", "0.98,0.01,0.01", "--json")  # a data error after work began
    assert code == 1 and _json_error(out)["error"].startswith("split 'val' (ratio 0.01) would get no images")

    # invalid data: the command's own report is the one document, no error document after it
    coco = _coco(3)
    coco["annotations"][0]["category_id"] = 42
    bad = _write(tmp_path / "bad.json", coco)
    code, out, _ = run("validate", str(bad), "--json", "--skip-images")
    assert code == 1 and json.loads(out)["valid"] is False

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("distillkit.cli.validate_cmd.validate_dataset", interrupted)
    code, out, err = run("validate", str(data), "--json")
    assert code == 130 and err == "error: interrupted\n"
    assert _json_error(out) == {"error": "interrupted", "hint": None, "exit_code": 130}

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("distillkit.cli.validate_cmd.validate_dataset", crash)
    code, out, err = run("validate", str(data), "--json")
    document = _json_error(out)
    assert code == 1 and document["error"] == "internal error: RuntimeError: boom" and "--debug" in document["hint"]
    assert err.startswith("error: internal error: RuntimeError: boom")
