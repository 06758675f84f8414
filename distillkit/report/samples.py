"""Per-image scores and the sample pictures of a report: prediction against ground truth, worst first.

A detector's image is scored by F1 at box IoU 0.5 over the detections at or above the evaluation's
best-F1 confidence (the same operating point as the confusion matrix): detections are matched
greedily by score to unmatched ground truth of their class (crowd regions are not counted). An image
with nothing to find and nothing found scores 1. Pictures are drawn with PIL at most ``max_side``
pixels wide or high and stored as JPEG bytes, so a page of samples stays small.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from distillkit.images import read_rgb

MATCH_IOU = 0.5
GT_FOUND, GT_MISSED = (40, 170, 70), (255, 150, 0)
PRED_RIGHT, PRED_WRONG = (40, 110, 240), (230, 40, 40)


@dataclass
class ImageScore:
    """How one image went: counts at the operating point, and what to draw."""

    file_name: str
    path: Path
    f1: float
    tp: int
    fp: int
    fn: int
    ground_truth: list[dict[str, Any]] = field(repr=False, default_factory=list)  # with "found": bool
    detections: list[dict[str, Any]] = field(repr=False, default_factory=list)  # with "correct": bool

    def to_dict(self) -> dict[str, Any]:
        return {"file_name": self.file_name, "f1": self.f1, "tp": self.tp, "fp": self.fp, "fn": self.fn}


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two COCO [x, y, w, h] boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def score_images(
    dataset: dict[str, Any], detections: Sequence[dict[str, Any]], paths: dict[int, Path], confidence: float
) -> list[ImageScore]:
    """One ``ImageScore`` per ground-truth image found on disk (``paths``: image id -> file)."""
    truth: dict[int, list[dict[str, Any]]] = {}
    for annotation in dataset["annotations"]:
        if not annotation.get("iscrowd"):
            truth.setdefault(int(annotation["image_id"]), []).append(annotation)
    found: dict[int, list[dict[str, Any]]] = {}
    for detection in detections:
        if float(detection["score"]) >= confidence and "image_id" in detection:
            found.setdefault(int(detection["image_id"]), []).append(detection)
    scores = []
    for image in dataset["images"]:
        image_id = int(image["id"])
        if image_id not in paths:
            continue
        gts = [{**gt, "found": False} for gt in truth.get(image_id, [])]
        dets = sorted(found.get(image_id, []), key=lambda d: -float(d["score"]))
        marked = []
        for det in dets:
            best, best_iou = None, MATCH_IOU
            for gt in gts:
                if gt["found"] or gt["category_id"] != det["category_id"]:
                    continue
                iou = box_iou(det["bbox"], gt["bbox"])
                if iou >= best_iou:
                    best, best_iou = gt, iou
            if best is not None:
                best["found"] = True
            marked.append({**det, "correct": best is not None})
        tp = sum(d["correct"] for d in marked)
        fp, fn = len(marked) - tp, len(gts) - tp
        f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        scores.append(ImageScore(str(image["file_name"]), paths[image_id], f1, tp, fp, fn, gts, marked))
    return scores


def worst_first(scores: Sequence[ImageScore], count: int) -> list[ImageScore]:
    """The ``count`` lowest-F1 images; among equals the one with more mistakes first."""
    return sorted(scores, key=lambda s: (s.f1, -(s.fp + s.fn), s.file_name))[:count]


def draw_detections(score: ImageScore, class_names: dict[int, str], max_side: int) -> bytes:
    """The image with ground truth (green found, orange missed) and detections (blue right, red wrong)."""
    base = Image.fromarray(read_rgb(score.path))
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    for gt in score.ground_truth:
        _fill_mask(overlay, gt.get("segmentation"), GT_FOUND if gt["found"] else GT_MISSED, 60)
    for det in score.detections:
        _fill_mask(overlay, det.get("segmentation"), PRED_RIGHT if det["correct"] else PRED_WRONG, 90)
    blended = np.asarray(Image.alpha_composite(base.convert("RGBA"), overlay).convert("RGB"))
    picture = fit_picture(blended, max_side)
    scale = picture.size[0] / base.size[0]
    draw = ImageDraw.Draw(picture)
    for gt in score.ground_truth:
        _box(draw, gt["bbox"], scale, GT_FOUND if gt["found"] else GT_MISSED)
    for det in score.detections:
        colour = PRED_RIGHT if det["correct"] else PRED_WRONG
        _box(draw, det["bbox"], scale, colour)
        name = class_names.get(int(det["category_id"]), str(det["category_id"]))
        x, y = det["bbox"][0] * scale, det["bbox"][1] * scale
        label = f"{name} {float(det['score']):.2f}"
        draw.rectangle(draw.textbbox((x + 2, y + 1), label), fill=colour)
        draw.text((x + 2, y + 1), label, fill=(255, 255, 255))
    return jpeg_bytes(picture)


def _box(draw: ImageDraw.ImageDraw, bbox: Sequence[float], scale: float, colour: tuple[int, int, int]) -> None:
    x, y, w, h = (float(v) * scale for v in bbox)
    draw.rectangle([x, y, x + max(w, 1.0), y + max(h, 1.0)], outline=colour, width=2)


def _fill_mask(overlay: Image.Image, segmentation: Any, colour: tuple[int, int, int], alpha: int) -> None:
    """Tint the mask's pixels on ``overlay`` (an RGBA layer at the image's size)."""
    if not segmentation:
        return
    if isinstance(segmentation, list):  # polygons
        layer = ImageDraw.Draw(overlay)
        for polygon in segmentation:
            if len(polygon) >= 6:
                layer.polygon([float(v) for v in polygon], fill=(*colour, alpha))
        return
    from pycocotools import mask as mask_utils

    rle = segmentation
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    try:
        mask = mask_utils.decode(rle).astype(bool)
    except Exception:  # a mask that does not decode: the box still shows the object
        return
    if mask.shape[:2] != (overlay.size[1], overlay.size[0]):
        return  # drawn at another size than the file on disk: leave it to the box
    tint = Image.new("RGBA", overlay.size, (*colour, alpha))
    overlay.paste(tint, (0, 0), Image.fromarray((mask * 255).astype(np.uint8), mode="L"))


def jpeg_bytes(picture: Image.Image, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def fit_picture(rgb: np.ndarray, max_side: int, min_side: int = 160) -> Image.Image:
    """An RGB array scaled into ``max_side`` (small inputs enlarged to ``min_side``, pixels kept sharp)."""
    picture = Image.fromarray(rgb)
    width, height = picture.size
    longest = max(width, height)
    if longest > max_side:
        scale = max_side / longest
        return picture.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    if longest < min_side:
        factor = max(1, min_side // longest)
        return picture.resize((width * factor, height * factor), Image.NEAREST)
    return picture
