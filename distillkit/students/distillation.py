"""Deciding which distillation components a run uses, and adding the teacher's pseudo-labels to its data.

The data and the given teachers decide, nothing else: every component whose inputs exist is used
with its configured weight, every other one is weighted zero (in the written
``distillation_config.yaml`` too) with the reason recorded in ``metadata.json``:

* ``pseudo_labels``: a teacher (``--teacher``, ``--teacher-dir`` or a ``Teacher`` object) and
  ``--unlabeled`` images or ``label_train_images``;
* ``logit_kd``, ``feature_kd``: a YOLO teacher (``--teacher``);
* ``dfl_kd``: a YOLO teacher with the student's ``reg_max``;
* ``ultralytics_distill``: ``use_ultralytics_distill_model`` (it replaces the three KD terms);
* ``weight_selection``: a YOLO teacher of the student's family and a student starting from scratch
  (its weights are then selected out of the teacher's, see ``weight_selection.py``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillkit.data.images import ImageLocator
from distillkit.data.yolo_format import SplitSource, YoloDataset
from distillkit.errors import UsageError
from distillkit.io import atomic_write_text
from distillkit.labelling.cache import image_content_key
from distillkit.labelling.types import Teacher
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.students.distill_trainer import KDSettings
from distillkit.students.kd_loss import KDWeights
from distillkit.students.pseudo_labels import (
    PseudoLabelReport,
    label_training_images,
    label_unlabeled_images,
    list_images,
)
from distillkit.students.yolo_teacher import YoloTeacher

PSEUDO_SPLIT = "pseudo"  # the YOLO dataset split holding the pseudo-labelled unlabelled images
CACHE_FOLDER = Path("cache") / "teacher_outputs"


@dataclass
class Component:
    weight: float
    active: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "active": self.active, "reason": self.reason}


@dataclass
class DistillationPlan:
    """The teachers of a run and what each component gets from them."""

    labeller: Teacher | None = None  # gives the pseudo-labels
    labeller_source: str | None = None
    kd: KDSettings | None = None  # distillkit's KD loss terms (YOLO teacher)
    ultralytics_distill: Path | None = None  # ultralytics' own distill_model
    student_init: Any = None  # the student model with weights selected from the teacher (weight_selection)
    components: dict[str, Component] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return any(c.active for c in self.components.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "labeller": self.labeller_source,
            "components": {name: c.to_dict() for name, c in self.components.items()},
        }


def load_directory_teacher(exp_dir: Path, device: str, batch_size: int) -> Teacher:
    """The teachers ``train-teacher`` wrote into ``exp_dir`` (imported only when asked for)."""
    if not exp_dir.is_dir():
        raise UsageError(f"--teacher-dir {exp_dir} is not a folder", "pass the --output folder of train-teacher")
    try:
        from distillkit.teachers import load_teacher
    except ImportError as exc:
        raise UsageError(
            f"--teacher-dir needs distillkit.teachers, which cannot be imported ({exc})",
            "use --teacher with an ultralytics checkpoint instead",
        ) from exc
    return load_teacher(exp_dir, device=device, batch_size=batch_size)


def plan_distillation(
    config: Any,
    class_names: Sequence[str],
    task: str,
    student_reg_max: int,
    device: str,
    teacher: Teacher | None = None,
    scratch_student: Any = None,
    selected_start: Path | None = None,
) -> DistillationPlan:
    """Build the teachers named by ``config.distillation`` (plus ``teacher``) and decide every component.

    ``scratch_student`` is the ``ultralytics.YOLO`` student when it starts from random weights (None
    for a pretrained .pt or a resumed run): weight selection may then initialise it from the teacher.
    ``selected_start`` is the start a resumed run was initialised with, when it was one.
    Zeroes, in ``config``, the weights of components that cannot run, so the written config says so.
    """
    settings = config.distillation
    plan = DistillationPlan()
    yolo: YoloTeacher | None = None
    if settings.ultralytics_teacher:
        yolo = YoloTeacher(
            settings.ultralytics_teacher,
            class_names,
            conf=settings.teacher_conf,
            imgsz=settings.teacher_imgsz or config.student.imgsz,
            device=device,
        )
        if task == "segment" and yolo.task != "segment":
            plan.notices.append("the YOLO teacher predicts boxes only: its pseudo-labels train the masks as rectangles")
    if teacher is not None:
        plan.labeller, plan.labeller_source = teacher, "given Teacher object"
    elif settings.teacher_dir:
        plan.labeller = load_directory_teacher(Path(settings.teacher_dir), device, config.student.batch)
        plan.labeller_source = f"teacher-dir {settings.teacher_dir}"
    elif yolo is not None:
        plan.labeller, plan.labeller_source = yolo, f"YOLO teacher {settings.ultralytics_teacher}"
    if plan.labeller is not None and list(plan.labeller.class_names) != list(class_names):
        raise UsageError(
            f"the teacher's classes {list(plan.labeller.class_names)} are not the dataset's {list(class_names)}",
            "train the teacher on the same categories",
        )
    if settings.pseudo_label_conf < settings.teacher_conf:
        plan.notices.append(
            f"pseudo_label_conf {settings.pseudo_label_conf} is below teacher_conf {settings.teacher_conf}: "
            f"the teacher only keeps detections scoring {settings.teacher_conf} or more"
        )

    if settings.unlabeled_images:
        if plan.labeller is None:  # asked for, yet it would change nothing: say so instead of ignoring it
            raise UsageError(
                f"--unlabeled {settings.unlabeled_images} needs a teacher to label its images",
                "add --teacher MODEL.pt or --teacher-dir EXP, or leave --unlabeled out",
            )
        list_images(Path(settings.unlabeled_images), 1)  # a missing or image-less folder fails now, not after setup
    has_images = bool(settings.unlabeled_images) or settings.label_train_images
    if plan.labeller is None:
        plan.components["pseudo_labels"] = Component(0.0, False, "no teacher (--teacher or --teacher-dir)")
    elif not has_images:
        plan.components["pseudo_labels"] = Component(
            0.0, False, "nothing to label: no --unlabeled images and distillation.label_train_images is false"
        )
        if yolo is None:  # the teacher was asked for, yet it changes nothing: say so instead of ignoring it
            plan.notices.append(
                f"the {plan.labeller_source} has nothing to label, so it does not take part in training; "
                "add --unlabeled DIR or --set distillation.label_train_images=true"
            )
    else:
        plan.components["pseudo_labels"] = Component(1.0, True, f"labels from the {plan.labeller_source}")

    builtin = settings.use_ultralytics_distill_model
    plan.components["ultralytics_distill"] = Component(
        settings.dis_weight if builtin else 0.0,
        builtin,
        "ultralytics distill_model on the neck features" if builtin else "use_ultralytics_distill_model is false",
    )
    if builtin:
        plan.ultralytics_distill = Path(settings.ultralytics_teacher).resolve()

    same_reg_max = yolo is not None and int(yolo.model.model.model[-1].reg_max) == student_reg_max
    for name, key, extra_need in (
        ("logit_kd", "logit_weight", None),
        ("dfl_kd", "dfl_weight", None if same_reg_max else "the teacher's reg_max differs from the student's"),
        ("feature_kd", "feature_weight", None),
    ):
        weight = float(getattr(settings, key))
        if yolo is None:
            reason = "needs a YOLO teacher (--teacher)"
        elif builtin:
            reason = "replaced by ultralytics distill_model (use_ultralytics_distill_model is true)"
        elif weight == 0:
            reason = f"distillation.{key} is 0"
        else:
            reason = extra_need or f"KD against the YOLO teacher {settings.ultralytics_teacher}"
        active = yolo is not None and not builtin and weight > 0 and extra_need is None
        plan.components[name] = Component(weight if active else 0.0, active, reason)
        if not active:
            setattr(settings, key, 0.0)
    if not plan.components["pseudo_labels"].active:
        settings.label_train_images = False
    plan.components["weight_selection"] = _plan_weight_selection(
        plan, settings, yolo, scratch_student, class_names, selected_start
    )
    if not plan.components["weight_selection"].active:
        settings.inherit_weights = False
    if yolo is not None and any(plan.components[n].active for n in ("logit_kd", "dfl_kd", "feature_kd")):
        plan.kd = KDSettings(
            teacher=yolo.path,
            class_index=yolo.class_index,
            weights=KDWeights(
                logit=settings.logit_weight,
                dfl=settings.dfl_weight,
                feature=settings.feature_weight,
                temperature=settings.temperature,
            ),
        )
    return plan


def add_pseudo_labels(
    plan: DistillationPlan,
    config: Any,
    train: SplitSource,
    val: SplitSource,
    folder: Path,
    task: str,
    progress: Progress = NULL_PROGRESS,
) -> tuple[dict[str, SplitSource], PseudoLabelReport]:
    """The splits to convert: ``train`` (merged with teacher labels when asked), ``val``, and ``pseudo``."""
    report = PseudoLabelReport()
    splits = {"train": train, "val": val}
    if not plan.components["pseudo_labels"].active:
        return splits, report
    assert plan.labeller is not None
    settings = config.distillation
    with_masks = task == "segment"
    with ExitStack() as stack:
        cache_dir = (
            folder / CACHE_FOLDER
            if settings.cache
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="distillkit-teacher-")))
        )
        if settings.label_train_images:
            merged = label_training_images(
                train.dataset,
                train.image_roots,
                plan.labeller,
                cache_dir,
                min_score=settings.pseudo_label_conf,
                merge_iou=settings.merge_iou,
                with_masks=with_masks,
                report=report,
                batch_size=config.student.batch,
                progress=progress,
            )
            splits["train"] = SplitSource(merged, train.image_roots)
        if settings.unlabeled_images:
            images = list_images(Path(settings.unlabeled_images), settings.unlabeled_max_images)
            known = [*_image_keys(train), *_image_keys(val)]
            coco, root = label_unlabeled_images(
                images,
                train.dataset["categories"],
                plan.labeller,
                cache_dir,
                min_score=settings.pseudo_label_conf,
                with_masks=with_masks,
                report=report,
                exclude_keys=known,
                batch_size=config.student.batch,
                progress=progress,
            )
            if coco["images"]:
                splits[PSEUDO_SPLIT] = SplitSource(coco, [root])
            if report.skipped_duplicate_images:
                report.notices.append(
                    f"{report.skipped_duplicate_images} --unlabeled images are copies of training or validation "
                    "images and were left out"
                )
    return splits, report


def _image_keys(source: SplitSource) -> list[str]:
    locator = ImageLocator(source.image_roots)
    paths = (locator.resolve(image["file_name"]) for image in source.dataset["images"])
    return [image_content_key(p) for p in paths if p is not None]


def train_on_extra_splits(dataset: YoloDataset, splits: Sequence[str]) -> None:
    """Point ``dataset.yaml``'s ``train`` at ``images/train`` plus the extra ``splits``."""
    document = yaml.safe_load(dataset.yaml_path.read_text())
    document["train"] = ["images/train", *(f"images/{name}" for name in splits)]
    document.pop(PSEUDO_SPLIT, None)  # a split trained on is not a separate entry
    atomic_write_text(dataset.yaml_path, yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def saved_section_overrides(config_file: Path, section: str) -> list[str]:
    """``section.key=value`` overrides restoring one section of a written config (empty if absent)."""
    if not config_file.is_file():
        return []
    document = yaml.safe_load(config_file.read_text()) or {}
    values = document.get(section) or {}
    return [
        f"{section}.{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
        for key, value in values.items()
    ]


MIN_INHERITED_FRACTION = 0.5  # below this the teacher is not of the student's family: selection would mislead


def _plan_weight_selection(
    plan: DistillationPlan,
    settings: Any,
    yolo: YoloTeacher | None,
    student: Any,
    class_names: Sequence[str],
    selected_start: Path | None = None,
) -> Component:
    """Select the scratch student's weights out of the YOLO teacher's when the architectures allow it."""
    if yolo is None:
        return Component(0.0, False, "needs a YOLO teacher (--teacher)")
    if not settings.inherit_weights:
        return Component(0.0, False, "distillation.inherit_weights is false")
    if student is None and selected_start is not None and selected_start.is_file():
        return Component(1.0, True, f"resumed run that started from {selected_start.name} (selected from the teacher)")
    if student is None:
        return Component(0.0, False, "the student starts from trained weights (a .pt, or a resumed run)")
    from distillkit.students.weight_selection import inherited_student

    model, report = inherited_student(student, yolo.model.model, class_names, yolo.class_index)
    if report.fraction < MIN_INHERITED_FRACTION:
        return Component(
            0.0,
            False,
            f"only {report.fraction:.0%} of the student's parameters have a counterpart in the teacher: "
            "use a teacher of the student's family (yolov8s for yolov8n)",
        )
    plan.student_init = model
    return Component(1.0, True, f"{report.fraction:.0%} of the student's parameters selected from the YOLO teacher's")
