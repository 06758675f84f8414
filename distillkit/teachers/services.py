"""What the teachers family brings to the shared services, registered in ``distillkit.tasks``.

``label`` (``distillkit.labelling.factory``) finds here the teachers of a train-teacher folder
(``teacher-dir``) and zero-shot Grounding DINO / SAM (``zero-shot``); ``teacher_dir_loader`` gives the
folder's ``load_teacher`` to train-student's distillation. Heavy imports (transformers, peft) happen
when a loader is called, not here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillkit.errors import UsageError
from distillkit.tasks import register

if TYPE_CHECKING:
    from distillkit.labelling.factory import LabellingTeacher


def teacher_dir_loader() -> Any:
    """``distillkit.teachers.load_teacher`` (ImportError when transformers or peft are missing)."""
    from distillkit.teachers import load_teacher

    return load_teacher


def experiment_teacher(
    exp: Path,
    dino_weights: str | None,
    sam_weights: str | None,
    device: str | None,
    batch_size: int,
    conf: float | None,
    defer_models: bool = False,
) -> LabellingTeacher:
    from distillkit.labelling.factory import LabellingTeacher, calibrated_thresholds, score_floor
    from distillkit.labelling.to_coco import default_categories
    from distillkit.teachers.grounding_dino.model import FOLDER_NAME, TEACHER_FILE, read_teacher_file
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
    thresholds = calibrated_thresholds(exp, class_names) if class_names else None
    trained = float(record.get("box_threshold", 0.35))
    floor = score_floor(trained, conf, thresholds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft probes a deprecated transformers attribute
        teacher = load_teacher(
            exp,
            device=device,
            batch_size=batch_size,
            box_threshold=floor,
            dino_weights=dino_weights,
            sam_weights=sam_weights,
            defer_models=defer_models,
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
            "masks": teacher.has_masks,
        },
    )


def zero_shot_teacher(
    classes: list[str],
    dino_weights: str | None,
    sam_weights: str | None,
    device: str | None,
    batch_size: int,
    conf: float | None,
) -> LabellingTeacher:
    from distillkit.config.build import section_defaults
    from distillkit.labelling.factory import LabellingTeacher, score_floor, user_cache_dir
    from distillkit.labelling.to_coco import default_categories
    from distillkit.teachers.zero_shot import load_zero_shot_teacher

    default = float(section_defaults("teacher_grounding_dino_lora").box_threshold)  # type: ignore[attr-defined]
    teacher = load_zero_shot_teacher(
        classes,
        dino_weights=dino_weights,
        sam_weights=sam_weights,
        device=device,
        batch_size=batch_size,
        box_threshold=score_floor(default, conf, None),
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
            "masks": teacher.has_masks,
        },
    )


register("labelling.teacher", "teacher-dir", experiment_teacher)
register("labelling.teacher", "zero-shot", zero_shot_teacher)
register("labelling.teacher-dir-loader", "teacher-dir", teacher_dir_loader)
