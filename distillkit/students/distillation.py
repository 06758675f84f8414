"""Deciding which distillation components a run uses, and adding the teacher's pseudo-labels to its data.

The data and the given teachers decide, nothing else: every component whose inputs exist is used
with its configured weight, every other one is weighted zero (in the written
``distillation_config.yaml`` too) with the reason recorded in ``metadata.json``:

* ``pseudo_labels``: a teacher (``--teacher``, ``--teacher-dir`` or a ``Teacher`` object): it labels
  the training images (``label_train_images``, on by default) and every ``--unlabeled`` image;
* ``soft_targets``: the teacher's per-class scores and confidence on its labels (and its view of
  the annotated objects) in the student's classification and box losses (``soft_targets``);
* ``mask_quality``: a segmentation student's mask loss weighted by the mask teacher's quality;
* ``calibrated_thresholds``: per-class score gates chosen on ``--val`` (``calibrate_thresholds``),
  after the teacher passed its quality floor there (``teacher_min_ap``);
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from distillkit.data.images import ImageLocator
from distillkit.data.yolo_format import SplitSource, YoloDataset
from distillkit.errors import UsageError
from distillkit.io import atomic_write_json, atomic_write_text
from distillkit.labelling.cache import image_content_key
from distillkit.labelling.calibration import (
    CALIBRATION_FILE,
    TeacherCalibration,
    calibrate_teacher,
    check_teacher_quality,
)
from distillkit.labelling.postprocess import LabelFilter
from distillkit.labelling.sources import ImageKeyIndex, excluded_images
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
    soft: Any = None  # SoftTargetSettings, set once the YOLO conversion wrote the soft-target table
    teacher_dir: Path | None = None  # a train-teacher experiment (its calibration is stored there too)
    cache_filler: Any = None  # distillation.label_backend=ray: fills the teacher-output cache on Ray first
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
    from distillkit.labelling.factory import teacher_dir_loader

    try:
        load_teacher = teacher_dir_loader()  # the teachers family's, through labelling (no import across families)
    except ImportError as exc:
        raise UsageError(
            f"--teacher-dir needs distillkit.teachers, which cannot be imported ({exc})",
            "use --teacher with an ultralytics checkpoint instead",
        ) from exc
    return load_teacher(exp_dir, device=device, batch_size=batch_size)


def _ray_filler(settings: Any, plan: DistillationPlan, batch_size: int, given_object: bool) -> Any:
    """A cache filler that labels on Ray with the run's teacher, rebuilt in each actor from its recipe."""
    from distillkit.labelling.ray_backend import RayLabelling, RayOptions, TeacherRecipe, require_ray

    require_ray()
    if plan.labeller is None or given_object:
        raise UsageError(
            "distillation.label_backend=ray labels with a --teacher-dir or --teacher teacher",
            "give one of them, or label locally (distillation.label_backend=local)",
        )
    if plan.teacher_dir is not None:
        recipe = TeacherRecipe(
            {"exp_dir": plan.teacher_dir.resolve(), "batch_size": batch_size},
            factory="distillkit.students.distillation:load_directory_teacher",
        )
    else:
        labeller = plan.labeller
        recipe = TeacherRecipe(
            {
                "checkpoint": str(getattr(labeller, "path", Path(settings.ultralytics_teacher).resolve())),
                "dataset_class_names": list(labeller.class_names),
                "conf": getattr(labeller, "conf", settings.teacher_conf),
                "iou": getattr(labeller, "iou", 0.7),
                "imgsz": getattr(labeller, "imgsz", 640),
                "max_det": getattr(labeller, "max_det", 300),
            },
            factory="distillkit.students.yolo_teacher:YoloTeacher",
        )
    from distillkit.safe_load import model_files_trusted

    recipe = TeacherRecipe(recipe.arguments, trust_model_files=model_files_trusted(), factory=recipe.factory)
    options = RayOptions(address=settings.ray_address, actors=settings.ray_actors)
    return RayLabelling(recipe, options).filler(plan.labeller)


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
    _check_exclude_files(settings.exclude)
    yolo = _yolo_teacher(config, class_names, task, device, plan.notices)
    _choose_labeller(plan, settings, teacher, yolo, device, config.student.batch)
    if settings.label_backend == "ray":
        plan.cache_filler = _ray_filler(settings, plan, config.student.batch, teacher is not None)
    _check_labelling_settings(plan, settings, class_names)

    plan.components["pseudo_labels"] = _pseudo_labels_component(plan, settings)
    labelling = plan.components["pseudo_labels"].active
    plan.components["soft_targets"] = (
        Component(1.0, True, "the teacher's per-class scores and confidence weight the student's targets")
        if labelling and settings.soft_targets
        else Component(0.0, False, "distillation.soft_targets is false" if labelling else "no teacher labels")
    )
    plan.components["mask_quality"] = (
        Component(1.0, True, "mask loss weighted by the mask teacher's predicted IoU")
        if plan.components["soft_targets"].active and task == "segment"
        else Component(0.0, False, "needs soft targets and a segmentation student")
    )
    plan.components["calibrated_thresholds"] = _calibrated_thresholds_component(settings, labelling)
    _plan_kd_terms(plan, settings, yolo, student_reg_max)
    if not plan.components["pseudo_labels"].active:
        settings.label_train_images = False
    if not plan.components["soft_targets"].active:
        settings.soft_targets = False
    plan.components["weight_selection"] = _plan_weight_selection(
        plan, settings, yolo, scratch_student, class_names, selected_start
    )
    if not plan.components["weight_selection"].active:
        settings.inherit_weights = False
    plan.kd = _kd_settings(plan, settings, yolo)
    if plan.labeller is not None and not plan.active:  # given, yet it would change nothing: refuse, say why
        raise UsageError(
            f"the {plan.labeller_source} would contribute nothing: distillation.label_train_images is false, "
            "no --unlabeled images were given and no KD term or weight selection applies",
            "drop --set distillation.label_train_images=false, add --unlabeled DIR, or leave the teacher out",
        )
    return plan


