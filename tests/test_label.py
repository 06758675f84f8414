"""`distillkit label`: teachers label image folders into scored COCO files that `validate` accepts.

Real tiny random-weight teachers (no downloads): a Grounding DINO + SAM pair trained by
`train-teacher`, the same base weights zero-shot, and a tiny YOLO-seg checkpoint. Also: screening
against `--exclude` datasets and repeats, and resuming after SIGKILL with only the missing images
computed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from distillkit.io import read_json
from tests.optimize_helpers import make_checkpoint
from tests.test_teachers import TINY_SETS, run_cli
from tests.tiny_sam import write_tiny_sam
from tests.tiny_teachers import write_shapes_dataset, write_tiny_grounding_dino

pytestmark = pytest.mark.usefixtures("torch_one_thread")

REPO_ROOT = Path(__file__).resolve().parents[1]
RAW_IMAGES = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny DINO + SAM base weights, a DINO + SAM experiment trained on them, 12 unlabelled images."""
    root = tmp_path_factory.mktemp("label")
    data = root / "data"
    world = {
        "root": root,
        "dino": write_tiny_grounding_dino(root / "weights" / "dino"),
        "sam": write_tiny_sam(root / "weights" / "sam"),
        "train": write_shapes_dataset(data, 4, "both", seed=3, name="train.json"),
        "val": write_shapes_dataset(data, 2, "both", seed=4, name="val.json"),
        "raw": write_shapes_dataset(root / "raw", RAW_IMAGES, "both", seed=7, name="unused.json").parent / "images",
    }
    exp = root / "exp"
    result = run_cli(
        "train-teacher", "-d", world["train"], "-v", world["val"], "-o", exp, "--dino-weights", world["dino"],
        "--sam-weights", world["sam"], "--epochs", "1", "--batch", "2", "--device", "cpu", *TINY_SETS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    world["exp"] = exp
    return world


def label(*args: Any) -> tuple[dict[str, Any], Any]:
    """`distillkit label ... --json`: (the summary document, the CliResult)."""
    result = run_cli("label", *args, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result


def check_coco(path: Path, summary: dict[str, Any], *, masks: bool) -> dict[str, Any]:
    """The file agrees with the summary, every annotation is scored and well formed, `validate` accepts it."""
    coco = read_json(path)
    annotations = coco["annotations"]
    assert summary["images"] == len(coco["images"]) and summary["annotations"] == len(annotations)
    by_id = {c["id"]: c["name"] for c in coco["categories"]}
    counted = {name: sum(a["category_id"] == cid for a in annotations) for cid, name in by_id.items()}
    assert summary["per_class"] == counted
    with_labels = {a["image_id"] for a in annotations}
    assert summary["images_without_detections"] == sum(i["id"] not in with_labels for i in coco["images"])
    assert summary["masks"] == sum("segmentation" in a for a in annotations)
    for annotation in annotations:
        assert 0.0 <= annotation["score"] <= 1.0
        assert annotation["iscrowd"] == 0 and annotation["area"] > 0 and len(annotation["bbox"]) == 4
    if masks:
        assert summary["masks"] > 0
    assert {"description", "distillkit"} <= set(coco["info"])
    extra = [] if summary["images_root"] == str(path.resolve().parent) else ["--images-dir", summary["images_root"]]
    validated = run_cli("validate", path, *extra, "--json")
    assert validated.exit_code == 0, validated.output
    report = json.loads(validated.stdout)
    assert report["errors"] == [] and report["images_found"] == len(coco["images"]), report
    assert report["replaced"] == {"bbox": 0, "area": 0, "clipped_bbox": 0}  # nothing for validate to repair
    return coco


# ------------------------------------------------------------------------------------------------
# the three kinds of teacher


def test_teacher_dir_labels_a_folder_into_a_valid_scored_coco_file(world: dict[str, Path], tmp_path: Path) -> None:
    output = world["root"] / "labels.json"  # the images (root/raw/images) lie under its folder
    summary, _ = label(
        world["raw"], "-o", output, "--teacher-dir", world["exp"], "--conf", "0", "--batch", "2",
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert summary["teacher"]["kind"] == "teacher-dir" and summary["computed"] == RAW_IMAGES
    coco = check_coco(output, summary, masks=True)
    assert len(coco["images"]) == RAW_IMAGES  # every image listed, detections or not
    assert coco["images"][0]["file_name"] == "raw/images/img_7_000.png"
    assert all(isinstance(a["segmentation"], dict) and a["segmentation"]["size"] == [64, 64]
               for a in coco["annotations"] if "segmentation" in a)  # fmt: skip
    train = read_json(world["train"])
    assert coco["categories"] == [{**c, "supercategory": ""} for c in train["categories"]]

    # polygons for tools that edit them better; the teacher output comes from the cache this time
    polygons = tmp_path / "out" / "polygons.json"
    summary, _ = label(
        world["raw"], "-o", polygons, "--teacher-dir", world["exp"], "--conf", "0", "--batch", "2",
        "--cache-dir", tmp_path / "cache", "--mask-format", "polygon",
    )  # fmt: skip
    assert summary["computed"] == 0 and summary["cached"] == RAW_IMAGES
    assert summary["images_root"] == str(world["raw"].resolve())  # images elsewhere: validate --images-dir
    coco = check_coco(polygons, summary, masks=True)
    shapes = [a["segmentation"] for a in coco["annotations"] if "segmentation" in a]
    assert shapes and all(isinstance(s, list) and all(len(p) >= 6 for p in s) for s in shapes)


def test_zero_shot_classes_with_base_weights(world: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "zero_shot.json"
    summary, _ = label(
        world["raw"], "-o", output, "--classes", "red, green", "--dino-weights", world["dino"],
        "--sam-weights", world["sam"], "--conf", "0", "--batch", "4", "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert summary["teacher"]["kind"] == "zero-shot" and summary["teacher"]["prompt"] == "red . green ."
    coco = check_coco(output, summary, masks=True)
    assert [c["name"] for c in coco["categories"]] == ["red", "green"]
    assert coco["info"]["distillkit"]["teacher"]["kind"] == "zero-shot"

    # boxes only without SAM; other weights are another teacher, so nothing comes from the cache
    summary, _ = label(
        world["raw"], "-o", tmp_path / "boxes.json", "--classes", "red", "--dino-weights", world["dino"],
        "--conf", "0", "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert summary["computed"] == RAW_IMAGES and summary["masks"] == 0
    check_coco(tmp_path / "boxes.json", summary, masks=False)


def test_yolo_checkpoint_teacher_keeps_its_category_ids(world: dict[str, Path], tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "yolo" / "best.pt", task="segment", imgsz=64, score_logit=1.0)
    output = tmp_path / "yolo.json"
    summary, _ = label(
        world["raw"], "-o", output, "--teacher", checkpoint, "--imgsz", "64", "--conf", "0.5",
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert summary["teacher"]["kind"] == "ultralytics" and summary["annotations"] > 0
    coco = check_coco(output, summary, masks=False)
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(5, "square"), (9, "disc")]  # train-student's ids
    assert all(a["score"] >= 0.5 for a in coco["annotations"])

    subset, _ = label(
        world["raw"], "-o", tmp_path / "disc.json", "--teacher", checkpoint, "--classes", "disc", "--imgsz", "64",
        "--conf", "0.5", "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    coco = check_coco(tmp_path / "disc.json", subset, masks=False)
    assert coco["categories"][0]["id"] == 9 and {a["category_id"] for a in coco["annotations"]} <= {9}


def test_calibrated_thresholds_of_the_teacher_dir_gate_the_labels(world: dict[str, Path], tmp_path: Path) -> None:
    from distillkit.labelling.calibration import TeacherCalibration

    exp = tmp_path / "exp"
    shutil.copytree(world["exp"], exp)
    calibration = TeacherCalibration(
        class_names=["red", "green", "blue"], thresholds=[1.0, 0.0, 1.0], threshold_source=["class best F1"] * 3,
        ap=0.5, ap50=0.5, per_class_ap=[0.5] * 3, per_class_instances=[1] * 3, num_images=2, num_detections=3,
        teacher_identity="", validation="val.json",
    )  # fmt: skip
    (exp / "teachers" / "calibration.json").write_text(json.dumps(calibration.to_dict()))
    args = [world["raw"], "--teacher-dir", exp, "--cache-dir", tmp_path / "cache"]
    gated, _ = label(*args, "-o", tmp_path / "gated.json")
    assert gated["threshold_source"] == "calibrated per class"
    assert gated["thresholds"] == {"red": 1.0, "green": 0.0, "blue": 1.0}
    assert gated["annotations"] == gated["per_class"]["green"] > 0  # scores never reach 1.0
    # an explicit --conf is one gate for every class; the teacher's outputs come from the cache
    everything, _ = label(*args, "-o", tmp_path / "all.json", "--conf", "0")
    assert everything["threshold_source"] == "global (--conf)" and everything["cached"] == RAW_IMAGES
    assert everything["per_class"]["red"] > 0


# ------------------------------------------------------------------------------------------------
# screening


def test_exclude_and_repeats_are_skipped_and_counted(world: dict[str, Path], tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(world["raw"], source)
    shutil.copy(source / "img_7_003.png", source / "zz_repeat.png")  # the same content twice in the source
    test_split = tmp_path / "test"
    (test_split / "images").mkdir(parents=True)
    shutil.copy(source / "img_7_005.png", test_split / "images" / "renamed.png")  # a test image, renamed
    (test_split / "test.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "renamed.png", "width": 64, "height": 64}],
                "annotations": [],
                "categories": [{"id": 1, "name": "red"}],
            }
        )
    )
    output = tmp_path / "labels.json"
    summary, _ = label(
        source, "-o", output, "--teacher-dir", world["exp"], "--conf", "0", "--exclude", test_split / "test.json",
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert summary["skipped"] == {"excluded": 1, "duplicates": 1, "beyond_max_images": 0}
    assert summary["exclude"] == {"files": [str(test_split / "test.json")], "images": 1, "missing": 0}
    coco = check_coco(output, summary, masks=True)
    names = {image["file_name"] for image in coco["images"]}
    assert len(names) == RAW_IMAGES - 1 and "img_7_005.png" not in names and "zz_repeat.png" not in names

    # an excluded dataset none of whose images can be found screens nothing: an error, not a notice
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(test_split / "test.json", tmp_path / "elsewhere" / "test.json")
    unfound = run_cli(
        "label", source, "-o", tmp_path / "leak.json", "--teacher-dir", world["exp"],
        "--exclude", tmp_path / "elsewhere" / "test.json", "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert unfound.exit_code != 0 and not (tmp_path / "leak.json").exists()
    lines = [line for line in unfound.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "none of the 1 images" in lines[0] and "--exclude-images-dir" in lines[0], lines
    assert "Traceback" not in unfound.output

    limited, _ = label(
        source, "-o", tmp_path / "few.json", "--teacher-dir", world["exp"], "--conf", "0", "--max-images", "3",
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert limited["images"] == 3 and limited["cached"] == 3 and limited["hashed"] == 0  # keys remembered


def test_usage_errors_are_one_line(world: dict[str, Path], tmp_path: Path) -> None:
    cases = [
        (["label", world["raw"], "-o", tmp_path / "a.json"], "no teacher given"),
        (["label", world["raw"], "-o", world["raw"] / "a.json", "--teacher-dir", world["exp"]], "inside the input"),
        (["label", world["raw"], "-o", tmp_path / "a.json", "--teacher-dir", world["exp"], "--mask-format", "x"],
         "--mask-format x"),
        (["label", world["raw"], "-o", tmp_path / "a.json", "--sam-weights", world["sam"]], "--classes"),
        (["label", world["raw"], "-o", tmp_path / "a.json", "--classes", "red", "--dino-weights", tmp_path / "none"],
         "--dino-weights"),
    ]  # fmt: skip
    for args, expected in cases:
        result = run_cli(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert expected in lines[0], lines[0]
        assert not (tmp_path / "a.json").exists()


# ------------------------------------------------------------------------------------------------
# resume


def _cache_entries(cache: Path) -> int:
    return len(list(cache.glob("*/*.json")))


def _killed_run(command: list[str], cache: Path, env: dict[str, str]) -> int | None:
    """Start `label`, SIGKILL it once the cache holds some but not all entries; the entries left (None: missed)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if 0 < _cache_entries(cache) < RAW_IMAGES:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    left = _cache_entries(cache)
    return left if process.returncode == -signal.SIGKILL and 0 < left < RAW_IMAGES else None


def test_resume_after_sigkill_computes_only_the_missing_images(world: dict[str, Path], tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    output = tmp_path / "labels.json"
    common = [world["raw"], "--teacher-dir", world["exp"], "--conf", "0", "--batch", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    left = None
    for attempt in range(3):  # a kill that lands after the last entry proves nothing: try again
        cache = tmp_path / f"cache{attempt}"
        command = [sys.executable, "-m", "distillkit", "label", *map(str, common), "-o", str(output),
                   "--device", "cpu", "--cache-dir", str(cache)]  # fmt: skip
        left = _killed_run(command, cache, env)
        if left is not None:
            break
    assert left is not None, "the labelling run was never caught half-way"
    assert not output.exists()  # the COCO file is written whole, at the end, or not at all

    resumed, _ = label(*common, "-o", output, "--cache-dir", cache)
    assert resumed["computed"] == RAW_IMAGES - left and resumed["cached"] == left
    assert resumed["hashed"] == 0  # the killed run's content keys were remembered
    check_coco(output, resumed, masks=True)

    clean_output = tmp_path / "clean" / "labels.json"
    clean, _ = label(*common, "-o", clean_output, "--cache-dir", tmp_path / "clean_cache")
    assert clean["computed"] == RAW_IMAGES
    resumed_coco, clean_coco = read_json(output), read_json(clean_output)
    assert resumed_coco["images"] == clean_coco["images"]
    assert len(resumed_coco["annotations"]) == len(clean_coco["annotations"])
    for a, b in zip(resumed_coco["annotations"], clean_coco["annotations"], strict=True):
        assert (a["id"], a["image_id"], a["category_id"]) == (b["id"], b["image_id"], b["category_id"])
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3) and a["score"] == pytest.approx(b["score"], abs=1e-5)
        # batches of other images around an image may move a float in the last bit, never a mask
        assert ("segmentation" in a) == ("segmentation" in b)
        if "segmentation" in a:
            masks = [{**m, "counts": m["counts"].encode()} for m in (a["segmentation"], b["segmentation"])]
            assert mask_utils.iou(masks[:1], masks[1:], [0])[0][0] > 0.95
