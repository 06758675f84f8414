"""Scoring a teacher on the validation split before it labels anything: its AP, and one gate per class.

A teacher is trusted only as far as it was measured. Before labelling, it labels the validation
images (through the same content-keyed cache, so a second run costs nothing), its cleaned
detections (``postprocess``) are scored with the same COCO evaluator ``evaluate`` uses, and:

* each class gets the score threshold at which the teacher's F1 on that class peaks on validation
  (Unbiased Teacher / Efficient Teacher use one fixed threshold; per-class points matter here because
  rare classes score lower than common ones). A class with no validation instance, or on which the
  teacher never found one, takes the pooled best-F1 point of all classes, or ``fallback`` when the
  teacher found nothing at all;
* ``check_teacher_quality`` refuses a teacher whose AP is below a floor (or below a reference, such
  as the student's own starting AP), so a teacher that learnt nothing never floods the training set
  with its guesses.

The calibration is written as JSON next to the run (and, for a ``train-teacher`` folder, inside
it as ``teachers/calibration.json``) and its thresholds land in the run's config.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distillkit.data.images import ImageLocator
from distillkit.errors import DataError
from distillkit.labelling.cache import LabellingStats, label_images
from distillkit.labelling.coco_export import prediction_annotations
from distillkit.labelling.postprocess import classwise_nms, suppress_cross_class_duplicates
from distillkit.labelling.types import Teacher
from distillkit.progress import NULL_PROGRESS, Progress

CALIBRATION_FILE = "teacher_calibration.json"


@dataclass
class TeacherCalibration:
    """What the teacher scored on the validation split, and the per-class gates chosen there."""

    class_names: list[str]
    thresholds: list[float]  # per class, in the dataset's class order
    threshold_source: list[str]  # per class: "class best F1", "pooled best F1" or "fallback"
    ap: float  # COCO AP50-95 (boxes)
    ap50: float
    per_class_ap: list[float]
    per_class_instances: list[int]
    num_images: int
    num_detections: int
    teacher_identity: str
    validation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TeacherCalibration:
        return cls(**{key: record[key] for key in cls.__dataclass_fields__})


def calibrate_teacher(
    teacher: Teacher,
    validation: Any,
    image_roots: Sequence[Path],
    cache_dir: Path,
    *,
    fallback: float,
    nms_iou: float,
    cross_class_iou: float,
    batch_size: int = 8,
    progress: Progress = NULL_PROGRESS,
    stats: LabellingStats | None = None,
    filler: Any = None,
) -> TeacherCalibration:
    """Label ``validation``'s images (a ``ValidationResult``), score the cleaned labels, choose the gates."""
    from distillkit.evaluation.coco_metrics import evaluate_predictions

    dataset = validation.dataset
    assert dataset is not None
    locator = ImageLocator(image_roots)
    located = [(image, locator.resolve(image["file_name"])) for image in dataset["images"]]
    images = [(image, path) for image, path in located if path is not None]
    if not images:
        raise DataError(
            "none of the validation images were found, so the teacher cannot be scored",
            "pass --images-dir with the folder holding them, or keep them beside the --val file or in its "
            "images/ folder",
        )
    category_ids = sorted(int(c["id"]) for c in dataset["categories"])
    detections: list[dict[str, Any]] = []
    predictions = label_images(
        teacher,
        [path for _, path in images],
        cache_dir,
        batch_size=batch_size,
        progress=progress,
        stats=stats,
        filler=filler,
    )
    for (image, _), (_, raw) in zip(images, predictions, strict=True):
        cleaned = suppress_cross_class_duplicates(classwise_nms(raw, nms_iou), cross_class_iou)
        scaled = cleaned.scaled_to(int(image["width"]), int(image["height"]))
        detections += prediction_annotations(scaled, image["id"], category_ids, len(detections) + 1, "none")
    # pycocotools' COCOeval writes "ignore" keys into the ground truth it is given: score a copy, so the
    # caller's validation split (converted for training next) stays byte-identical across runs.
    result = evaluate_predictions(copy.deepcopy(validation), detections, iou_types="bbox")
    metrics = result.metrics["bbox"]
    by_id = {c.id: c for c in metrics.per_class}
    pooled = metrics.confidence if metrics.f1 > 0 else None
    thresholds, sources, per_class_ap, instances = [], [], [], []
    for category_id in category_ids:
        stats_of = by_id.get(category_id)
        if stats_of is not None and stats_of.gt_instances > 0 and stats_of.f1 > 0:
            thresholds.append(float(stats_of.best_f1_confidence))
            sources.append("class best F1")
        elif pooled is not None:
            thresholds.append(float(pooled))
            sources.append("pooled best F1")
        else:
            thresholds.append(float(fallback))
            sources.append("fallback")
        per_class_ap.append(float(stats_of.AP) if stats_of is not None else 0.0)
        instances.append(int(stats_of.gt_instances) if stats_of is not None else 0)
    return TeacherCalibration(
        class_names=list(teacher.class_names),
        thresholds=thresholds,
        threshold_source=sources,
        ap=max(0.0, float(metrics.stats["AP"])),
        ap50=max(0.0, float(metrics.stats["AP50"])),
        per_class_ap=[max(0.0, v) for v in per_class_ap],
        per_class_instances=instances,
        num_images=len(images),
        num_detections=len(detections),
        teacher_identity=teacher.identity,
        validation=str(validation.report.source or "<in memory>"),
    )


def check_teacher_quality(
    calibration: TeacherCalibration,
    min_ap: float,
    *,
    reference_ap: float | None = None,
    reference: str = "",
    force: bool = False,
) -> str | None:
    """Refuse (DataError) a teacher scoring below ``min_ap`` or below ``reference_ap``; None when it passes.

    With ``force`` the refusal becomes the returned notice instead.
    """
    problem = None
    if calibration.ap < min_ap:
        problem = (
            f"the teacher scores AP {calibration.ap:.3f} on the validation split, below the floor "
            f"distillation.teacher_min_ap={min_ap:g}: its labels would teach the student its mistakes"
        )
    elif reference_ap is not None and calibration.ap < reference_ap:
        problem = (
            f"the teacher scores AP {calibration.ap:.3f} on the validation split, below {reference} "
            f"({reference_ap:.3f}): it has nothing to teach this student"
        )
    if problem is None:
        return None
    if force:
        return problem + " (used anyway: distillation.force_teacher is true)"
    raise DataError(
        problem,
        "train the teacher longer or on more data, or pass --force-teacher to use it anyway",
    )