def _check_exclude_files(excluded_files: Sequence[str]) -> None:
    for excluded in excluded_files:
        if not Path(excluded).is_file():
            raise UsageError(f"--exclude {excluded} is not a file", "pass a COCO JSON file (e.g. the test split)")


def _yolo_teacher(
    config: Any, class_names: Sequence[str], task: str, device: str, notices: list[str]
) -> YoloTeacher | None:
    """The YOLO teacher of ``distillation.ultralytics_teacher`` (None when not set)."""
    settings = config.distillation
    if not settings.ultralytics_teacher:
        return None
    yolo = YoloTeacher(
        settings.ultralytics_teacher,
        class_names,
        conf=settings.teacher_conf,
        imgsz=settings.teacher_imgsz or config.student.imgsz,
        device=device,
    )
    if task == "segment" and yolo.task != "segment":
        notices.append("the YOLO teacher predicts boxes only: its pseudo-labels train the masks as rectangles")
    return yolo


def _choose_labeller(
    plan: DistillationPlan,
    settings: Any,
    teacher: Teacher | None,
    yolo: YoloTeacher | None,
    device: str,
    batch_size: int,
) -> None:
    """The teacher giving the pseudo-labels: a given object, else ``--teacher-dir``, else the YOLO teacher."""
    if teacher is not None:
        plan.labeller, plan.labeller_source = teacher, "given Teacher object"
    elif settings.teacher_dir:
        plan.labeller = load_directory_teacher(Path(settings.teacher_dir), device, batch_size)
        plan.labeller_source = f"teacher-dir {settings.teacher_dir}"
        plan.teacher_dir = Path(settings.teacher_dir)
    elif yolo is not None:
        plan.labeller, plan.labeller_source = yolo, f"YOLO teacher {settings.ultralytics_teacher}"


def _check_labelling_settings(plan: DistillationPlan, settings: Any, class_names: Sequence[str]) -> None:
    """Refuse settings that contradict the teacher or the data; note a pseudo_label_conf with no effect."""
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
    if settings.class_thresholds is not None and len(settings.class_thresholds) != len(class_names):
        raise UsageError(
            f"distillation.class_thresholds has {len(settings.class_thresholds)} values for "
            f"{len(class_names)} classes {list(class_names)}",
            "give one threshold per class, in this order, or null to calibrate them on --val",
        )
    if settings.unlabeled_images:
        if plan.labeller is None:  # asked for, yet it would change nothing: say so instead of ignoring it
            raise UsageError(
                f"--unlabeled {settings.unlabeled_images} needs a teacher to label its images",
                "add --teacher MODEL.pt or --teacher-dir EXP, or leave --unlabeled out",
            )
        list_images(Path(settings.unlabeled_images), 1)  # a missing or image-less folder fails now, not after setup


def _pseudo_labels_component(plan: DistillationPlan, settings: Any) -> Component:
    if plan.labeller is None:
        return Component(0.0, False, "no teacher (--teacher or --teacher-dir)")
    if not (bool(settings.unlabeled_images) or settings.label_train_images):
        return Component(
            0.0, False, "nothing to label: no --unlabeled images and distillation.label_train_images is false"
        )
    return Component(1.0, True, f"labels from the {plan.labeller_source}")


def _calibrated_thresholds_component(settings: Any, labelling: bool) -> Component:
    if not labelling:
        return Component(0.0, False, "no teacher labels")
    if settings.class_thresholds is not None:
        return Component(0.0, False, f"distillation.class_thresholds given: {settings.class_thresholds}")
    if settings.calibrate_thresholds:
        return Component(1.0, True, "per-class gates at the teacher's best F1 on --val")
    return Component(0.0, False, f"one global gate, distillation.pseudo_label_conf={settings.pseudo_label_conf}")


