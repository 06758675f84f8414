"""The teacher ``label`` uses, from what the user named: an experiment, a YOLO checkpoint, or class names.

Three kinds, one ``Teacher`` protocol:

* ``teacher_dir``: the Grounding DINO / SAM adapters ``train-teacher`` wrote (``load_teacher``); its
  category ids are the training data's, and its calibrated per-class thresholds
  (``EXP/teachers/calibration.json``) gate the labels when present;
* ``checkpoint``: an ultralytics ``.pt`` (``YoloTeacher``) labelling its own classes, or the
  ``classes`` named; category ids come from the checkpoint when ``train-student`` wrote it;
* ``classes`` alone: zero-shot — base Grounding DINO weights (``dino_weights``, default the shipped
  ones) prompted with the class names, plus base SAM for masks when ``sam_weights`` is given.

The families register a loader for each kind (``labelling.teacher`` in ``distillkit.tasks``: the teachers
family ``teacher-dir`` and ``zero-shot``, the students family ``ultralytics``); this module dispatches by
kind and imports no family, so ``distillkit.labelling`` stays importable without transformers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillkit.errors import DataError, UsageError
from distillkit.io import read_json
from distillkit.labelling.to_coco import DEFAULT_CONF
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
    defer_models: bool = False,
) -> LabellingTeacher:
    """Build the one teacher the arguments name (see the module docstring); UsageError for a bad combination.

    ``defer_models``: a ``teacher_dir`` teacher builds its models on first use only (its classes and
    cache identity come from the files), for a caller whose predictions run elsewhere (a Ray driver).

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
        return _kind("teacher-dir")(
            Path(teacher_dir), dino_weights, sam_weights, device, batch_size, conf, defer_models=defer_models
        )
    if checkpoint is not None:
        if dino_weights or sam_weights:
            raise UsageError(
                "--dino-weights / --sam-weights go with --teacher-dir or --classes, not a YOLO --teacher",
                "drop them",
            )
        return _kind("ultralytics")(Path(checkpoint), classes, device, batch_size, conf, imgsz)
    if classes:
        return _kind("zero-shot")(classes, dino_weights, sam_weights, device, batch_size, conf)
    if dino_weights or sam_weights:
        raise UsageError(
            "--dino-weights / --sam-weights without --classes name no class to look for",
            'add --classes "a,b" for zero-shot labelling, or pass --teacher-dir',
        )
    raise UsageError(
        "no teacher given",
        'pass --teacher-dir EXP (train-teacher), --teacher MODEL.pt (YOLO) or --classes "a,b" (zero-shot)',
    )


def score_floor(default: float, conf: float | None, thresholds: list[float] | None) -> float | None:
    """The teacher's score floor when the gate asks for less than its default, else None (keep the default)."""
    wanted = conf if conf is not None else (min(thresholds) if thresholds else DEFAULT_CONF)
    return float(wanted) if wanted < default else None


def calibrated_thresholds(exp: Path, class_names: list[str]) -> list[float] | None:
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


def _kind(kind: str) -> Callable[..., LabellingTeacher]:
    """The loader the teacher families register for ``kind`` (``labelling.teacher`` in ``distillkit.tasks``)."""
    from distillkit.tasks import lookup

    return lookup("labelling.teacher", kind)


def teacher_dir_loader() -> Callable[..., Teacher]:
    """``load_teacher(exp_dir, device=, batch_size=, ...)`` of the teachers family: the Grounding DINO / SAM
    teachers a train-teacher folder holds (ImportError when their requirements are missing)."""
    from distillkit.tasks import lookup

    return lookup("labelling.teacher-dir-loader", "teacher-dir")()
