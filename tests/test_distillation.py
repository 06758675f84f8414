"""Distillation in `train-student`: pseudo-labels, KD loss terms, the teacher cache, teacher wiring."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from distillkit.errors import DataError, UsageError
from distillkit.labelling.types import TeacherPrediction
from distillkit.students.kd_loss import anchor_weights, build_projectors, dfl_kd, feature_kd, logit_kd
from distillkit.students.pseudo_labels import merge_with_ground_truth, prediction_annotations
from distillkit.students.train import train_student
from distillkit.students.yolo_teacher import YoloTeacher, teacher_class_index
from tests.test_cli import run
from tests.test_train_student import FAST, make_shapes

# tiny teachers score ~0: neither refused nor declared ignorant of every class
TINY = [
    *FAST,
    "student.epochs=2",
    "student.imgsz=64",
    "distillation.teacher_min_ap=0",
    "distillation.unknown_class_ap=0",
]
KD_OFF = ["distillation.logit_weight=0", "distillation.dfl_weight=0", "distillation.feature_weight=0"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Training and validation sets, and a folder of 16 unlabelled images of the same kind."""
    root = tmp_path_factory.mktemp("shapes")
    unlabeled = make_shapes(root / "unlabeled", 16, 2).parent / "images"
    return make_shapes(root / "train", 48, 0), make_shapes(root / "val", 16, 1), unlabeled


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))