def _plan_kd_terms(plan: DistillationPlan, settings: Any, yolo: YoloTeacher | None, student_reg_max: int) -> None:
    """ultralytics' distill_model or distillkit's three KD terms; zeroes the weights of the terms that cannot run."""
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
        component = _kd_term(settings, yolo, builtin, key, extra_need)
        plan.components[name] = component
        if not component.active:
            setattr(settings, key, 0.0)


def _kd_term(settings: Any, yolo: YoloTeacher | None, builtin: bool, key: str, extra_need: str | None) -> Component:
    """One KD term, weighted by ``distillation.<key>``; ``extra_need``: what else it lacks, if anything."""
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
    return Component(weight if active else 0.0, active, reason)


def _kd_settings(plan: DistillationPlan, settings: Any, yolo: YoloTeacher | None) -> KDSettings | None:
    """What the KD loss needs, when one of its terms runs."""
    if yolo is None or not any(plan.components[n].active for n in ("logit_kd", "dfl_kd", "feature_kd")):
        return None
    return KDSettings(
        teacher=yolo.path,
        class_index=yolo.class_index,
        weights=KDWeights(
            logit=settings.logit_weight,
            dfl=settings.dfl_weight,
            feature=settings.feature_weight,
            temperature=settings.temperature,
        ),
    )


def add_pseudo_labels(
    plan: DistillationPlan,
    config: Any,
    train: SplitSource,
    val: SplitSource,
    folder: Path,
    task: str,
    progress: Progress = NULL_PROGRESS,
    *,
    validation: Any = None,
    resume: bool = False,
    student_reference: tuple[str, float] | None = None,
) -> tuple[dict[str, SplitSource], PseudoLabelReport]:
    """The splits to convert: ``train`` (merged with teacher labels when asked), ``val``, and ``pseudo``.

    Before labelling, the teacher is scored on ``validation`` (the ``--val`` ValidationResult): below
    ``teacher_min_ap`` (or below ``student_reference``, the student's own starting AP) the run stops
    unless ``force_teacher``; its per-class gates are chosen there and written back into
    ``config.distillation.class_thresholds``. A resumed run reuses the gates it saved.
    """
    report = PseudoLabelReport()
    splits = {"train": train, "val": val}
    if not plan.components["pseudo_labels"].active:
        return splits, report
    assert plan.labeller is not None
    settings = config.distillation
    with_masks = task == "segment"
    with ExitStack() as stack:
        # A train-teacher experiment keeps one cache for its teachers (EXP/cache/teacher_outputs, as the
        # design lays it out), shared by `label` and every student trained from it; other teachers' labels
        # are cached in the student's own folder.
        cache_home = plan.teacher_dir if plan.teacher_dir is not None else folder
        cache_dir = (
            cache_home / CACHE_FOLDER
            if settings.cache
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="distillkit-teacher-")))
        )
        thresholds = _gates(
            plan, config, validation, val, folder, cache_dir, resume, student_reference, report, progress
        )
        unknown = _unknown_classes(settings, plan.labeller.class_names, report, plan)
        label_filter = LabelFilter(
            thresholds,
            nms_iou=settings.nms_iou,
            cross_class_iou=settings.cross_class_iou,
            dropped_classes=frozenset(unknown),
        )
        report.thresholds = [float(t) for t in thresholds]
        if settings.label_train_images:
            merged = label_training_images(
                train.dataset,
                train.image_roots,
                plan.labeller,
                cache_dir,
                label_filter=label_filter,
                merge_iou=settings.merge_iou,
                with_masks=with_masks,
                report=report,
                soft_targets=settings.soft_targets,
                batch_size=config.student.batch,
                progress=progress,
                filler=plan.cache_filler,
            )
            splits["train"] = SplitSource(merged, train.image_roots)
        if settings.unlabeled_images:
            images = list_images(Path(settings.unlabeled_images), settings.unlabeled_max_images)
            held_out = excluded_images([Path(f) for f in settings.exclude], ImageKeyIndex(), images_dir_flag=None).keys
            known = [*_image_keys(train), *_image_keys(val), *held_out]
            coco, root = label_unlabeled_images(
                images,
                train.dataset["categories"],
                plan.labeller,
                cache_dir,
                label_filter=label_filter,
                with_masks=with_masks,
                report=report,
                soft_targets=settings.soft_targets,
                exclude_keys=known,
                unknown_classes=unknown,
                batch_size=config.student.batch,
                progress=progress,
                filler=plan.cache_filler,
            )
            if coco["images"]:
                splits[PSEUDO_SPLIT] = SplitSource(coco, [root])
            if report.skipped_duplicate_images:
                report.notices.append(
                    f"{report.skipped_duplicate_images} --unlabeled images are copies of training, validation or "
                    "--exclude images (or of each other) and were left out"
                )
    return splits, report


