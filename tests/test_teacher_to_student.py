"""Real (tiny, random-weight) Grounding DINO + SAM teachers through train-teacher -> train-student --teacher-dir.

No ``--unlabeled``: the teachers label the training images by default (issue 13). Their numbers mean
nothing (random weights); what is checked is that every component runs and says what it did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.test_teachers import TINY_SETS, run_cli
from tests.tiny_sam import write_tiny_sam
from tests.tiny_teachers import write_shapes_dataset, write_tiny_grounding_dino

pytestmark = pytest.mark.usefixtures("torch_one_thread")

STUDENT = [
    "--student", "yolov8n-seg", "--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu",
    "--set", "student.nbs=4", "--set", "student.plots=false", "--set", "student.workers=0",
    "--set", "student.warmup_epochs=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both teachers trained one epoch on masks-only data (boxes derived by validate)."""
    root = tmp_path_factory.mktemp("teacher_to_student")
    data = root / "data"
    world = {
        "train": write_shapes_dataset(data, 4, "masks", seed=0, name="train.json"),
        "val": write_shapes_dataset(data, 2, "masks", seed=1, name="val.json"),
        "exp": root / "exp",
    }
    result = run_cli(
        "train-teacher", "-d", world["train"], "-v", world["val"], "-o", world["exp"],
        "--dino-weights", write_tiny_grounding_dino(root / "dino"), "--sam-weights", write_tiny_sam(root / "sam"),
        "--epochs", "1", "--batch", "2", "--device", "cpu", *TINY_SETS,
        "--set", "teacher_grounding_dino_lora.box_threshold=0.0",  # random weights score low: keep their boxes
        "--set", "teacher_grounding_dino_lora.text_threshold=0.0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return world


def test_teacher_scoring_zero_on_val_stops_the_run_with_one_line(teachers: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "student"
    result = run_cli(
        "train-student", "-d", teachers["train"], "-v", teachers["val"], "-o", out,
        "--teacher-dir", teachers["exp"], *STUDENT,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "the teacher scores AP 0.0" in line and "teacher_min_ap=0.05" in line and "--force-teacher" in line
    assert "Traceback" not in result.output
    calibration = json.loads((out / "teacher_calibration.json").read_text())
    assert calibration["ap"] < 0.05 and calibration["num_images"] == 2
    assert not (out / "train").exists()  # nothing was trained


def test_teacher_dir_without_unlabeled_labels_training_images_with_soft_targets(
    teachers: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "student"
    result = run_cli(
        "train-student", "-d", teachers["train"], "-v", teachers["val"], "-o", out,
        "--teacher-dir", teachers["exp"], "--force-teacher", *STUDENT, "--json",
        "--set", "distillation.calibrate_thresholds=false", "--set", "distillation.pseudo_label_conf=0.0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    components = document["distillation"]
    for name in ("pseudo_labels", "soft_targets", "mask_quality"):
        assert components[name]["active"], (name, components[name])
    assert not components["calibrated_thresholds"]["active"]
    assert "used anyway" in result.stderr  # the forced teacher's low score is said, not hidden
    labels = document["pseudo_labels"]
    assert labels["train_images_labelled"] == 4 and labels["unlabeled_images"] == 0
    assert labels["train_labels_added"] > 0 and labels["teacher_ap"] is not None
    assert labels["computed"] == 4  # the 2 validation images were labelled (and cached) when scoring the teacher
    table = json.loads((out / "yolo_data" / "soft_targets.json").read_text())
    rows = table["rows"]
    assert len(rows) == labels["train_labels_added"] + labels["ground_truth_soft_targets"]
    assert all(len(row) == 2 + 3 for row in rows)  # score, mask quality, the three class scores
    assert any(row[1] < 1.0 for row in rows)  # SAM's predicted IoU weights the masks
    assert sum(len(entries) for entries in table["images"].values()) == len(rows)
    assert labels["soft_targets_matched"] == len(rows)  # every row found its label line in ultralytics' dataset
    config = yaml.safe_load((out / "distillation_config.yaml").read_text())["distillation"]
    assert config["teacher_dir"] == str(teachers["exp"].resolve()) and config["soft_targets"] is True
    metadata = json.loads((out / "metadata.json").read_text())["extra"]
    assert metadata["pseudo_labels"]["train_labels_added"] == labels["train_labels_added"]
    stored = json.loads((teachers["exp"] / "teachers" / "calibration.json").read_text())
    assert stored["class_names"] == ["red", "green", "blue"] and stored["teacher_identity"]


def test_every_label_keeps_its_row_through_ultralytics_training_augmentations(
    teachers: dict[str, Path], tmp_path: Path
) -> None:
    """Mosaic, random perspective, copy-paste, mixup and flips keep every encoded value exact.

    A value rounded anywhere (a float32 cast, say) would decode into another class or a row that belongs
    to another class's label.
    """
    import torch

    from distillkit.students.soft_targets import (
        SoftTargetSettings,
        decode_batch,
        load_soft_targets,
        soft_target_dataset,
    )
    from distillkit.ultralytics_env import import_ultralytics

    out = tmp_path / "student"
    result = run_cli(
        "train-student", "-d", teachers["train"], "-v", teachers["val"], "-o", out,
        "--teacher-dir", teachers["exp"], "--force-teacher", *STUDENT,
        "--set", "distillation.calibrate_thresholds=false", "--set", "distillation.pseudo_label_conf=0.0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import_ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    root = out / "yolo_data"
    data = check_det_dataset(str(root / "dataset.yaml"))
    cfg = get_cfg(overrides={"task": "segment", "imgsz": 64, "mosaic": 1.0, "copy_paste": 0.5, "mixup": 0.5,
                             "degrees": 10.0, "fliplr": 0.5})  # fmt: skip
    dataset = build_yolo_dataset(cfg, data["train"], 4, data, mode="train")
    settings = SoftTargetSettings(root / "soft_targets.json", num_classes=3)
    assert soft_target_dataset(dataset, settings, load_soft_targets(settings)[1]) > 0
    table = json.loads(settings.table_file.read_text())
    class_of_row = {int(e[0]): int(e[1]) for entries in table["images"].values() for e in entries}
    seen_rows = 0
    torch.manual_seed(0)
    for index in range(len(dataset)):
        sample = dataset[index]
        batch = decode_batch({"cls": sample["cls"]}, settings.base)
        classes, rows = batch["cls"].view(-1).long().tolist(), batch["soft_row"].tolist()
        assert all(0 <= c < 3 for c in classes)
        for c, row in zip(classes, rows, strict=True):
            if row >= 0:
                assert class_of_row[row] == c  # the row travelled with its own label
                seen_rows += 1
    assert seen_rows > 0
