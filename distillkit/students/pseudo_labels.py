"""Teacher predictions turned into extra training labels (pseudo-labels), merged with the ground truth.

Two sources, both through the teacher-output cache (``label_images``) so nothing is recomputed:

* images without labels (``--unlabeled DIR``): every teacher detection scoring at least
  ``pseudo_label_conf`` becomes a label; they form an extra ``pseudo`` split trained with ``train``;
* the training images themselves (``distillation.label_train_images``): teacher detections are
  added to the ground truth, except those overlapping a ground-truth box above ``merge_iou`` (the
  same object: the ground truth wins).

Labels are written as COCO annotations (boxes, and RLE masks when the teacher has them) so the
YOLO conversion, its polygon handling and its content-hash reuse apply to them unchanged.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.data.images import ImageLocator
from distillkit.errors import UsageError
from distillkit.labelling.cache import LabellingStats, image_content_key, label_images
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
    duplicates_dropped: int = 0
    skipped_duplicate_images: int = 0
    cache_hits: int = 0
    computed: int = 0
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "notices"}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def merge_with_ground_truth(
    prediction: TeacherPrediction, gt_boxes_xyxy: np.ndarray, min_score: float, merge_iou: float
) -> tuple[TeacherPrediction, int]:
    """Teacher detections worth adding to an image's ground truth, and how many were duplicates.

    Kept: score >= ``min_score`` and IoU <= ``merge_iou`` with every ground-truth box (of any class:
    an overlapping teacher box is the same object, and the ground truth's class wins).
    """
    confident = prediction.filtered(min_score)
    gt = np.asarray(gt_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(confident) == 0 or len(gt) == 0:
        return confident, 0
    overlap = box_iou(confident.boxes, gt).max(axis=1)
    keep = overlap <= merge_iou
    return confident.subset(keep), int((~keep).sum())


def prediction_annotations(
    prediction: TeacherPrediction, image_id: int, category_ids: Sequence[int], first_id: int, with_masks: bool
) -> list[dict[str, Any]]:
    """COCO annotations for a prediction (boxes clipped to the image; RLE masks when asked and present)."""
    annotations = []
    for index in range(len(prediction)):
        x1, y1, x2, y2 = (float(v) for v in prediction.boxes[index])
        x1, x2 = max(0.0, x1), min(float(prediction.width), x2)
        y1, y2 = max(0.0, y1), min(float(prediction.height), y2)
        if x2 <= x1 or y2 <= y1:
            continue
        annotation: dict[str, Any] = {
            "id": first_id + len(annotations),
            "image_id": image_id,
            "category_id": int(category_ids[int(prediction.class_ids[index])]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": (x2 - x1) * (y2 - y1),
            "iscrowd": 0,
            "score": float(prediction.scores[index]),
            "source": PSEUDO_SOURCE,
        }
        if with_masks and prediction.masks is not None:
            annotation["segmentation"] = prediction.masks[index]
        annotations.append(annotation)
    return annotations


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
    min_score: float,
    merge_iou: float,
    with_masks: bool,
    report: PseudoLabelReport,
    batch_size: int = 8,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, Any]:
    """A copy of the training COCO dict with the teacher's non-duplicate detections added."""
    merged = copy.deepcopy(dataset)
    locator = ImageLocator(image_roots)
    paths = {image["id"]: locator.resolve(image["file_name"]) for image in merged["images"]}
    images = [image for image in merged["images"] if paths[image["id"]] is not None]
    category_ids = sorted(c["id"] for c in merged["categories"])
    gt_boxes: dict[int, list[list[float]]] = defaultdict(list)
    for ann in merged["annotations"]:
        gt_boxes[ann["image_id"]].append(_xyxy(ann["bbox"]))
    next_id = max((int(a["id"]) for a in merged["annotations"]), default=0) + 1
    stats = LabellingStats()
    predictions = label_images(
        teacher,
        [paths[i["id"]] for i in images],  # type: ignore[misc]
        cache_dir,
        batch_size=batch_size,
        progress=progress,
        stats=stats,
    )
    for image, (_, prediction) in zip(images, predictions, strict=True):
        kept, dropped = merge_with_ground_truth(prediction, np.array(gt_boxes[image["id"]]), min_score, merge_iou)
        kept = _rescaled(kept, image["width"], image["height"])
        added = prediction_annotations(kept, image["id"], category_ids, next_id, with_masks)
        merged["annotations"].extend(added)
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
    min_score: float,
    with_masks: bool,
    report: PseudoLabelReport,
    exclude_keys: Iterable[str] = (),
    batch_size: int = 8,
    progress: Progress = NULL_PROGRESS,
) -> tuple[dict[str, Any], Path]:
    """A COCO dict of the unlabelled images and their pseudo-labels, plus the root its file_names are under.

    Images whose content equals an image in ``exclude_keys`` (training or validation images) are
    left out: they would be labelled twice, or leak validation images into training.
    """
    resolved = [Path(p).resolve() for p in images]
    root = _common_root(resolved)
    excluded = set(exclude_keys)
    selected = [p for p in resolved if image_content_key(p) not in excluded]
    report.skipped_duplicate_images += len(images) - len(selected)
    category_ids = sorted(c["id"] for c in categories)
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": copy.deepcopy(categories)}
    stats = LabellingStats()
    for image_id, (path, prediction) in enumerate(
        label_images(teacher, selected, cache_dir, batch_size=batch_size, progress=progress, stats=stats), start=1
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
            prediction.filtered(min_score), image_id, category_ids, len(coco["annotations"]) + 1, with_masks
        )
        coco["annotations"].extend(added)
        report.unlabeled_labels += len(added)
    report.unlabeled_images += len(coco["images"])
    report.cache_hits += stats.hits
    report.computed += stats.computed
    return coco, root


def _rescaled(prediction: TeacherPrediction, width: int, height: int) -> TeacherPrediction:
    """Predictions are in the image file's pixels; COCO ``width``/``height`` must agree (validate checks it)."""
    if (prediction.width, prediction.height) == (width, height):
        return prediction
    scale = np.array([width / prediction.width, height / prediction.height] * 2, dtype=np.float32)
    return TeacherPrediction(
        width=width,
        height=height,
        boxes=prediction.boxes * scale,
        scores=prediction.scores,
        class_ids=prediction.class_ids,
        class_scores=prediction.class_scores,
        masks=None,  # RLE at another size cannot be used as is; the box stands in for the mask
        extra=prediction.extra,
    )


def _common_root(paths: Sequence[Path]) -> Path:
    parents = [p.parent for p in paths]
    root = parents[0]
    for parent in parents[1:]:
        while root not in (parent, *parent.parents):
            root = root.parent
    return root