def _gates(
    plan: DistillationPlan,
    config: Any,
    validation: Any,
    val: SplitSource,
    folder: Path,
    cache_dir: Path,
    resume: bool,
    student_reference: tuple[str, float] | None,
    report: PseudoLabelReport,
    progress: Progress,
) -> list[float]:
    """Per-class score gates for the teacher's labels; scores (and may refuse) the teacher on --val first."""
    settings = config.distillation
    num_classes = len(plan.labeller.class_names)  # type: ignore[union-attr]
    needs_score = not resume and (settings.teacher_min_ap > 0 or student_reference is not None)
    calibrate = settings.class_thresholds is None and settings.calibrate_thresholds
    if validation is None or not (needs_score or calibrate):
        if settings.class_thresholds is not None:
            return list(settings.class_thresholds)
        return [settings.pseudo_label_conf] * num_classes
    calibration = calibrate_teacher(
        plan.labeller,  # type: ignore[arg-type]
        validation,
        val.image_roots,
        cache_dir,
        fallback=settings.pseudo_label_conf,
        nms_iou=settings.nms_iou,
        cross_class_iou=settings.cross_class_iou,
        batch_size=config.student.batch,
        progress=progress,
        filler=plan.cache_filler,
    )
    _store_calibration(calibration, folder, plan.teacher_dir)
    report.teacher_ap = calibration.ap
    if needs_score:
        reference_name, reference_ap = student_reference or ("", None)
        notice = check_teacher_quality(
            calibration,
            settings.teacher_min_ap,
            reference_ap=reference_ap,
            reference=reference_name,
            force=settings.force_teacher,
        )
        if notice:
            report.notices.append(notice)
    if settings.unknown_classes is None and settings.unknown_class_ap > 0:
        settings.unknown_classes = [
            name
            for name, ap, instances in zip(
                calibration.class_names, calibration.per_class_ap, calibration.per_class_instances, strict=True
            )
            if instances > 0 and ap < settings.unknown_class_ap
        ]
    if settings.class_thresholds is not None:
        return list(settings.class_thresholds)
    if not calibrate:
        return [settings.pseudo_label_conf] * num_classes
    settings.class_thresholds = [round(float(t), 4) for t in calibration.thresholds]
    return list(settings.class_thresholds)


def _unknown_classes(
    settings: Any, class_names: Sequence[str], report: PseudoLabelReport, plan: DistillationPlan
) -> list[int]:
    """Indices of the classes the teacher does not know (``distillation.unknown_classes``), reported.

    Such a class (validation AP below ``unknown_class_ap``: Unbiased Teacher's observation that a
    teacher's errors on a class it cannot find are amplified by the student) gets no teacher labels,
    is not taught as background on the teacher-labelled unlabelled images, and is left out of logit KD.
    """
    names = list(settings.unknown_classes or [])
    missing = [name for name in names if name not in class_names]
    if missing:
        raise UsageError(
            f"distillation.unknown_classes names {missing}, which are not classes of this dataset",
            f"use names from {list(class_names)}, or null to decide them on --val",
        )
    unknown = sorted(class_names.index(name) for name in names)
    if not unknown:
        return []
    if len(unknown) == len(class_names):  # no labels, no KD: the teacher would contribute nothing at all
        raise UsageError(
            f"the teacher does not know any class of this dataset (AP below distillation.unknown_class_ap="
            f"{settings.unknown_class_ap:g} on --val for every class), so it would teach the student nothing",
            "train a better teacher, or train without one; distillation.unknown_classes=[] uses it anyway",
        )
    report.unknown_classes = [class_names[i] for i in unknown]
    report.notices.append(
        f"the teacher does not know {', '.join(report.unknown_classes)} (AP below "
        f"distillation.unknown_class_ap={settings.unknown_class_ap:g} on --val): it gives them no labels, "
        "unlabelled images do not teach them as background, and KD leaves them out"
    )
    if plan.kd is not None:
        plan.kd = replace(plan.kd, taught_classes=tuple(i not in unknown for i in range(len(class_names))))
    return unknown


def _store_calibration(calibration: TeacherCalibration, folder: Path, teacher_dir: Path | None) -> None:
    """Next to the run, and inside a train-teacher folder (where ``label`` finds it)."""
    atomic_write_json(folder / CALIBRATION_FILE, calibration.to_dict())
    if teacher_dir is not None and (teacher_dir / "teachers").is_dir():
        atomic_write_json(teacher_dir / "teachers" / "calibration.json", calibration.to_dict())


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
