"""``train-teacher`` as a library call: the data decides which teachers train, then each one does.

    boxes in the data → Grounding DINO;  masks → SAM;  both → both  (``DatasetInfo.teachers``)

The data is looked at after ``validate``'s repairs, which give every mask its tight box: masks-only
data (labelme / CVAT polygons) therefore trains both teachers, Grounding DINO on the derived boxes
and SAM on the masks, so images without labels get boxes from one and masks from the other.

The configuration (shipped defaults → the data → overrides) is derived afresh from the training
file on every run and written to ``EXP/teacher_config.yaml`` with
``metadata.json``, before training starts; its ``data`` section holds the decision and the class
names. Each teacher then trains into its own folder under ``EXP/teachers/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distillkit.config import ExperimentConfig, build_config, write_experiment_config
from distillkit.data.validate import ValidationResult, load_valid_dataset
from distillkit.errors import DataError, UsageError
from distillkit.locking import output_lock
from distillkit.paths import check_output_outside_inputs, image_folders
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.teachers.results import TeacherTrainResult

CONFIG_FILE = "teacher_config.yaml"
TEACHERS_DIR = "teachers"
#: The config sections a teacher run resolves and records.
TEACHER_SECTIONS = (
    "preprocessing",
    "augmentation",
    "training_dynamics",
    "checkpointing",
    "teacher_grounding_dino_lora",
    "teacher_sam_lora",
)
#: ``--only`` names → the teacher keys of ``DatasetInfo.teachers``.
ONLY_CHOICES = {"dino": "grounding_dino", "sam": "sam"}
TEACHER_FOLDERS = {"grounding_dino": "grounding_dino_lora", "sam": "sam_lora"}
TEACHER_LABELS = {"grounding_dino": "Grounding DINO", "sam": "SAM"}


@dataclass
class TeachersResult:
    """What ``train_teachers`` did: the data's decision, the teachers trained, where things are."""

    exp_dir: Path
    config_path: Path
    class_names: list[str]
    decision: list[str]  # what the data calls for
    trained: list[TeacherTrainResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # teacher -> why (e.g. --only)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exp_dir": str(self.exp_dir),
            "config": str(self.config_path),
            "class_names": list(self.class_names),
            "decision": list(self.decision),
            "teachers": [result.to_dict() for result in self.trained],
            "skipped": dict(self.skipped),
        }


def _load(source: ValidationResult | str | os.PathLike[str], what: str, progress: Progress) -> ValidationResult:
    if isinstance(source, ValidationResult):
        return source
    path = Path(source)
    if path.is_dir():
        raise UsageError(f"{what} data {path} is a folder, not a COCO JSON file", "pass the annotation file itself")
    if not path.is_file():
        raise UsageError(f"{what} file not found: {path}", "check the path")
    return load_valid_dataset(path, progress=progress)


def _check_output(
    exp_dir: str | os.PathLike[str],
    train: ValidationResult | str | os.PathLike[str],
    val: ValidationResult | str | os.PathLike[str],
    images_dir: Path | None,
    val_images_dir: Path | None,
) -> None:
    """Before any work: the experiment folder is no input file and lies in no images folder."""
    train_file, val_file = (s.report.source if isinstance(s, ValidationResult) else s for s in (train, val))
    folders = image_folders([train_file], images_dir) + image_folders([val_file], val_images_dir or images_dir)
    check_output_outside_inputs(exp_dir, [train_file, val_file, *folders])


def _check_same_classes(train: ValidationResult, val: ValidationResult) -> None:
    if train.info.class_mapping != val.info.class_mapping or train.info.class_names != val.info.class_names:
        raise DataError(
            "the training and validation files have different categories "
            f"({', '.join(train.info.class_names)} vs {', '.join(val.info.class_names)})",
            "split both from the same annotation file (distillkit split)",
        )


def choose_teachers(decision: Sequence[str], only: str | None) -> tuple[list[str], dict[str, str]]:
    """The teachers to train now: the data's decision, narrowed by ``--only``."""
    if not decision:
        raise DataError("the training data has neither boxes nor masks, so no teacher can be trained")
    if only is None:
        return list(decision), {}
    if only not in ONLY_CHOICES:
        raise UsageError(f"--only {only!r} is not one of {', '.join(ONLY_CHOICES)}")
    wanted = ONLY_CHOICES[only]
    if wanted not in decision:
        has = "boxes" if "grounding_dino" in decision else "masks"
        raise UsageError(
            f"--only {only}: the training data has only {has}, which calls for {', '.join(decision)}",
            "drop --only, or pass data with " + ("boxes" if wanted == "grounding_dino" else "masks"),
        )
    return [wanted], {name: f"--only {only}" for name in decision if name != wanted}


