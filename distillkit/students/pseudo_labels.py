"""Teacher predictions turned into extra training labels (pseudo-labels), merged with the ground truth.

Two sources, both through the teacher-output cache (``label_images``) so nothing is recomputed, and
both cleaned the same way (``LabelFilter``: class-wise NMS, cross-class duplicates, per-class
gates calibrated on the validation split):

* images without labels (``--unlabeled DIR``): every kept teacher detection becomes a label; they
  form an extra ``pseudo`` split trained with ``train``;
* the training images themselves (``distillation.label_train_images``, on by default): teacher
  detections are added to the ground truth (objects the annotator missed), except those overlapping
  a ground-truth box above ``merge_iou`` (the same object: the ground truth wins). A ground-truth
  box the teacher found keeps its hard class; the teacher's scores for the *other* classes become
  its soft target (what the teacher thinks it could be confused with).

Labels are written as COCO annotations (boxes, and RLE masks when the teacher has them) with the
teacher's ``score``; with soft targets on, also ``class_scores`` (the teacher's score for every
class) and ``mask_quality`` (the mask teacher's predicted IoU), which the YOLO conversion turns into
the soft-target table the student's loss reads (``soft_targets.py``).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou as _torch_box_iou

from distillkit.data.images import ImageLocator
from distillkit.errors import UsageError
from distillkit.labelling.cache import LabellingStats, image_content_key, label_images
from distillkit.labelling.coco_export import class_score_vector
from distillkit.labelling.coco_export import prediction_annotations as coco_annotations
from distillkit.labelling.postprocess import LabelFilter, classwise_nms, suppress_cross_class_duplicates
from distillkit.labelling.types import Teacher, TeacherPrediction
from distillkit.progress import NULL_PROGRESS, Progress

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PSEUDO_SOURCE = "teacher"  # marks generated annotations (``"source": "teacher"``) in the COCO dicts


@dataclass
class PseudoLabelReport:
    """What the teacher added: counts per source, and how many boxes the ground truth overruled."""

    unlabeled_images: int = 0
    unlabeled_labels: int = 0
    train_images_labelled: int = 0
    train_labels_added: int = 0
    ground_truth_soft_targets: int = 0
    duplicates_dropped: int = 0
    skipped_duplicate_images: int = 0
    cache_hits: int = 0
    computed: int = 0
    labels_per_class: dict[str, int] = field(default_factory=dict)
    teacher_ap: float | None = None  # box AP50-95 of the teacher on --val, when it was scored
    thresholds: list[float] = field(default_factory=list)  # the per-class score gates applied
    soft_targets_matched: int = 0  # labels the training dataset found their soft-target row for
    unknown_classes: list[str] = field(default_factory=list)  # classes the teacher does not know (per-class AP)
    ignore_regions: int = 0  # unlabelled images where those classes are not taught as background
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "notices"}

    @property
    def labels_added(self) -> int:
        return self.unlabeled_labels + self.train_labels_added

    def count(self, annotations: Sequence[dict[str, Any]], names: dict[int, str]) -> None:
        for ann in annotations:
            name = names[ann["category_id"]]
            self.labels_per_class[name] = self.labels_per_class.get(name, 0) + 1


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M) (torchvision's)."""
    left = torch.as_tensor(np.asarray(a, dtype=np.float32).reshape(-1, 4))
    right = torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1, 4))
    return _torch_box_iou(left, right).numpy()


def merge_with_ground_truth(
    prediction: TeacherPrediction, gt_boxes_xyxy: np.ndarray, min_score: float, merge_iou: float
) -> tuple[TeacherPrediction, int]:
    """Teacher detections worth adding to an image's ground truth, and how many were duplicates.

    Kept: score >= ``min_score`` and IoU <= ``merge_iou`` with every ground-truth box (of any class:
    an overlapping teacher box is the same object, and the ground truth's class wins).
    """
    return new_objects(prediction.filtered(min_score), gt_boxes_xyxy, merge_iou)


