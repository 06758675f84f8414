"""The command-line contract: exit codes, one-line errors, --json documents, --quiet, NO_COLOR."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from distillkit import __version__
from distillkit.cli import main


def run(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, stdout.getvalue(), stderr.getvalue()


def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distillkit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def dataset_file(tmp_path: Path, coco: dict[str, Any]) -> Path:
    # 12 images so a 3-way split has something in every split
    for image_id in range(4, 13):
        coco["images"].append({"id": image_id, "file_name": f"{image_id}.png", "width": 100, "height": 80})
        coco["annotations"].append(
            {"id": 100 + image_id, "image_id": image_id, "category_id": 1 + image_id % 2, "bbox": [1, 1, 9, 9]}
        )
    return write_json(tmp_path / "annotations.json", coco)


def test_version_and_help() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out.strip() == f"distillkit {__version__}"
    code, out, _ = run("--help")
    assert code == 0
    for command in ("validate", "split", "train-student", "evaluate", "infer", "config"):
        assert command in out


@pytest.mark.parametrize("command", ["validate", "split", "train-student", "evaluate", "infer", "config"])
def test_every_command_has_help_with_examples(command: str) -> None:
    code, out, _ = run(command, "--help")
    assert code == 0
    assert "Examples" in out and f"distillkit {command}" in out


def test_validate_json_document_shape(dataset_file: Path) -> None:
    code, out, err = run("validate", str(dataset_file), "--json")
    assert code == 0, err
    report = json.loads(out)  # stdout is exactly one JSON document
    for key in (
        "valid",
        "num_images",
        "num_annotations",
        "categories",
        "has_boxes",
        "has_masks",
        "generated",
        "errors",
        "warnings",
    ):
        assert key in report
    assert report["valid"] is True
    assert report["num_images"] == 12 and report["num_annotations"] == 12
    assert {"bbox", "area"} <= set(report["generated"])
    assert report["categories"][0] == {"id": 1, "name": "scratch", "annotations": 7, "images": 7}
    assert "splits" not in report


def test_validate_with_split_reports_splits_and_writes_files(dataset_file: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "splits"
    code, out, err = run(
        "validate", str(dataset_file), "--split", "0.5,0.25,0.25", "--output-dir", str(out_dir), "--json", "--seed", "3"
    )
    assert code == 0, err
    report = json.loads(out)
    splits = report["splits"]["splits"]
    assert list(splits) == ["train", "val", "test"]
    assert sum(s["images"] for s in splits.values()) == 12
    for name in splits:
        assert (out_dir / f"{name}.json").exists()


def test_validate_split_equals_split_command(dataset_file: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("validate", str(dataset_file), "--split", "0.6,0.2,0.2", "--seed", "5", "--output-dir", str(a))[0] == 0
    assert run("split", str(dataset_file), "--ratios", "0.6,0.2,0.2", "--seed", "5", "--output-dir", str(b))[0] == 0
    for name in ("train", "val", "test"):
        assert (a / f"{name}.json").read_bytes() == (b / f"{name}.json").read_bytes()


def test_invalid_data_exits_1_and_writes_nothing(dataset_file: Path, tmp_path: Path) -> None:
    document = json.loads(dataset_file.read_text())
    document["annotations"][0]["image_id"] = 999
    bad = write_json(tmp_path / "bad.json", document)
    code, out, _ = run("validate", str(bad), "--json", "--split", "0.7,0.3", "--output", str(tmp_path / "o.json"))
    assert code == 1
    report = json.loads(out)
    assert report["valid"] is False
    assert report["errors"][0]["code"] == "missing_image" and report["errors"][0]["ids"] == [1]
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "train.json").exists()


def test_split_refuses_invalid_data_with_one_line(dataset_file: Path, tmp_path: Path) -> None:
    document = json.loads(dataset_file.read_text())
    document["annotations"][0]["bbox"] = [1, 1, 0, 0]
    bad = write_json(tmp_path / "bad.json", document)
    code, out, err = run("split", str(bad))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "invalid_bbox" in err


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["validate", "missing.json"], 2, "file not found"),
        (["validate", "{data}", "--split", "0.7,0.2"], 2, "sum to"),
        (["validate", "{data}", "--split", "a,b"], 2, "e.g. 0.7,0.15,0.15"),
        (["validate", "{data}", "--bogus"], 2, "No such option"),
        (["split", "{data}", "--ratios", "1"], 2, "give 2"),
        (["validate", "{data}", "--output", "{data}"], 2, "inputs are never modified"),
        (["validate", "{notjson}"], 1, "not valid JSON"),
        # a file where a folder goes and the reverse: the OS error becomes one line, not "internal error"
        (["split", "{data}", "--ratios", "0.5,0.5", "--output-dir", "{notjson}"], 2, "exists and is not a folder"),
        (["validate", "{data}", "--output", "{folder}", "--json"], 2, "is a folder where a file goes"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_errors_are_one_line_with_exit_code(
    args: list[str], code: int, fragment: str, dataset_file: Path, tmp_path: Path
) -> None:
    notjson = tmp_path / "broken.json"
    notjson.write_text("{not json")
    filled = [a.format(data=dataset_file, notjson=notjson, folder=tmp_path) for a in args]
    got, out, err = run(*filled)
    assert got == code, err
    if "--json" in args:  # the error is also the run's one JSON document
        assert json.loads(out)["exit_code"] == code
    else:
        assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err
    assert "Traceback" not in err


def test_ctrl_c_is_one_line_with_exit_130(dataset_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # typer swallows KeyboardInterrupt into a silent exit 130; the user must still be told.
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("distillkit.cli.validate_cmd.validate_dataset", interrupted)
    code, out, err = run("validate", str(dataset_file))
    assert code == 130 and out == ""
    assert err == "error: interrupted\n"


def test_ctrl_c_wrapped_by_python_is_still_an_interrupt(dataset_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A Ctrl-C while a module imports (matplotlib, at the end of train-classifier) can surface as
    # "RuntimeError: Error calling __set_name__" with the KeyboardInterrupt as its cause: found by the
    # SIGINT bench as an "internal error" with exit 1.
    def interrupted(*args: Any, **kwargs: Any) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Error calling __set_name__ on '_axis_method_wrapper' instance") from exc

    monkeypatch.setattr("distillkit.cli.validate_cmd.validate_dataset", interrupted)
    code, out, err = run("validate", str(dataset_file))
    assert code == 130 and out == ""
    assert err == "error: interrupted\n"


def test_input_file_is_never_modified(dataset_file: Path, tmp_path: Path) -> None:
    before = dataset_file.read_bytes()
    code, _, _ = run("validate", str(dataset_file), "--output", str(tmp_path / "fixed.json"), "--split", "0.5,0.5")
    assert code == 0
    assert dataset_file.read_bytes() == before
    fixed = json.loads((tmp_path / "fixed.json").read_text())
    assert all("bbox" in a and "area" in a for a in fixed["annotations"])


def test_quiet_prints_nothing_on_success(dataset_file: Path) -> None:
    code, out, err = run("validate", str(dataset_file), "--quiet")
    assert code == 0 and out == "" and err == ""


def test_as_a_process_no_color_and_debug(dataset_file: Path, tmp_path: Path) -> None:
    result = run_process("validate", str(dataset_file), env={"NO_COLOR": "1", "FORCE_COLOR": "1"})
    assert result.returncode == 0
    colour = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-8]|9[0-7])(?:;\d+)*m")  # foreground colour codes
    assert not colour.search(result.stdout), result.stdout
    assert "valid" in result.stdout

    missing = run_process("validate", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    debug = run_process("validate", str(tmp_path / "nope.json"), "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_quiet_still_prints_the_errors(dataset_file: Path, tmp_path: Path) -> None:
    document = json.loads(dataset_file.read_text())
    document["annotations"][0]["category_id"] = 42
    bad = write_json(tmp_path / "bad.json", document)
    code, out, err = run("validate", str(bad), "--quiet")
    assert code == 1 and out == ""
    assert err.startswith("error: [missing_category]")


def test_ctrl_c_during_interpreter_shutdown_exits_130_quietly(tmp_path: Path) -> None:
    """After main() is done, a Ctrl-C while Python joins threads exits 130 without a traceback.

    Before, Python printed "Exception ignored in: <module 'threading'> ... KeyboardInterrupt" and
    exited 0, or died by the signal: a pipeline could not tell an interrupted run from a clean one.
    """
    script = tmp_path / "late_ctrl_c.py"
    script.write_text(
        "import os, signal, sys, threading, time\n"
        "import distillkit.cli as cli\n"
        "finish = cli._exit_process\n"
        "def after_the_work(code):  # a thread Python must wait for, and a Ctrl-C meanwhile\n"
        "    threading.Thread(target=time.sleep, args=(3.0,)).start()\n"
        "    threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGINT)).start()\n"
        "    finish(code)\n"
        "cli._exit_process = after_the_work\n"
        "sys.argv = ['distillkit', '--version']\n"
        "cli.main()\n"
    )
    started = time.monotonic()
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=repo)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    assert "interrupted" not in done.stderr and "distillkit" in done.stdout  # the work was done first
    assert time.monotonic() - started < 30
