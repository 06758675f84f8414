"""COCO metrics exactly as pycocotools computes them, plus per-class AP, P/R/F1 and mask IoU.

The twelve summary numbers come straight from ``COCOeval.stats`` (no re-implementation). The
extras are read from the same ``COCOeval`` run: per-class AP from its precision table, precision /
recall / F1 at the confidence that maximises F1 from its per-image matches at IoU 0.5 (area "all",
100 detections), and the IoU of matched mask pairs for ``segm``.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from distillkit.data.validate import ValidationResult, load_valid_dataset
from distillkit.errors import UsageError
from distillkit.evaluation.predictions import for_iou_type, load_predictions, prepare_predictions
from distillkit.progress import NULL_PROGRESS, Progress

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


@dataclass
class ClassMetrics:
    id: int
    name: str
    gt_instances: int
    detections: int
    AP: float
    AP50: float
    AP75: float
    precision: float
    recall: float
    f1: float
    best_f1_confidence: float = 0.0  # this class's own F1-maximising score threshold (per-class gates)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class IouTypeMetrics:
    """Everything measured for one iou type (``bbox`` or ``segm``)."""

    iou_type: str
    stats: dict[str, float]
    precision: float  # at ``confidence``, all classes together, IoU 0.5
    recall: float
    f1: float
    confidence: float  # the score threshold that maximises F1
    per_class: list[ClassMetrics]
    mean_mask_iou: float | None = None  # segm: mean IoU of the matched (dt, gt) pairs at IoU 0.5
    pr_curves: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # class id -> precision @ 101 recalls
    confusion: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.stats)
        out.update(precision=self.precision, recall=self.recall, f1=self.f1, confidence=self.confidence)
        if self.mean_mask_iou is not None:
            out["mean_mask_iou"] = self.mean_mask_iou
        out["per_class"] = [c.to_dict() for c in self.per_class]
        return out


@dataclass
class EvaluationResult:
    ground_truth: str
    predictions: str
    num_images: int
    num_detections: int
    min_score: float
    metrics: dict[str, IouTypeMetrics]
    class_names: dict[int, str]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ground_truth": self.ground_truth,
            "predictions": self.predictions,
            "num_images": self.num_images,
            "num_detections": self.num_detections,
            "min_score": self.min_score,
        }
        for iou_type, metrics in self.metrics.items():
            out[iou_type] = metrics.to_dict()
        out["warnings"] = list(self.warnings)
        return out


def load_ground_truth(path: str | Path, progress: Progress = NULL_PROGRESS) -> ValidationResult:
    """Ground truth as evaluation needs it: checked, missing values filled, stored values kept."""
    return load_valid_dataset(path, replace_inconsistent=False, progress=progress)


def evaluate_predictions(
    ground_truth: str | Path | ValidationResult,
    predictions: str | Path | list[Any],
    iou_types: str = "auto",
    min_score: float = 0.0,
    progress: Progress = NULL_PROGRESS,
) -> EvaluationResult:
    """Score COCO-format detections against a COCO ground-truth file.

    ``iou_types``: ``bbox``, ``segm``, ``both`` or ``auto`` (``bbox``, plus ``segm`` when both the
    ground truth and the detections have masks). The ground truth goes through ``validate``'s checks
    with stored bbox/area kept as they are (pycocotools scores what is stored).
    """
    if iou_types not in ("auto", "both", *IOU_TYPES):
        raise UsageError(f"--iou-type {iou_types!r} is not one of bbox, segm, both, auto")
    gt = ground_truth if isinstance(ground_truth, ValidationResult) else load_ground_truth(ground_truth, progress)
    assert gt.dataset is not None
    dataset = gt.dataset
    raw = load_predictions(predictions)
    detections, warnings = prepare_predictions(raw, dataset, min_score=min_score)
    chosen = _choose_iou_types(iou_types, gt.info.has_masks, any("segmentation" in d for d in detections))
    coco_gt = _coco_from_dict(dataset)
    class_names = {c["id"]: c["name"] for c in dataset["categories"]}
    results: dict[str, IouTypeMetrics] = {}
    for iou_type in chosen:
        with progress.task(f"evaluating {iou_type}", total=None):
            results[iou_type] = _evaluate_one(coco_gt, for_iou_type(detections, iou_type), iou_type, class_names)
    return EvaluationResult(
        ground_truth=str(gt.report.source or ground_truth),
        predictions=str(predictions) if isinstance(predictions, (str, Path)) else "<list>",
        num_images=len(dataset["images"]),
        num_detections=len(detections),
        min_score=min_score,
        metrics=results,
        class_names=class_names,
        warnings=warnings,
    )


def _choose_iou_types(requested: str, gt_has_masks: bool, dt_has_masks: bool) -> list[str]:
    if requested == "auto":
        return ["bbox", "segm"] if gt_has_masks and dt_has_masks else ["bbox"]
    requested_types = ["bbox", "segm"] if requested == "both" else [requested]
    if "segm" in requested_types and not (gt_has_masks and dt_has_masks):
        missing = "the ground truth" if not gt_has_masks else "the predictions"
        raise UsageError(f"cannot evaluate masks: {missing} has no segmentation", "use --iou-type bbox")
    return requested_types


def _coco_from_dict(dataset: dict[str, Any]) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def _evaluate_one(
    coco_gt: COCO, detections: list[dict[str, Any]], iou_type: str, class_names: dict[int, str]
) -> IouTypeMetrics:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections) if detections else _empty_results(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {key: float(value) for key, value in zip(STAT_KEYS, evaluator.stats, strict=True)}
    matches = _matches_at_iou50(evaluator)
    confidence, overall = _best_f1(matches, list(class_names))
    per_class = _per_class(evaluator, matches, confidence, class_names)
    mean_iou = _mean_matched_mask_iou(evaluator, coco_gt, coco_dt) if iou_type == "segm" else None
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    curves = {cat: precision[0, :, k, 0, -1].copy() for k, cat in enumerate(evaluator.params.catIds)}
    return IouTypeMetrics(
        iou_type=iou_type,
        stats=stats,
        precision=overall[0],
        recall=overall[1],
        f1=overall[2],
        confidence=confidence,
        per_class=per_class,
        mean_mask_iou=mean_iou,
        pr_curves=curves,
        confusion=_confusion_matrix(coco_gt, coco_dt, list(class_names), confidence),
    )


def _empty_results(coco_gt: COCO) -> COCO:
    empty = COCO()
    empty.dataset = {
        "images": coco_gt.dataset["images"],
        "categories": coco_gt.dataset["categories"],
        "annotations": [],
    }
    empty.createIndex()
    return empty


@dataclass
class _ClassMatches:
    scores: np.ndarray  # detections not ignored, any order
    true_positive: np.ndarray
    positives: int  # ground truths not ignored


def _matches_at_iou50(evaluator: COCOeval) -> dict[int, _ClassMatches]:
    """Per class: scores and TP flags of the detections at IoU 0.5, area 'all', maxDets 100."""
    params = evaluator.params
    n_area, n_images = len(params.areaRng), len(params.imgIds)
    out = {}
    for k, cat in enumerate(params.catIds):
        scores, tps, positives = [], [], 0
        for i in range(n_images):
            record = evaluator.evalImgs[k * n_area * n_images + i]  # area index 0 = "all"
            if record is None:
                continue
            keep = ~np.asarray(record["dtIgnore"][0], dtype=bool)[: params.maxDets[-1]]
            dt_scores = np.asarray(record["dtScores"][: params.maxDets[-1]])
            matched = np.asarray(record["dtMatches"][0][: params.maxDets[-1]]) > 0
            scores.append(dt_scores[keep[: len(dt_scores)]])
            tps.append(matched[keep[: len(matched)]])
            positives += int(np.count_nonzero(~np.asarray(record["gtIgnore"], dtype=bool)))
        out[cat] = _ClassMatches(
            scores=np.concatenate(scores) if scores else np.zeros(0),
            true_positive=np.concatenate(tps) if tps else np.zeros(0, dtype=bool),
            positives=positives,
        )
    return out


def _prf_at(matches: _ClassMatches, threshold: float) -> tuple[float, float, float]:
    selected = matches.scores >= threshold
    tp = int(np.count_nonzero(matches.true_positive & selected))
    n_det = int(np.count_nonzero(selected))
    precision = tp / n_det if n_det else 0.0
    recall = tp / matches.positives if matches.positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _best_f1(matches: dict[int, _ClassMatches], categories: list[int]) -> tuple[float, tuple[float, float, float]]:
    """The score threshold that maximises F1 over all classes together, and (P, R, F1) there."""
    pooled = _ClassMatches(
        scores=np.concatenate([m.scores for m in matches.values()]) if matches else np.zeros(0),
        true_positive=np.concatenate([m.true_positive for m in matches.values()]) if matches else np.zeros(0, bool),
        positives=sum(m.positives for m in matches.values()),
    )
    if pooled.scores.size == 0 or pooled.positives == 0:
        return 0.0, (0.0, 0.0, 0.0)
    order = np.argsort(-pooled.scores, kind="mergesort")
    scores = pooled.scores[order]
    tp = np.cumsum(pooled.true_positive[order])
    n_det = np.arange(1, len(scores) + 1)
    precision = tp / n_det
    recall = tp / pooled.positives
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    # only thresholds at the last detection of a run of equal scores are reachable
    last_of_run = np.r_[scores[1:] != scores[:-1], True]
    candidates = np.flatnonzero(last_of_run)
    best = candidates[np.argmax(f1[candidates])]
    return float(scores[best]), (float(precision[best]), float(recall[best]), float(f1[best]))


def _per_class(
    evaluator: COCOeval, matches: dict[int, _ClassMatches], confidence: float, class_names: dict[int, str]
) -> list[ClassMetrics]:
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    out = []
    for k, cat in enumerate(evaluator.params.catIds):
        table = precision[:, :, k, 0, -1]
        p, r, f = _prf_at(matches[cat], confidence)
        out.append(
            ClassMetrics(
                id=int(cat),
                name=class_names.get(cat, str(cat)),
                gt_instances=matches[cat].positives,
                detections=int(matches[cat].scores.size),
                AP=_mean_valid(table),
                AP50=_mean_valid(table[0]),
                AP75=_mean_valid(table[5]),
                precision=p,
                recall=r,
                f1=f,
                best_f1_confidence=_best_f1({cat: matches[cat]}, [cat])[0],
            )
        )
    return out


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def _mean_matched_mask_iou(evaluator: COCOeval, coco_gt: COCO, coco_dt: COCO) -> float | None:
    params = evaluator.params
    n_area, n_images = len(params.areaRng), len(params.imgIds)
    dt_rles, gt_rles = [], []
    for k in range(len(params.catIds)):
        for i in range(n_images):
            record = evaluator.evalImgs[k * n_area * n_images + i]
            if record is None:
                continue
            for dt_id, gt_id in zip(record["dtIds"], record["dtMatches"][0], strict=False):
                if gt_id > 0:
                    dt_rles.append(coco_dt.annToRLE(coco_dt.anns[dt_id]))
                    gt_rles.append(coco_gt.annToRLE(coco_gt.anns[int(gt_id)]))
    if not dt_rles:
        return None
    ious = [float(mask_utils.iou([d], [g], [0])[0][0]) for d, g in zip(dt_rles, gt_rles, strict=True)]
    return float(np.mean(ious))


def _confusion_matrix(coco_gt: COCO, coco_dt: COCO, categories: list[int], confidence: float) -> np.ndarray:
    """Rows: predicted class (+ background), columns: true class (+ background); IoU 0.5 on boxes.

    Detections at or above ``confidence`` are matched greedily by score to the non-crowd ground truth
    of any class; unmatched detections count as background in the true column, missed ground truth
    as background in the predicted row. Detections overlapping a crowd region are ignored.
    """
    index = {cat: i for i, cat in enumerate(categories)}
    background = len(categories)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    for image_id in coco_gt.getImgIds():
        gts = [a for a in coco_gt.imgToAnns.get(image_id, []) if a["category_id"] in index]
        dts = [d for d in coco_dt.imgToAnns.get(image_id, []) if d["score"] >= confidence and d["category_id"] in index]
        dts.sort(key=lambda d: -d["score"])
        regular = [g for g in gts if not g.get("iscrowd", 0)]
        crowd = [g for g in gts if g.get("iscrowd", 0)]
        taken = np.zeros(len(regular), dtype=bool)
        if dts and regular:
            ious = mask_utils.iou([d["bbox"] for d in dts], [g["bbox"] for g in regular], [0] * len(regular))
        for d_index, detection in enumerate(dts):
            best, best_iou = -1, 0.5
            if regular:
                for g_index in range(len(regular)):
                    if not taken[g_index] and ious[d_index, g_index] >= best_iou:
                        best, best_iou = g_index, float(ious[d_index, g_index])
            predicted = index[detection["category_id"]]
            if best >= 0:
                taken[best] = True
                matrix[predicted, index[regular[best]["category_id"]]] += 1
            elif (
                crowd
                and (mask_utils.iou([detection["bbox"]], [c["bbox"] for c in crowd], [1] * len(crowd)) >= 0.5).any()
            ):
                continue
            else:
                matrix[predicted, background] += 1
        for g_index, gt in enumerate(regular):
            if not taken[g_index]:
                matrix[background, index[gt["category_id"]]] += 1
    return matrix
