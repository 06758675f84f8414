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

from distillkit.config import ConfigOverrides, ExperimentConfig, build_config
from distillkit.data.validate import ValidationResult
from distillkit.errors import DataError, UsageError
from distillkit.experiment import ExperimentRun, PreviousRun, coco_inputs, load_coco_pair
from distillkit.experiment.coco import CocoSource
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


def teacher_config(
    train: ValidationResult, train_path: Path | None, overrides: ConfigOverrides = ()
) -> ExperimentConfig:
    """Shipped defaults → the training data → overrides, for every teacher section."""
    return build_config(list(TEACHER_SECTIONS), dataset_info=train.info, dataset_path=train_path, overrides=overrides)


class TeacherRun(ExperimentRun[TeachersResult]):
    """``train-teacher``: the teachers the data calls for, each into its folder under ``EXP/teachers/``."""

    config_file = CONFIG_FILE
    sections = TEACHER_SECTIONS
    resume_needs_state = False  # --resume continues the teachers that started; the others start fresh

    def __init__(
        self,
        train: CocoSource,
        val: CocoSource,
        output: str | os.PathLike[str],
        *,
        only: Literal["dino", "sam"] | None = None,
        merge: bool = False,
        device: str | None = None,
        images_dir: Path | None = None,
        val_images_dir: Path | None = None,
        **common: Any,
    ) -> None:
        super().__init__(output, **common)
        self.train_source, self.val_source = train, val
        self.only, self.merge, self.device = only, merge, device
        self.images_dir, self.val_images_dir = images_dir, val_images_dir

    def inputs(self) -> list[Path | None]:
        return coco_inputs(self.train_source, self.val_source, self.images_dir, self.val_images_dir)

    def previous_run(self) -> PreviousRun:
        # Which teachers run is decided by the data, read after the lock: each is checked in ``train``.
        return PreviousRun("missing", self.folder / TEACHERS_DIR)

    def _teacher_run(self, name: str) -> PreviousRun:
        last = self.folder / TEACHERS_DIR / TEACHER_FOLDERS[name] / "checkpoints" / "last.pt"
        return PreviousRun(
            "resumable" if last.is_file() else "missing", last, what=f"a {TEACHER_LABELS[name]} training run"
        )

    def train(self) -> TeachersResult:
        from distillkit.training import barrier, is_main_process

        train_result, val_result = load_coco_pair(self.train_source, self.val_source, self.progress)
        train_path = Path(train_result.report.source) if train_result.report.source else None
        config = self.configure(train_result.info, train_path)
        decision = list(config.data.teachers)
        chosen, skipped = choose_teachers(decision, self.only)
        previous = {name: self._teacher_run(name) for name in chosen}
        for state in previous.values():
            if not self.resume:  # a teacher that never started starts fresh even with --resume
                self.check_previous(state)
        config_path = self.folder / CONFIG_FILE
        if is_main_process():
            extra: dict[str, Any] = {"teachers_trained": chosen, "skipped": skipped, "merge": self.merge}
            if val_result.report.source:
                extra["validation"] = str(Path(val_result.report.source).resolve())
            config_path = self.write_config(config, **extra)
        barrier()

        result = TeachersResult(self.folder, config_path, list(config.data.class_names), decision, skipped=skipped)
        for name in chosen:
            result.trained.append(self._train_one(name, train_result, val_result, config, previous[name]))
        return result

    def _train_one(
        self,
        name: str,
        train_result: ValidationResult,
        val_result: ValidationResult,
        config: ExperimentConfig,
        previous: PreviousRun,
    ) -> TeacherTrainResult:
        if name == "grounding_dino":
            from distillkit.teachers.grounding_dino.train import train_grounding_dino as train_teacher
        else:
            from distillkit.teachers.sam.train import train_sam as train_teacher
        return train_teacher(
            train_result,
            val_result,
            config,
            self.folder / TEACHERS_DIR,
            resume=bool(self.resume) and previous.kind == "resumable",
            merge=self.merge,
            images_dir=self.images_dir,
            val_images_dir=self.val_images_dir,
            device=self.device,
            progress=self.progress,
        )


def train_teachers(
    train: CocoSource,
    val: CocoSource,
    exp_dir: str | os.PathLike[str],
    *,
    overrides: ConfigOverrides = (),
    only: Literal["dino", "sam"] | None = None,
    resume: bool = False,
    merge: bool = False,
    device: str | None = None,
    images_dir: Path | None = None,
    val_images_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> TeachersResult:
    """Train the teachers the training data calls for into ``exp_dir``; see the module docstring.

    ``overrides``: typed values by dotted key (``{"teacher_sam_lora.epochs": 5}``) or ``--set`` text.
    ``resume`` continues interrupted runs from their ``checkpoints/last.pt`` (a teacher that never
    started starts fresh); without it, an existing run in ``exp_dir`` is refused rather than
    overwritten, and so is a second run into ``exp_dir`` while one is going on.
    """
    return TeacherRun(
        train,
        val,
        exp_dir,
        only=only,
        merge=merge,
        device=device,
        images_dir=images_dir,
        val_images_dir=val_images_dir,
        overrides=overrides,
        resume=resume,
        progress=progress,
    ).run()
