"""Teacher quality on a labelled set, with the same COCO evaluator as every other model.

Grounding DINO: box mAP prompted with every class name in one prompt (scores swept from 0.001, as
COCO evaluation expects). SAM: mask AP and mean IoU of masks prompted with the ground-truth boxes,
which measures the mask teacher alone, independent of any detector.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillkit.errors import DataError
from distillkit.evaluation import EvaluationResult
from distillkit.evaluation.coco_metrics import load_ground_truth
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.teachers.grounding_dino.data import detection_samples, locate_images
from distillkit.teachers.grounding_dino.evaluate import evaluate_boxes
from distillkit.teachers.labeller import load_teacher


@dataclass
class TeacherEvaluation:
    """One evaluation per teacher found in the experiment (``grounding_dino``, ``sam``)."""

    exp_dir: Path
    data: Path
    results: dict[str, EvaluationResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher_dir": str(self.exp_dir),
            "data": str(self.data),
            "teachers": {name: result.to_dict() for name, result in self.results.items()},
        }


def evaluate_teachers(
    exp_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    device: str | None = None,
    images_dir: Path | None = None,
    batch_size: int = 4,
    progress: Progress = NULL_PROGRESS,
) -> TeacherEvaluation:
    """Score every trained teacher of ``exp_dir`` on the ground truth ``data``."""
    gt = load_ground_truth(data, progress)
    assert gt.dataset is not None
    teacher = load_teacher(exp_dir, device=device, batch_size=batch_size, box_threshold=0.0, text_threshold=0.0)
    evaluation = TeacherEvaluation(Path(exp_dir), Path(data))
    if teacher.dino is not None:
        mapping = gt.info.class_mapping
        if list(teacher.class_names) != list(gt.info.class_names):
            raise DataError(
                f"{data} has classes {', '.join(gt.info.class_names)} but the teachers were trained on "
                f"{', '.join(teacher.class_names)}",
                "evaluate on a split of the dataset the teachers were trained on",
            )
        category_ids = [cid for cid, _ in sorted(mapping.items(), key=lambda item: item[1])]
        samples = detection_samples(gt.dataset, mapping, locate_images(gt.dataset, Path(data), images_dir))
        result = evaluate_boxes(
            teacher.dino.model,
            teacher.dino.processor,
            teacher.dino_record["prompt"],
            samples,
            gt,
            category_ids,
            teacher.device,
            batch_size,
            progress,
        )
        result.predictions = f"<Grounding DINO prompted with '{teacher.dino_record['prompt']}'>"
        evaluation.results["grounding_dino"] = result
    if teacher.sam is not None:
        from distillkit.teachers.sam.evaluate import evaluate_sam

        if gt.info.has_masks:
            evaluation.results["sam"] = evaluate_sam(teacher.sam, gt, progress=progress, images_dir=images_dir)
        elif not evaluation.results:
            raise DataError(f"{data} has no masks to score the SAM teacher against", "pass annotations with masks")
    return evaluation
