"""The teacher ``label`` uses, from what the user named: an experiment, a YOLO checkpoint, or class names.

Three kinds, one ``Teacher`` protocol:

* ``teacher_dir``: the Grounding DINO / SAM adapters ``train-teacher`` wrote (``load_teacher``); its
  category ids are the training data's, and its calibrated per-class thresholds
  (``EXP/teachers/calibration.json``) gate the labels when present;
* ``checkpoint``: an ultralytics ``.pt`` (``YoloTeacher``) labelling its own classes, or the
  ``classes`` named; category ids come from the checkpoint when ``train-student`` wrote it;
* ``classes`` alone: zero-shot — base Grounding DINO weights (``dino_weights``, default the shipped
  ones) prompted with the class names, plus base SAM for masks when ``sam_weights`` is given.

This module is where the labelling service reaches the teacher families; it imports them only when
that kind is asked for, so ``distillkit.labelling`` stays importable without transformers.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillkit.errors import DataError, UsageError
from distillkit.io import read_json
from distillkit.labelling.to_coco import DEFAULT_CONF, default_categories
from distillkit.labelling.types import Teacher

#: Per-class thresholds calibrated on a validation split, inside a train-teacher folder.
CALIBRATION_PATH = Path("teachers") / "calibration.json"
#: Score floor a YOLO teacher predicts (and caches) with, as train-student's distillation.teacher_conf.
YOLO_TEACHER_CONF = 0.1


@dataclass
class LabellingTeacher:
    """A loaded teacher plus what labelling needs around it."""

    teacher: Teacher
    kind: str  # "teacher-dir" | "ultralytics" | "zero-shot"
    source: str
    categories: list[dict[str, Any]]
    cache_dir: Path  # the teacher-output cache used unless another is asked for
    class_thresholds: list[float] | None = None  # calibrated per-class gates, when the teacher has them
    settings: dict[str, Any] = field(default_factory=dict)  # what changes the outputs (for the COCO info)
    notices: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "classes": list(self.teacher.class_names), **self.settings}


def user_cache_dir() -> Path:
    """Teacher outputs of teachers that have no experiment folder: ``$DISTILLKIT_CACHE/teacher_outputs``."""
    explicit = os.environ.get("DISTILLKIT_CACHE")
    if explicit:
        return Path(explicit).expanduser() / "teacher_outputs"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "distillkit" / "teacher_outputs"


def load_labelling_teacher(
    *,
    teacher_dir: Path | None = None,
    checkpoint: Path | None = None,
    classes: list[str] | None = None,
    dino_weights: str | None = None,
    sam_weights: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    conf: float | None = None,
    imgsz: int = 640,
) -> LabellingTeacher:
    """Build the one teacher the arguments name (see the module docstring); UsageError for a bad combination.

    ``conf`` below the teacher's own score floor lowers that floor (the teacher keeps what the gate
    may want); at or above it, the floor stays, so the cache entries are those other commands wrote.
    """
    if teacher_dir is not None and checkpoint is not None:
        raise UsageError("--teacher-dir and --teacher name two teachers", "label with one of them")
    if teacher_dir is not None:
        if classes:
            raise UsageError(
                "--classes cannot narrow a --teacher-dir: it labels the classes it was trained on",
                "drop --classes, or use them alone for zero-shot labelling",
            )
        return _experiment_teacher(Path(teacher_dir), dino_weights, sam_weights, device, batch_size, conf)
    if checkpoint is not None:
        if dino_weights or sam_weights:
            raise UsageError(
                "--dino-weights / --sam-weights go with --teacher-dir or --classes, not a YOLO --teacher",
                "drop them",
            )
        return _yolo_teacher(Path(checkpoint), classes, device, batch_size, conf, imgsz)
    if classes:
        return _zero_shot_teacher(classes, dino_weights, sam_weights, device, batch_size, conf)
    if dino_weights or sam_weights:
        raise UsageError(
            "--dino-weights / --sam-weights without --classes name no class to look for",
            'add --classes "a,b" for zero-shot labelling, or pass --teacher-dir',
        )
    raise UsageError(
        "no teacher given",
        'pass --teacher-dir EXP (train-teacher), --teacher MODEL.pt (YOLO) or --classes "a,b" (zero-shot)',
    )


def _floor(default: float, conf: float | None, thresholds: list[float] | None) -> float | None:
    """The teacher's score floor when the gate asks for less than its default, else None (keep the default)."""
    wanted = conf if conf is not None else (min(thresholds) if thresholds else DEFAULT_CONF)
    return float(wanted) if wanted < default else None


def _calibrated_thresholds(exp: Path, class_names: list[str]) -> list[float] | None:
    path = exp / CALIBRATION_PATH
    if not path.is_file():
        return None
    from distillkit.labelling.calibration import TeacherCalibration

    try:
        calibration = TeacherCalibration.from_dict(read_json(path))
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a teacher calibration ({exc})", "calibrate again or remove it") from exc
    if list(calibration.class_names) != list(class_names):
        raise DataError(
            f"{path} calibrates the classes {calibration.class_names}, the teacher has {class_names}",
            "calibrate this teacher again, or pass --conf",
        )
    return [float(v) for v in calibration.thresholds]