def teacher_config(train: ValidationResult, train_path: Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Shipped defaults → the training data → overrides, for every teacher section."""
    return build_config(list(TEACHER_SECTIONS), dataset_info=train.info, dataset_path=train_path, overrides=overrides)


def _check_fresh_or_resume(teachers_dir: Path, names: Sequence[str], resume: bool) -> None:
    if resume:
        return
    for name in names:
        last = teachers_dir / TEACHER_FOLDERS[name] / "checkpoints" / "last.pt"
        if last.is_file():
            raise UsageError(
                f"{teachers_dir.parent} already holds a {TEACHER_LABELS[name]} training run ({last})",
                "pass --resume to continue it, or choose another --output",
            )


def train_teachers(
    train: ValidationResult | str | os.PathLike[str],
    val: ValidationResult | str | os.PathLike[str],
    exp_dir: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    only: Literal["dino", "sam"] | None = None,
    resume: bool = False,
    merge: bool = False,
    device: str | None = None,
    images_dir: Path | None = None,
    val_images_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> TeachersResult:
    """Train the teachers the training data calls for into ``exp_dir``; see the module docstring.

    ``overrides`` are ``section.key=value`` strings (``--set``). ``resume`` continues interrupted
    runs from their ``checkpoints/last.pt`` (a teacher that never started starts fresh); without it,
    an existing run in ``exp_dir`` is refused rather than overwritten, and so is a second run into
    ``exp_dir`` while one is going on.
    """
    _check_output(exp_dir, train, val, images_dir, val_images_dir)
    with output_lock(exp_dir):
        return _train_teachers_locked(
            train,
            val,
            exp_dir,
            overrides=overrides,
            only=only,
            resume=resume,
            merge=merge,
            device=device,
            images_dir=images_dir,
            val_images_dir=val_images_dir,
            progress=progress,
        )


def _train_teachers_locked(
    train: ValidationResult | str | os.PathLike[str],
    val: ValidationResult | str | os.PathLike[str],
    exp_dir: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    only: Literal["dino", "sam"] | None = None,
    resume: bool = False,
    merge: bool = False,
    device: str | None = None,
    images_dir: Path | None = None,
    val_images_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> TeachersResult:
    from distillkit.training import barrier, is_main_process

    train_result = _load(train, "training", progress)
    val_result = _load(val, "validation", progress)
    _check_same_classes(train_result, val_result)
    train_path = Path(train_result.report.source) if train_result.report.source else None
    config = teacher_config(train_result, train_path, overrides)
    decision = list(config.data.teachers)
    chosen, skipped = choose_teachers(decision, only)
    exp = Path(exp_dir)
    teachers_dir = exp / TEACHERS_DIR
    _check_fresh_or_resume(teachers_dir, chosen, resume)

    config_path = exp / CONFIG_FILE
    if is_main_process():
        extra = {"teachers_trained": chosen, "skipped": skipped, "resume": resume, "merge": merge}
        if val_result.report.source:
            extra["validation"] = str(Path(val_result.report.source).resolve())
        config_path = write_experiment_config(exp, config, filename=CONFIG_FILE, extra_metadata=extra)
    barrier()

    result = TeachersResult(exp, config_path, list(config.data.class_names), decision, skipped=skipped)
    common: dict[str, Any] = {"device": device, "progress": progress}
    for name in chosen:
        resume_this = resume and (teachers_dir / TEACHER_FOLDERS[name] / "checkpoints" / "last.pt").is_file()
        if name == "grounding_dino":
            from distillkit.teachers.grounding_dino.train import train_grounding_dino as train_teacher
        else:
            from distillkit.teachers.sam.train import train_sam as train_teacher
        trained = train_teacher(
            train_result,
            val_result,
            config,
            teachers_dir,
            resume=resume_this,
            merge=merge,
            images_dir=images_dir,
            val_images_dir=val_images_dir,
            **common,
        )
        result.trained.append(trained)
    return result