def new_objects(
    prediction: TeacherPrediction, gt_boxes_xyxy: np.ndarray, merge_iou: float
) -> tuple[TeacherPrediction, int]:
    """The detections overlapping no ground-truth box above ``merge_iou``, and how many did."""
    gt = np.asarray(gt_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(prediction) == 0 or len(gt) == 0:
        return prediction, 0
    keep = box_iou(prediction.boxes, gt).max(axis=1) <= merge_iou
    return prediction.subset(keep), int((~keep).sum())


def ground_truth_soft_scores(
    prediction: TeacherPrediction, gt_boxes_xyxy: np.ndarray, gt_classes: np.ndarray, merge_iou: float, num_classes: int
) -> list[list[float] | None]:
    """Per ground-truth box: the teacher's class scores of its best-overlapping detection, own class set to 1.

    None where no detection overlaps above ``merge_iou`` (the box keeps a plain hard target).
    """
    gt = np.asarray(gt_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    out: list[list[float] | None] = [None] * len(gt)
    if len(prediction) == 0 or len(gt) == 0:
        return out
    overlaps = box_iou(gt, prediction.boxes)
    best = overlaps.argmax(axis=1)
    for index, (detection, overlap) in enumerate(zip(best, overlaps.max(axis=1), strict=True)):
        if overlap <= merge_iou:
            continue
        vector = class_score_vector(prediction, int(detection), num_classes)
        vector[int(gt_classes[index])] = 1.0
        out[index] = vector
    return out


def prediction_annotations(
    prediction: TeacherPrediction,
    image_id: int,
    category_ids: Sequence[int],
    first_id: int,
    with_masks: bool,
    soft_targets: bool = False,
) -> list[dict[str, Any]]:
    """COCO annotations for a prediction (``distillkit label``'s writer, RLE masks when asked and present).

    Marked ``"source": "teacher"``; with ``soft_targets`` each also carries ``class_scores`` and, with
    masks, ``mask_quality``.
    """
    return coco_annotations(
        prediction,
        image_id,
        category_ids,
        first_id,
        "rle" if with_masks else "none",
        soft_targets=soft_targets,
        source=PSEUDO_SOURCE,
    )


def list_images(folder: Path, limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted so the selection is reproducible."""
    if not folder.is_dir():
        raise UsageError(f"--unlabeled {folder} is not a folder", "pass a folder of images")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise UsageError(f"no images in --unlabeled {folder}", f"it needs files ending in {', '.join(IMAGE_SUFFIXES)}")
    return found[:limit] if limit is not None else found


def _xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def label_training_images(
    dataset: dict[str, Any],
    image_roots: Sequence[Path],
    teacher: Teacher,
    cache_dir: Path,
    *,
    label_filter: LabelFilter,
    merge_iou: float,
    with_masks: bool,
    report: PseudoLabelReport,
    soft_targets: bool = True,
    batch_size: int = 8,
    progress: Progress = NULL_PROGRESS,
    filler: Any = None,
) -> dict[str, Any]:
    """A copy of the training COCO dict with the teacher's new objects added (and soft targets on its GT)."""
    merged = copy.deepcopy(dataset)
    locator = ImageLocator(image_roots)
    paths = {image["id"]: locator.resolve(image["file_name"]) for image in merged["images"]}
    images = [image for image in merged["images"] if paths[image["id"]] is not None]
    category_ids = sorted(c["id"] for c in merged["categories"])
    class_of = {category: index for index, category in enumerate(category_ids)}
    names = {c["id"]: c["name"] for c in merged["categories"]}
    gt_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in merged["annotations"]:
        if not ann.get("iscrowd", 0):
            gt_of[ann["image_id"]].append(ann)
    next_id = max((int(a["id"]) for a in merged["annotations"]), default=0) + 1
    stats = LabellingStats()
    predictions = label_images(
        teacher,
        [paths[i["id"]] for i in images],  # type: ignore[misc]
        cache_dir,
        batch_size=batch_size,
        progress=progress,
        stats=stats,
        filler=filler,
    )
    for image, (_, raw) in zip(images, predictions, strict=True):
        raw = raw.scaled_to(image["width"], image["height"])
        truth = gt_of[image["id"]]
        gt_boxes = np.array([_xyxy(ann["bbox"]) for ann in truth]).reshape(-1, 4)
        if soft_targets:  # the teacher's view of the annotated objects, before any score gate
            everything = suppress_cross_class_duplicates(
                classwise_nms(raw, label_filter.nms_iou), label_filter.cross_class_iou
            )
            classes = np.array([class_of[ann["category_id"]] for ann in truth], dtype=np.int64)
            for ann, vector in zip(
                truth,
                ground_truth_soft_scores(everything, gt_boxes, classes, merge_iou, len(category_ids)),
                strict=True,
            ):
                if vector is not None:
                    ann["class_scores"] = vector
                    report.ground_truth_soft_targets += 1
        kept, dropped = new_objects(label_filter.apply(raw), gt_boxes, merge_iou)
        added = prediction_annotations(kept, image["id"], category_ids, next_id, with_masks, soft_targets)
        merged["annotations"].extend(added)
        report.count(added, names)
        next_id += len(added)
        report.train_labels_added += len(added)
        report.duplicates_dropped += dropped
    report.train_images_labelled += len(images)
    report.cache_hits += stats.hits
    report.computed += stats.computed
    return merged


def label_unlabeled_images(
    images: Sequence[Path],
    categories: list[dict[str, Any]],
    teacher: Teacher,
    cache_dir: Path,
    *,
    label_filter: LabelFilter,
    with_masks: bool,
    report: PseudoLabelReport,
    soft_targets: bool = True,
    exclude_keys: Iterable[str] = (),
    unknown_classes: Sequence[int] = (),
    batch_size: int = 8,
    progress: Progress = NULL_PROGRESS,
    filler: Any = None,
) -> tuple[dict[str, Any], Path]:
    """A COCO dict of the unlabelled images and their pseudo-labels, plus the root its file_names are under.

    Images whose content equals an image in ``exclude_keys`` (training, validation or ``--exclude``
    images), or an earlier image of the list, are left out: they would be labelled twice, or leak
    held-out images into training. With ``unknown_classes`` (class indices the teacher does not know)
    and soft targets, each image also gets an ignore region (``ignore_region_annotation``).
    """
    resolved = [Path(p).resolve() for p in images]
    root = _common_root(resolved)
    seen = set(exclude_keys)
    selected = []
    for path in resolved:
        key = image_content_key(path)
        if key not in seen:
            selected.append(path)
            seen.add(key)
    report.skipped_duplicate_images += len(images) - len(selected)
    category_ids = sorted(c["id"] for c in categories)
    names = {c["id"]: c["name"] for c in categories}
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": copy.deepcopy(categories)}
    stats = LabellingStats()
    for image_id, (path, prediction) in enumerate(
        label_images(
            teacher, selected, cache_dir, batch_size=batch_size, progress=progress, stats=stats, filler=filler
        ),
        start=1,
    ):
        coco["images"].append(
            {
                "id": image_id,
                "file_name": path.relative_to(root).as_posix(),
                "width": int(prediction.width),
                "height": int(prediction.height),
            }
        )
        added = prediction_annotations(
            label_filter.apply(prediction),
            image_id,
            category_ids,
            len(coco["annotations"]) + 1,
            with_masks,
            soft_targets,
        )
        coco["annotations"].extend(added)
        report.count(added, names)
        report.unlabeled_labels += len(added)
        if unknown_classes and soft_targets:
            region = ignore_region_annotation(coco["images"][-1], unknown_classes, category_ids)
            coco["annotations"].append({**region, "id": len(coco["annotations"]) + 1})
            report.ignore_regions += 1
    report.unlabeled_images += len(coco["images"])
    report.cache_hits += stats.hits
    report.computed += stats.computed
    return coco, root


def ignore_region_annotation(
    image: dict[str, Any], unknown_classes: Sequence[int], category_ids: Sequence[int]
) -> dict[str, Any]:
    """A whole-image region of a teacher-labelled image where ``unknown_classes`` are not taught.

    The teacher labelled only the classes it knows; left as they are, the image's unlabelled objects
    of the other classes would be taught as background. The region rides through the YOLO
    conversion as a label line with a soft-target row of score -1 (see ``soft_targets``).
    """
    width, height = int(image["width"]), int(image["height"])
    flags = [1.0 if index in set(unknown_classes) else 0.0 for index in range(len(category_ids))]
    return {
        "image_id": image["id"],
        "category_id": category_ids[min(unknown_classes)],
        "bbox": [0.0, 0.0, float(width), float(height)],
        "area": float(width * height),
        "iscrowd": 0,
        "score": 0.0,
        "class_scores": flags,
        "ignore_region": True,
        "source": PSEUDO_SOURCE,
    }


def _common_root(paths: Sequence[Path]) -> Path:
    parents = [p.parent for p in paths]
    root = parents[0]
    for parent in parents[1:]:
        while root not in (parent, *parent.parents):
            root = root.parent
    return root