def _experiment_teacher(
    exp: Path,
    dino_weights: str | None,
    sam_weights: str | None,
    device: str | None,
    batch_size: int,
    conf: float | None,
) -> LabellingTeacher:
    from distillkit.teachers.grounding_dino.model import TEACHER_FILE, read_teacher_file
    from distillkit.teachers.grounding_dino.train import FOLDER_NAME
    from distillkit.teachers.labeller import SAM_FOLDER, load_teacher, teacher_cache_dir

    if not exp.is_dir():
        raise UsageError(f"--teacher-dir {exp} is not a folder", "pass the --output folder of train-teacher")
    dino_dir = exp / "teachers" / FOLDER_NAME
    if not (dino_dir / TEACHER_FILE).is_file() and (exp / "teachers" / SAM_FOLDER).is_dir():
        raise UsageError(
            f"{exp} has a SAM teacher only, and SAM needs boxes to turn into masks",
            f"train a Grounding DINO teacher into {exp} (data with boxes), or label zero-shot with --classes",
        )
    record = read_teacher_file(dino_dir) if (dino_dir / TEACHER_FILE).is_file() else {}
    class_names = [str(name) for name in record.get("class_names", [])]
    thresholds = _calibrated_thresholds(exp, class_names) if class_names else None
    trained = float(record.get("box_threshold", 0.35))
    floor = _floor(trained, conf, thresholds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft probes a deprecated transformers attribute
        teacher = load_teacher(
            exp,
            device=device,
            batch_size=batch_size,
            box_threshold=floor,
            dino_weights=dino_weights,
            sam_weights=sam_weights,
        )
    categories = default_categories(teacher.class_names)
    mapping = record.get("class_mapping") or {}
    if mapping and len(mapping) == len(categories):
        by_index = {int(index): int(category) for category, index in mapping.items()}
        for index, category in enumerate(categories):
            category["id"] = by_index.get(index, category["id"])
    return LabellingTeacher(
        teacher=teacher,
        kind="teacher-dir",
        source=str(exp),
        categories=categories,
        cache_dir=teacher_cache_dir(exp),
        class_thresholds=thresholds,
        settings={
            "box_threshold": teacher.box_threshold,
            "text_threshold": teacher.text_threshold,
            "masks": teacher.sam is not None,
        },
    )


def _yolo_teacher(
    checkpoint: Path, classes: list[str] | None, device: str | None, batch_size: int, conf: float | None, imgsz: int
) -> LabellingTeacher:
    from distillkit.students.yolo_teacher import YoloTeacher
    from distillkit.training import resolve_device

    target = str(resolve_device(device if device is not None else "auto"))
    floor = _floor(YOLO_TEACHER_CONF, conf, None)
    teacher_conf = YOLO_TEACHER_CONF if floor is None else floor
    names = classes
    if not names:  # every class of the checkpoint, in its order
        names = YoloTeacher(checkpoint, [], device=target).teacher_names
    teacher = YoloTeacher(checkpoint, names, conf=teacher_conf, imgsz=imgsz, device=target)
    categories = default_categories(teacher.class_names)
    stored = (getattr(teacher.model, "ckpt", None) or {}).get("distillkit", {}) or {}
    mapping = stored.get("class_mapping") or {}
    by_index = {int(index): int(category) for category, index in mapping.items()}
    for category, teacher_index in zip(categories, teacher.class_index, strict=True):
        category["id"] = by_index.get(teacher_index, category["id"])
    if len({c["id"] for c in categories}) != len(categories):  # a partial mapping: fall back to 1..C
        categories = default_categories(teacher.class_names)
    del batch_size  # ultralytics batches the images of each predict call itself
    return LabellingTeacher(
        teacher=teacher,
        kind="ultralytics",
        source=str(checkpoint),
        categories=categories,
        cache_dir=user_cache_dir(),
        settings={"conf": teacher_conf, "imgsz": imgsz, "task": teacher.task, "masks": teacher.task == "segment"},
    )


def _zero_shot_teacher(
    classes: list[str],
    dino_weights: str | None,
    sam_weights: str | None,
    device: str | None,
    batch_size: int,
    conf: float | None,
) -> LabellingTeacher:
    from distillkit.config.build import section_defaults
    from distillkit.teachers.zero_shot import load_zero_shot_teacher

    default = float(section_defaults("teacher_grounding_dino_lora").box_threshold)  # type: ignore[attr-defined]
    teacher = load_zero_shot_teacher(
        classes,
        dino_weights=dino_weights,
        sam_weights=sam_weights,
        device=device,
        batch_size=batch_size,
        box_threshold=_floor(default, conf, None),
    )
    return LabellingTeacher(
        teacher=teacher,
        kind="zero-shot",
        source=str(teacher.dino_record.get("weights")),
        categories=default_categories(teacher.class_names),
        cache_dir=user_cache_dir(),
        settings={
            "prompt": teacher.dino_record.get("prompt"),
            "box_threshold": teacher.box_threshold,
            "text_threshold": teacher.text_threshold,
            "sam_weights": sam_weights,
            "masks": teacher.sam is not None,
        },
    )