@pytest.fixture(scope="module")
def yolo_teacher(shapes: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A yolov8s checkpoint with the dataset's classes (one epoch: the KD plumbing, not its quality, is tested)."""
    train, val, _ = shapes
    out = tmp_path_factory.mktemp("teacher") / "run"
    train_student(train, val, out, overrides=[*FAST, "student.model=yolov8s", "student.epochs=1", "student.imgsz=64"])
    return out / "best.pt"


def _rows(results_csv: Path) -> list[dict[str, float]]:
    with open(results_csv, newline="") as handle:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


# ------------------------------------------------------------------------------------------------
# KD with a YOLO teacher


def test_kd_terms_are_trained_logged_and_kept_out_of_the_checkpoint(
    shapes: tuple[Path, Path, Path], yolo_teacher: Path, tmp_path: Path
) -> None:
    train, val, unlabeled = shapes
    out = tmp_path / "student"
    class_masks: list[list[float]] = []

    def record_class_mask(trainer: object) -> None:
        criterion = trainer.model.criterion  # type: ignore[attr-defined]
        class_masks.append(criterion.class_mask.tolist())

    result = train_student(
        train,
        val,
        out,
        overrides=[
            *TINY,
            f"distillation.ultralytics_teacher={yolo_teacher}",
            f"distillation.unlabeled_images={unlabeled}",
            "distillation.teacher_conf=0.01",
            "distillation.unknown_classes=[disc]",  # as if --val had shown the teacher cannot find discs
        ],
        callbacks={"on_train_epoch_end": record_class_mask},
    )
    assert class_masks == [[1.0, 0.0]] * 2  # logit KD leaves the disc class out
    assert result.pseudo_labels["unknown_classes"] == ["disc"] and result.pseudo_labels["ignore_regions"] == 16
    components = result.distillation
    assert all(
        components[name]["active"] for name in ("pseudo_labels", "logit_kd", "dfl_kd", "feature_kd", "weight_selection")
    )
    assert not components["ultralytics_distill"]["active"]
    # the scratch yolov8n started from weights selected out of the yolov8s teacher (every other channel)
    start = torch.load(out / "student_init.pt", map_location="cpu", weights_only=False)["model"].state_dict()
    teacher_checkpoint = torch.load(yolo_teacher, map_location="cpu", weights_only=False)
    teacher_state = (teacher_checkpoint["ema"] or teacher_checkpoint["model"]).float().state_dict()
    assert torch.equal(start["model.0.conv.weight"], teacher_state["model.0.conv.weight"][::2])
    assert torch.equal(start["model.2.cv1.conv.weight"], teacher_state["model.2.cv1.conv.weight"][::2, ::2] * 2)
    rows = _rows(out / "results.csv")
    assert len(rows) == 2
    for row in rows:
        for column in ("train/kd_logit", "train/kd_dfl", "train/kd_feat"):
            assert math.isfinite(row[column]) and row[column] > 0, column
    # the yolov8s teacher's 128/256/512 neck channels are reached through trained 1x1 projectors
    projectors = torch.load(out / "train" / "weights" / "kd_projectors.pt", map_location="cpu")
    assert [tuple(projectors[f"{i}.weight"].shape[:2]) for i in range(3)] == [(128, 64), (256, 128), (512, 256)]
    checkpoint = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    parameters = sum(p.numel() for p in checkpoint["model"].parameters())
    assert parameters < 3_500_000  # the yolov8n student alone: no teacher, no projectors inside
    # every unlabelled and training image went through the teacher once (training images are labelled by
    # default), and so did the 16 validation images it was scored on first; all sit in the cache
    assert result.pseudo_labels["unlabeled_images"] == 16 and result.pseudo_labels["train_images_labelled"] == 48
    assert result.pseudo_labels["computed"] == 16 + 48 and result.pseudo_labels["teacher_ap"] is not None
    assert len(list((out / "cache" / "teacher_outputs").rglob("*.json"))) == 16 + 48 + 16
    assert yaml.safe_load((out / "yolo_data" / "dataset.yaml").read_text())["train"] == [
        "images/train",
        "images/pseudo",
    ]


def test_ultralytics_distill_model_option(shapes: tuple[Path, Path, Path], yolo_teacher: Path, tmp_path: Path) -> None:
    train, val, _ = shapes
    result = train_student(
        train,
        val,
        tmp_path / "s",
        overrides=[
            *TINY,
            "student.epochs=1",
            f"distillation.ultralytics_teacher={yolo_teacher}",
            "distillation.use_ultralytics_distill_model=true",
        ],
    )
    assert result.distillation["ultralytics_distill"]["active"]
    assert not result.distillation["logit_kd"]["active"] and "replaced" in result.distillation["logit_kd"]["reason"]
    assert "train/dis_loss" in _rows(tmp_path / "s" / "results.csv")[0]
    config = yaml.safe_load((tmp_path / "s" / "distillation_config.yaml").read_text())["distillation"]
    assert config["logit_weight"] == 0.0 and config["feature_weight"] == 0.0 and config["dfl_weight"] == 0.0


def test_teacher_with_other_class_names_is_refused(
    shapes: tuple[Path, Path, Path], yolo_teacher: Path, tmp_path: Path
) -> None:
    train, _, _ = shapes
    other = json.loads(train.read_text())
    other["categories"][1]["name"] = "triangle"
    renamed = train.parent / "renamed.json"
    renamed.write_text(json.dumps(other))
    code, _, err = run(
        "train-student",
        "-d",
        str(renamed),
        "-v",
        str(renamed),
        "-o",
        str(tmp_path / "s"),
        "--teacher",
        str(yolo_teacher),
    )
    assert code == 2 and err.count("\n") == 1
    assert "['triangle']" in err and "['square', 'disc']" in err and "['square', 'triangle']" in err


def test_yolo_teacher_identity_follows_weights_and_settings(yolo_teacher: Path) -> None:
    first = YoloTeacher(yolo_teacher, ["disc", "square"], conf=0.1, imgsz=64)
    assert first.class_names == ["disc", "square"] and first.class_index == [1, 0]  # mapped by name
    assert first.identity == YoloTeacher(yolo_teacher, ["disc", "square"], conf=0.1, imgsz=64).identity
    assert first.identity != YoloTeacher(yolo_teacher, ["disc", "square"], conf=0.2, imgsz=64).identity
    with pytest.raises(UsageError, match="not found"):
        YoloTeacher(yolo_teacher.parent / "missing.pt", ["disc"])


# ------------------------------------------------------------------------------------------------
# --teacher-dir wiring, pseudo-labels and the cache, with a fake teacher


class FakeTeacher:
    """Two detections per image: a confident square top-left, a doubtful disc bottom-right."""

    identity = "fake-teacher-1"

    def __init__(self, class_names: Sequence[str]) -> None:
        self._names = list(class_names)
        self.images_seen = 0

    @property
    def class_names(self) -> list[str]:
        return list(self._names)

    def predict(self, images: Sequence[Path]) -> list[TeacherPrediction]:
        self.images_seen += len(images)
        predictions = []
        for path in images:
            width, height = Image.open(path).size
            predictions.append(
                TeacherPrediction(
                    width=width,
                    height=height,
                    boxes=[[2, 2, 22, 22], [90, 90, 120, 120]],
                    scores=[0.9, 0.3],
                    class_ids=[0, 1],
                    class_scores=[[0.9, 0.05], [0.1, 0.3]],
                )
            )
        return predictions


def test_teacher_dir_pseudo_labels_and_cache_hit_on_resume(
    shapes: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val, unlabeled = shapes
    fake = FakeTeacher(["square", "disc"])
    loads: list[tuple[Path, str, int]] = []

    def load_teacher(exp_dir: Path, device: str = "cpu", batch_size: int = 8) -> FakeTeacher:
        loads.append((Path(exp_dir), device, batch_size))
        return fake

    import distillkit.teachers  # the folder loader train-student reaches through labelling

    monkeypatch.setitem(vars(distillkit.teachers), "load_teacher", load_teacher)
    teachers = tmp_path / "exp"
    teachers.mkdir()
    out = tmp_path / "student"

    def interrupt(trainer: object) -> None:
        if trainer.epoch == 1:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    settings = [
        *TINY,
        f"distillation.teacher_dir={teachers}",
        f"distillation.unlabeled_images={unlabeled}",
        "distillation.label_train_images=true",
    ]
    with pytest.raises(KeyboardInterrupt):
        train_student(train, val, out, overrides=settings, callbacks={"on_train_epoch_start": interrupt})
    # scored on the 16 validation images first, then the 48 training and 16 unlabelled images labelled
    assert loads == [(teachers, "cpu", 8)] and fake.images_seen == 16 + 48 + 16

    pseudo = sorted((out / "yolo_data" / "labels" / "pseudo").glob("*.txt"))
    assert len(pseudo) == 16
    assert all(p.read_text().split()[0] == "0" and len(p.read_text().splitlines()) == 1 for p in pseudo)  # 0.3 < 0.5
    gt = json.loads(train.read_text())
    train_lines = sum(len(p.read_text().splitlines()) for p in (out / "yolo_data" / "labels" / "train").glob("*.txt"))
    assert len(gt["annotations"]) < train_lines <= len(gt["annotations"]) + 48  # teacher boxes added, some deduplicated

    config = yaml.safe_load((out / "distillation_config.yaml").read_text())["distillation"]
    assert config["teacher_dir"] == str(teachers) and config["logit_weight"] == 0.0 and config["feature_weight"] == 0.0
    components = json.loads((out / "metadata.json").read_text())["extra"]["distillation"]["components"]
    assert components["pseudo_labels"]["active"] and not components["logit_kd"]["active"]
    assert "YOLO teacher" in components["logit_kd"]["reason"]

    # the resumed run rebuilds the teacher from the saved config and reads every prediction from the cache
    resumed = train_student(train, val, out, overrides=TINY, resume=True)
    assert len(loads) == 2 and fake.images_seen == 80
    assert resumed.pseudo_labels["cache_hits"] == 64 and resumed.pseudo_labels["computed"] == 0
    assert resumed.dataset.reused and resumed.epochs_run == 2
    rows = json.loads((out / "yolo_data" / "soft_targets.json").read_text())["rows"]
    assert len(rows) > 16 and resumed.pseudo_labels["soft_targets_matched"] == len(rows)  # detection boxes match too


class SquaresOnlyTeacher(FakeTeacher):
    """Finds every square exactly (from the ground truth next to the image) and never a disc."""

    identity = "squares-only-1"

    def predict(self, images: Sequence[Path]) -> list[TeacherPrediction]:
        predictions = []
        for path in images:
            coco = json.loads((Path(path).parent.parent / "annotations.json").read_text())
            image = next(i for i in coco["images"] if Path(i["file_name"]).name == Path(path).name)
            squares = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"] and a["category_id"] == 5]
            predictions.append(
                TeacherPrediction(
                    width=image["width"],
                    height=image["height"],
                    boxes=[[x, y, x + w, y + h] for x, y, w, h in squares],
                    scores=[0.9] * len(squares),
                    class_ids=[0] * len(squares),
                    class_scores=[[0.9, 0.0]] * len(squares),
                )
            )
        return predictions


def test_a_class_the_teacher_never_finds_is_not_taught_as_background_on_unlabelled_images(
    shapes: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val, unlabeled = shapes
    teacher = SquaresOnlyTeacher(["square", "disc"])
    import distillkit.teachers  # the folder loader train-student reaches through labelling

    monkeypatch.setitem(vars(distillkit.teachers), "load_teacher", lambda *a, **k: teacher)
    (tmp_path / "exp").mkdir()
    out = tmp_path / "student"
    settings = [
        *FAST, "student.epochs=1", "student.imgsz=64",
        f"distillation.teacher_dir={tmp_path / 'exp'}", f"distillation.unlabeled_images={unlabeled}",
    ]  # fmt: skip
    result = train_student(train, val, out, overrides=settings)
    labels = result.pseudo_labels
    assert labels["unknown_classes"] == ["disc"] and labels["ignore_regions"] == 16
    assert labels["teacher_ap"] == pytest.approx(0.5, abs=0.01) and set(labels["labels_per_class"]) == {"square"}
    assert any("does not know disc" in notice for notice in result.notices)
    config = yaml.safe_load((out / "distillation_config.yaml").read_text())["distillation"]
    assert config["unknown_classes"] == ["disc"]  # decided on --val, written down (a resumed run reuses it)

    # every pool image carries one whole-image region line whose row ignores the disc class only
    table = json.loads((out / "yolo_data" / "soft_targets.json").read_text())
    regions = [
        (key, entry) for key, entries in table["images"].items() for entry in entries if table["rows"][entry[0]][0] < 0
    ]
    assert len(regions) == 16 and all(key.startswith("pseudo/") for key, _ in regions)
    assert all(entry[1:] == [1, 0.5, 0.5, 1.0, 1.0] for _, entry in regions)
    assert all(table["rows"][entry[0]][2:] == [0.0, 1.0] for _, entry in regions)
    pool_lines = [p.read_text().splitlines() for p in (out / "yolo_data" / "labels" / "pseudo").glob("*.txt")]
    assert all(lines[-1] == "1 0.500000 0.500000 1.000000 1.000000" for lines in pool_lines)
    assert labels["soft_targets_matched"] == len(table["rows"])  # the regions reached ultralytics' dataset too
    assert result.dataset.label_counts["pseudo"] == labels["unlabeled_labels"]  # regions are not labels


def test_a_given_teacher_is_used_by_default_and_refused_when_it_could_change_nothing() -> None:
    # `--teacher-dir EXP` alone used to load the teachers and then change nothing, with a notice (issue 13)
    from distillkit.config import build_config
    from distillkit.students.distillation import plan_distillation
    from distillkit.students.train import STUDENT_SECTIONS

    config = build_config(STUDENT_SECTIONS)
    plan = plan_distillation(config, ["square", "disc"], "detect", 16, "cpu", teacher=FakeTeacher(["square", "disc"]))
    assert plan.active and not plan.notices
    for name in ("pseudo_labels", "soft_targets", "calibrated_thresholds"):
        assert plan.components[name].active, name
    assert not plan.components["mask_quality"].active  # a detection student has no masks to weight
    config = build_config(STUDENT_SECTIONS, overrides=["distillation.label_train_images=false"])
    with pytest.raises(UsageError, match=r"would contribute nothing.*label_train_images is false"):
        plan_distillation(config, ["square", "disc"], "detect", 16, "cpu", teacher=FakeTeacher(["square", "disc"]))


class SilentTeacher(FakeTeacher):
    """Finds nothing anywhere: a teacher that contributes nothing."""

    identity = "silent-teacher-1"

    def predict(self, images: Sequence[Path]) -> list[TeacherPrediction]:
        return [TeacherPrediction(128, 128, np.zeros((0, 4)), [], [], np.zeros((0, 2))) for _ in images]


def test_a_teacher_that_contributes_nothing_is_an_error(shapes: tuple[Path, Path, Path], tmp_path: Path) -> None:
    train, val, _ = shapes
    with pytest.raises(DataError, match=r"contributed nothing.*48 images"):
        train_student(train, val, tmp_path / "s", overrides=TINY, teacher=SilentTeacher(["square", "disc"]))
    assert not (tmp_path / "s" / "train").exists()


def test_exclude_keeps_held_out_images_out_of_the_unlabelled_pool(
    shapes: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    import shutil

    from distillkit.labelling.postprocess import LabelFilter
    from distillkit.labelling.sources import ImageKeyIndex, excluded_images
    from distillkit.students.pseudo_labels import PseudoLabelReport, label_unlabeled_images

    train, val, unlabeled = shapes
    held_out = make_shapes(tmp_path / "test", 3, 7)  # a test split: its images must never be trained on
    pool = tmp_path / "pool"
    shutil.copytree(unlabeled, pool)
    test_images = sorted((held_out.parent / "images").iterdir())
    shutil.copyfile(test_images[0], pool / "renamed_copy_of_a_test_image.png")
    shutil.copyfile(test_images[1], pool / "another.png")
    shutil.copyfile(sorted(pool.iterdir())[0], pool / "zz_duplicate_inside_the_pool.png")
    report = PseudoLabelReport()
    coco, _ = label_unlabeled_images(
        sorted(pool.iterdir()),
        [{"id": 5, "name": "square"}, {"id": 9, "name": "disc"}],
        FakeTeacher(["square", "disc"]),
        tmp_path / "cache",
        label_filter=LabelFilter([0.5, 0.5]),
        with_masks=False,
        report=report,
        exclude_keys=excluded_images([held_out], ImageKeyIndex()).keys,
    )
    assert report.skipped_duplicate_images == 3 and len(coco["images"]) == 16
    names = {image["file_name"] for image in coco["images"]}
    assert "renamed_copy_of_a_test_image.png" not in names and "zz_duplicate_inside_the_pool.png" not in names
    code, _, err = run("train-student", "-d", str(train), "-v", str(val), "-o", str(tmp_path / "x"),
                       "--teacher-dir", str(tmp_path), "--exclude", str(tmp_path / "missing.json"))  # fmt: skip
    assert code == 2 and "--exclude" in err and "missing.json" in err


def test_teacher_dir_that_is_not_a_folder_is_a_usage_error(shapes: tuple[Path, Path, Path], tmp_path: Path) -> None:
    train, val, _ = shapes
    code, _, err = run(
        "train-student",
        "-d",
        str(train),
        "-v",
        str(val),
        "-o",
        str(tmp_path / "s"),
        "--teacher-dir",
        str(tmp_path / "x"),
    )
    assert code == 2 and "--teacher-dir" in err and "not a folder" in err


def test_unlabeled_without_a_teacher_is_a_usage_error(shapes: tuple[Path, Path, Path], tmp_path: Path) -> None:
    # it used to be ignored silently: the run trained on the ground truth alone
    train, val, unlabeled = shapes
    out = tmp_path / "s"
    code, _, err = run("train-student", "-d", str(train), "-v", str(val), "-o", str(out), "--unlabeled", str(unlabeled))
    assert code == 2 and err.count("\n") == 1 and "needs a teacher" in err and "--teacher" in err
    assert not out.exists()


def test_bad_teacher_and_unlabeled_inputs_fail_before_anything_is_written(
    shapes: tuple[Path, Path, Path], yolo_teacher: Path, tmp_path: Path
) -> None:
    train, val, _ = shapes
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    out = tmp_path / "s"
    common = ["train-student", "-d", str(train), "-v", str(val), "-o", str(out)]
    code, _, err = run(*common, "--teacher", str(yolo_teacher), "--unlabeled", str(tmp_path / "empty"))
    assert code == 2 and err.count("\n") == 1 and "no images in --unlabeled" in err
    assert not out.exists()  # the folder check comes before the config is written
    code, _, err = run(*common, "--teacher", str(tmp_path / "notes.txt"))
    assert code == 2 and "is not a .pt checkpoint" in err and "not found" not in err


# ------------------------------------------------------------------------------------------------
# units


def test_merge_drops_teacher_duplicates_of_ground_truth_and_low_scores() -> None:
    prediction = TeacherPrediction(
        width=100,
        height=100,
        boxes=[[10, 10, 30, 30], [11, 11, 31, 31], [60, 60, 90, 90], [0, 0, 5, 5]],
        scores=[0.9, 0.8, 0.7, 0.2],
        class_ids=[0, 1, 1, 0],
    )
    gt = np.array([[10, 10, 30, 30]])
    kept, dropped = merge_with_ground_truth(prediction, gt, min_score=0.5, merge_iou=0.6)
    assert dropped == 2  # the exact copy, and the shifted box (IoU 0.82) even with another class: GT wins
    assert kept.boxes.tolist() == [[60, 60, 90, 90]] and kept.class_ids.tolist() == [1]
    kept, dropped = merge_with_ground_truth(prediction, gt, min_score=0.5, merge_iou=0.9)
    assert dropped == 1 and len(kept) == 2  # IoU 0.82 is below this threshold: kept
    kept, dropped = merge_with_ground_truth(prediction, np.zeros((0, 4)), min_score=0.1, merge_iou=0.6)
    assert dropped == 0 and len(kept) == 4
    annotations = prediction_annotations(kept, image_id=7, category_ids=[5, 9], first_id=100, with_masks=False)
    assert [a["category_id"] for a in annotations] == [5, 9, 9, 5] and annotations[0]["bbox"] == [10, 10, 20, 20]
    assert [a["id"] for a in annotations] == [100, 101, 102, 103] and {a["image_id"] for a in annotations} == {7}


def test_class_index_maps_by_name_and_refuses_unknown_classes() -> None:
    assert teacher_class_index(["person", "Blood_cell", "dog"], ["dog", "blood cell"], "t.pt") == [2, 1]
    with pytest.raises(UsageError, match=r"does not know the dataset classes \['cat'\]"):
        teacher_class_index(["person", "dog"], ["dog", "cat"], "t.pt")


def test_kd_terms_vanish_when_the_student_matches_the_teacher() -> None:
    generator = torch.Generator().manual_seed(0)
    teacher_scores = torch.randn(2, 3, 50, generator=generator)
    weights = anchor_weights(teacher_scores)
    assert logit_kd(teacher_scores, teacher_scores, weights, 2.0).abs() < 1e-5
    assert logit_kd(torch.zeros_like(teacher_scores), teacher_scores, weights, 2.0) > 0.01
    boxes = torch.randn(2, 4 * 16, 50, generator=generator)
    assert dfl_kd(boxes, boxes, weights, 16, 2.0).abs() < 1e-5
    assert dfl_kd(torch.zeros_like(boxes), boxes, weights, 16, 2.0) > 0.01
    projectors = build_projectors([4, 8], [6, 10])
    student = [torch.randn(2, 4, 5, 5), torch.randn(2, 8, 5, 5)]
    teacher = [torch.randn(2, 6, 5, 5), torch.randn(2, 10, 5, 5)]
    loss = feature_kd(student, teacher, projectors, weights)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in projectors.parameters())  # the projectors learn


def test_logit_kd_leaves_out_the_classes_the_teacher_does_not_know() -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 50, generator=generator), torch.randn(2, 3, 50, generator=generator)
    weights = anchor_weights(teacher[:, [0, 2]])
    masked = logit_kd(student, teacher, weights, 2.0, class_mask=torch.tensor([1.0, 0.0, 1.0]))
    assert torch.isclose(masked, logit_kd(student[:, [0, 2]], teacher[:, [0, 2]], weights, 2.0), rtol=1e-5)
    assert masked < logit_kd(student, teacher, weights, 2.0)


# ------------------------------------------------------------------------------------------------
# weight selection (the student starts from weights selected out of the teacher's)


def _yolo_architecture(name: str, nc: int) -> torch.nn.Module:
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel(f"{name}.yaml", nc=nc, verbose=False)


def test_select_tensor_keeps_every_kth_channel_and_refuses_what_does_not_divide() -> None:
    from distillkit.students.weight_selection import select_tensor

    teacher = torch.arange(8 * 6, dtype=torch.float32).reshape(8, 6)
    assert torch.equal(select_tensor(teacher, (4, 6)), teacher[::2])
    assert torch.equal(select_tensor(teacher, (2, 3)), teacher[::4, ::2] * 2)  # half the inputs: twice the weight
    assert torch.equal(select_tensor(teacher, (2, 6), rows=[5, 1]), teacher[[5, 1]])
    assert select_tensor(teacher, (3, 6)) is None  # 8 is not a multiple of 3
    assert select_tensor(teacher, (16, 6)) is None  # the student is wider
    assert select_tensor(teacher, (4,)) is None  # other number of dimensions
    assert select_tensor(teacher, (2, 6), rows=[9, 1]) is None  # no such teacher row


def test_yolov8n_selected_from_yolov8s_computes_the_teachers_features() -> None:
    from distillkit.students.weight_selection import select_weights

    teacher, student = _yolo_architecture("yolov8s", 5), _yolo_architecture("yolov8n", 3)
    for module in teacher.modules():  # trained-looking BatchNorm statistics, so the check means something
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    report = select_weights(teacher, student, class_index=[4, 0, 2])
    assert report.fraction == 1.0 and not report.kept_random
    state, teacher_state = student.state_dict(), teacher.state_dict()
    head = f"model.{len(student.model) - 1}.cv3.0.2"
    assert torch.equal(state[f"{head}.bias"], teacher_state[f"{head}.bias"][[4, 0, 2]])
    assert torch.equal(state[f"{head}.weight"], teacher_state[f"{head}.weight"][[4, 0, 2], ::2] * 2)
    teacher.eval(), student.eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        first_student, first_teacher = student.model[0](image), teacher.model[0](image)
        assert torch.allclose(first_student, first_teacher[:, ::2])  # 3 input channels: exactly the teacher's
        deep_student, deep_teacher = first_student, first_teacher
        for layer in range(1, 10):  # through C2f chunks and SPPF's concatenation: still the same channels
            deep_student, deep_teacher = student.model[layer](deep_student), teacher.model[layer](deep_teacher)
    correlation = torch.corrcoef(torch.stack([deep_student.flatten(), deep_teacher[:, ::2].flatten()]))[0, 1]
    assert correlation > 0.9


def test_weight_selection_needs_a_teacher_of_the_students_family(yolo_teacher: Path) -> None:
    from types import SimpleNamespace

    from distillkit.students.distillation import DistillationPlan, _plan_weight_selection
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics import YOLO

    teacher = YoloTeacher(yolo_teacher, ["square", "disc"])
    on, off = SimpleNamespace(inherit_weights=True), SimpleNamespace(inherit_weights=False)
    plan = DistillationPlan()
    same_family = _plan_weight_selection(plan, on, teacher, YOLO("yolov8n.yaml"), ["square", "disc"])
    assert same_family.active and plan.student_init is not None
    assert plan.student_init.names == {0: "square", 1: "disc"}
    other_family = _plan_weight_selection(DistillationPlan(), on, teacher, YOLO("yolov5n.yaml"), ["square", "disc"])
    assert not other_family.active and "family" in other_family.reason
    assert not _plan_weight_selection(DistillationPlan(), off, teacher, YOLO("yolov8n.yaml"), []).active
    assert "trained weights" in _plan_weight_selection(DistillationPlan(), on, teacher, None, []).reason


def test_resumed_run_says_it_started_from_the_selected_weights(
    shapes: tuple[Path, Path, Path], yolo_teacher: Path, tmp_path: Path
) -> None:
    train, val, _ = shapes
    out = tmp_path / "student"

    def interrupt(trainer: object) -> None:
        if trainer.epoch == 1:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    settings = [*TINY, f"distillation.ultralytics_teacher={yolo_teacher}", *KD_OFF]
    with pytest.raises(KeyboardInterrupt):
        train_student(train, val, out, overrides=settings, callbacks={"on_train_epoch_start": interrupt})
    assert (out / "student_init.pt").is_file()
    resumed = train_student(train, val, out, overrides=TINY, resume=True)
    component = resumed.distillation["weight_selection"]
    assert resumed.epochs_run == 2 and component["active"] and "student_init.pt" in component["reason"]


def test_a_teacher_that_knows_no_class_is_an_error_not_a_crash(shapes: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Every class under unknown_class_ap on --val: no labels and no KD would be left. Before: IndexError in KD."""
    from tests.optimize_helpers import make_checkpoint

    train, val, unlabeled = shapes
    teacher = make_checkpoint(tmp_path / "teacher" / "best.pt", names=("square", "disc"), imgsz=64, score_logit=1.0)
    settings = [*FAST, "student.imgsz=64", "student.epochs=1", "distillation.teacher_min_ap=0"]
    common = [
        "train-student",
        "-d",
        str(train),
        "-v",
        str(val),
        "--teacher",
        str(teacher),
        "--unlabeled",
        str(unlabeled),
    ]
    code, _, err = run(*common, "-o", str(tmp_path / "refused"), *(p for s in settings for p in ("--set", s)))
    assert code == 2 and "does not know any class" in err and "Traceback" not in err
    forced = [*settings, "distillation.unknown_classes=[]"]  # the way to use it anyway, named in the hint
    code, _, err = run(*common, "-o", str(tmp_path / "forced"), *(p for s in forced for p in ("--set", s)))
    assert code == 0, err


def test_kd_anchor_weights_of_no_taught_class_are_zero() -> None:
    import torch

    from distillkit.students.kd_loss import anchor_weights

    weights = anchor_weights(torch.zeros(2, 0, 7))
    assert weights.shape == (2, 7) and float(weights.abs().sum()) == 0.0


# ------------------------------------------------------------------------------------------------
# Several GPUs on one node: ultralytics' DDP workers


def test_a_gpu_list_this_machine_lacks_is_one_line_before_any_work(
    shapes: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    if torch.cuda.is_available() and torch.cuda.device_count() >= 2:
        pytest.skip("this machine has two GPUs")
    train, val, _ = shapes
    code, _, err = run("train-student", "-d", str(train), "-v", str(val), "-o", str(tmp_path / "s"), "--device", "0,1")
    assert code == 2 and err.count("\n") == 1 and "asks for 2 GPUs" in err and "--device cpu" in err
    assert not (tmp_path / "s" / "yolo_data").exists()


def test_gpu_lists_are_read_and_checked() -> None:
    from distillkit.training.device import gpu_indices

    assert gpu_indices("cpu") == [] and gpu_indices("0") == [] and gpu_indices("cuda:1") == []
    with pytest.raises(UsageError, match="twice"):
        gpu_indices("0,0")
    with pytest.raises(UsageError, match="unknown device"):
        gpu_indices("0,a")


def test_a_multi_gpu_run_hands_the_distillation_trainer_to_fresh_worker_processes(
    shapes: tuple[Path, Path, Path], yolo_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--device 0,1``: ultralytics writes the trainer class, arguments, model and callbacks to its DDP
    state file and starts fresh processes that rebuild the trainer from it and train. The process group
    needs CUDA; everything else runs here on CPU: the same state file, read by the same generated
    script in a fresh interpreter, which must train with distillkit's KD trainer and its guards."""
    import subprocess
    import sys

    import distillkit.students.train as student_train
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.engine import trainer as engine
    from ultralytics.utils.dist import ddp_cleanup, generate_ddp_file

    workers: list[subprocess.CompletedProcess[str]] = []
    handed: list[type] = []

    def launch_worker(self: object) -> None:  # in place of `torch.distributed.run --nproc_per_node 2 FILE`
        handed.append(type(self))
        file = generate_ddp_file(self)
        try:
            workers.append(subprocess.run([sys.executable, file], capture_output=True, text=True, timeout=900))
        finally:
            ddp_cleanup(self, file)

    monkeypatch.setattr(student_train, "gpu_indices", lambda device: [0, 1])
    monkeypatch.setattr(engine.BaseTrainer, "train", launch_worker)
    out = tmp_path / "student"
    result = train_student(
        *shapes[:2],
        out,
        overrides=[*TINY, f"distillation.ultralytics_teacher={yolo_teacher}", "training_dynamics.device=cpu"],
    )
    assert len(workers) == 1 and workers[0].returncode == 0, workers[0].stderr[-3000:]
    assert handed[0].__name__ == "DistillationTrainer" and handed[0].kd_settings is not None
    # the worker printed one line per epoch (rank 0) and trained the KD terms; the launcher published its weights
    assert workers[0].stderr.count("epoch ") >= 2, workers[0].stderr[-2000:]
    rows = _rows(out / "results.csv")
    assert len(rows) == 2 and all(math.isfinite(row["train/kd_logit"]) and row["train/kd_logit"] > 0 for row in rows)
    assert (out / "train" / "weights" / "kd_projectors.pt").is_file()
    assert torch.load(out / "best.pt", map_location="cpu", weights_only=False)["distillkit"]["category_ids"] == [5, 9]
    assert "metrics/mAP50-95(B)" in result.metrics


def test_a_resumed_run_trains_on_the_devices_its_checkpoint_names(tmp_path: Path) -> None:
    # ultralytics resumes on last.pt's devices: a run started with --device 0,1 resumes as a multi-GPU run
    from types import SimpleNamespace

    from distillkit.students.train import StudentRun

    weights = tmp_path / "run" / "train" / "weights"
    weights.mkdir(parents=True)
    torch.save({"train_args": {"device": "0,1", "epochs": 3}, "epoch": 1}, weights / "last.pt")
    config = SimpleNamespace(training_dynamics=SimpleNamespace(device="auto"))
    resumed = StudentRun(tmp_path / "a.json", tmp_path / "b.json", tmp_path / "run", resume=True)
    fresh = StudentRun(tmp_path / "a.json", tmp_path / "b.json", tmp_path / "run")
    assert resumed._device_setting(config) == "0,1"
    assert fresh._device_setting(config) == "auto"
