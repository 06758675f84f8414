"""Scoring an experiment's model for the report, with the library's own evaluators.

Training commands do not leave COCO metrics, per-class AP or per-image results in the experiment
folder, so the report runs the run's ``best.pt`` once on evaluation images — the run's own
validation split (``metadata.json`` ``extra.val`` for students, ``split.json`` or ``extra.val`` for
classifiers), or the ``--data`` file/folder given to ``distillkit report`` (a test split) — and
scores it exactly as ``evaluate`` does (``evaluate_predictions``; classifiers:
``classification_metrics`` on ``predict_paths`` outputs). The same predictions give each image's
F1 for the worst-first samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.data.images import ImageLocator, default_image_roots
from distillkit.errors import DataError, UsageError
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.report.collect import ExperimentRecord
from distillkit.report.figures import png_from
from distillkit.report.samples import draw_detections, fit_picture, jpeg_bytes, score_images, worst_first


class ValidationNotFoundError(UsageError):
    """A classifier run's validation images cannot be found again (its data moved): the report says so."""


@dataclass
class Scored:
    """The evaluation part of one experiment: JSON numbers, figures, and the sample pictures."""

    document: dict[str, Any]
    figures: dict[str, bytes] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    pictures: list[bytes] = field(default_factory=list)  # one per sample, JPEG


def score_detector(
    record: ExperimentRecord,
    data: Path,
    split: str,
    images_dir: Path | None = None,
    device: str | None = None,
    samples: int = 12,
    max_side: int = 320,
    progress: Progress = NULL_PROGRESS,
) -> Scored:
    """Run the student on ``data``'s images, score it as ``evaluate`` does, draw the worst images."""
    from distillkit.evaluation.coco_metrics import evaluate_predictions, load_ground_truth
    from distillkit.evaluation.models import EVAL_CONF, EVAL_MAX_DET, check_model_classes
    from distillkit.evaluation.plots import plot_confusion_matrix, plot_pr_curves
    from distillkit.inference import PredictionRun, load_model, predict_images

    gt = load_ground_truth(data, progress)
    assert gt.dataset is not None
    locator = ImageLocator(default_image_roots(data, images_dir))
    paths: dict[int, Path] = {}
    missing = []
    for image in gt.dataset["images"]:
        found = locator.resolve(image["file_name"])
        if found is None:
            missing.append(image["file_name"])
        else:
            paths[int(image["id"])] = found
    if missing:
        raise DataError(
            f"{len(missing)} images of {data} were not found (e.g. {missing[0]!r})",
            "pass --images-dir with the folder holding them",
        )
    loaded = load_model(record.model_file)
    check_model_classes(loaded.names, loaded.category_ids, gt.dataset["categories"], record.model_file, data)
    image_ids = {path.resolve(): image_id for image_id, path in paths.items()}
    first = next(iter(image_ids), None)
    if first is not None:  # warm-up, untimed: the first call of a model in a process is slow
        list(predict_images(loaded, [first], conf=EVAL_CONF, max_det=EVAL_MAX_DET, device=device))
    run = PredictionRun()
    detections = list(
        predict_images(
            loaded,
            list(image_ids),
            run=run,
            conf=EVAL_CONF,
            max_det=EVAL_MAX_DET,
            device=device,
            image_ids=image_ids,
            progress=progress,
        )
    )
    result = evaluate_predictions(gt, detections, iou_types="auto", progress=progress)
    main = "segm" if "segm" in result.metrics else "bbox"
    operating = result.metrics["bbox"].confidence
    scores = score_images(gt.dataset, detections, paths, operating)
    worst = worst_first(scores, samples)
    document = {
        "data": str(data),
        "split": split,
        "model": str(record.model_file),
        "num_images": result.num_images,
        "num_detections": result.num_detections,
        "size_mb": round(loaded.size_mb, 3),
        "parameters": loaded.parameters,
        "latency_ms": round(run.median_latency_ms, 3),
        "main_iou_type": main,
        "iou_types": {name: metrics.to_dict() for name, metrics in result.metrics.items()},
        "per_image": {
            "confidence": operating,
            "match_iou": 0.5,
            "mean_f1": float(np.mean([s.f1 for s in scores])) if scores else None,
            "images_below_half_f1": sum(s.f1 < 0.5 for s in scores),
        },
        "warnings": list(result.warnings),
    }
    figures = {}
    for name, metrics in result.metrics.items():
        figures[f"pr_curve_{name}"] = png_from(plot_pr_curves, metrics, result.class_names)
        figures[f"confusion_{name}"] = png_from(plot_confusion_matrix, metrics, result.class_names)
    with progress.task("drawing samples", total=len(worst)) as bar:
        pictures = []
        for score in worst:
            pictures.append(draw_detections(score, result.class_names, max_side))
            bar.advance()
    return Scored(document, figures, [s.to_dict() for s in worst], pictures)


def score_classifier(
    record: ExperimentRecord,
    data: Path | None,
    images_dir: Path | None = None,
    device: str | None = None,
    samples: int = 12,
    max_side: int = 320,
    progress: Progress = NULL_PROGRESS,
) -> Scored:
    """Run the classifier on ``data`` (default: its validation split), score it, Grad-CAM++ the worst images."""
    from distillkit.classify.metrics import classification_metrics
    from distillkit.classify.plots import plot_confusion, plot_multilabel_confusion, plot_reliability
    from distillkit.classify.predict import decide, predict_paths
    from distillkit.classify.runtime import open_classifier
    from distillkit.classify.sources import load_classification_data

    runtime = open_classifier(record.model_file, device)
    if data is not None:
        labelled = load_classification_data(data, images_dir).aligned_to(runtime.class_names)
        split, source = "given", str(data)
    else:
        labelled, source = classifier_validation(record)
        split = "val"
    predict_paths(runtime, labelled.paths[:1])  # warm-up, untimed: the first call of a model in a process is slow
    predictions = predict_paths(runtime, labelled.paths, progress=progress)
    names, multi = runtime.class_names, runtime.multi_label
    topk = [int(k) for k in (record.config.get("classifier.topk") or [1]) if int(k) <= len(names)] or [1]
    cut = runtime.decision().values
    metrics = classification_metrics(predictions.probabilities, labelled.targets, names, multi, topk, cut)
    uncalibrated = classification_metrics(predictions.uncalibrated, labelled.targets, names, multi, topk, cut)
    loaded = runtime.loaded
    parameters = int(sum(p.numel() for p in loaded.model.parameters())) if loaded is not None else None
    document = {
        "data": source,
        "split": split,
        "model": str(record.model_file),
        "size_mb": round(record.model_file.stat().st_size / 1e6, 3),
        "parameters": parameters,
        "latency_ms": round(predictions.median_latency_ms, 3),
        "temperature": runtime.temperature,
        "ece_uncalibrated": uncalibrated.ece,
        **metrics.to_dict(),
    }
    figures = {
        "reliability": png_from(plot_reliability, metrics.reliability, metrics.ece),
        "confusion": png_from(plot_multilabel_confusion if multi else plot_confusion, metrics.confusion, names),
    }
    probabilities, targets = predictions.probabilities, labelled.targets.astype(bool)
    decided = decide(probabilities, multi, cut)
    rows = []
    for index, path in enumerate(labelled.paths):
        truth = [names[c] for c in np.flatnonzero(targets[index])]
        predicted = [names[c] for c in decided[index]]
        if multi:
            hits = len(set(truth) & set(predicted))
            denominator = len(truth) + len(predicted)
            quality = 1.0 if denominator == 0 else 2 * hits / denominator
        else:
            quality = float(probabilities[index, int(np.argmax(targets[index]))])  # probability of the true class
        rows.append((quality, index, path, truth, predicted))
    rows.sort(key=lambda row: (row[0], str(row[2])))
    chosen = rows[:samples]
    sample_rows = [
        {
            "file_name": _shown_name(path, labelled.source),
            "true": truth,
            "predicted": predicted,
            "confidence": float(probabilities[index].max()),
            ("f1" if multi else "p_true"): quality,
            "correct": sorted(truth) == sorted(predicted),
        }
        for quality, index, path, truth, predicted in chosen
    ]
    pictures = _gradcam_pictures(runtime, [row[2] for row in chosen], [row[1] for row in chosen], decided, max_side)
    return Scored(document, figures, sample_rows, pictures)


def _shown_name(path: Path, source: Path) -> str:
    """An image's path relative to its data source's folder (a class folder tree: ``class/image.png``)."""
    root = source if source.is_dir() else source.parent
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _gradcam_pictures(
    runtime: Any, paths: list[Path], indices: list[int], decided: list[list[int]], max_side: int
) -> list[bytes]:
    """Each image beside its Grad-CAM++ map of the (first) predicted class; the image alone without a CNN."""
    import torch

    from distillkit.classify.dataset import resize, to_tensor
    from distillkit.images import read_rgb

    if not paths:
        return []
    loaded = runtime.loaded
    pixels = [resize(read_rgb(path), runtime.input_hw, runtime.interpolation) for path in paths]
    if loaded is None or not loaded.model.stage_modules:  # an ONNX file or a ViT: no spatial stage to explain
        return [jpeg_bytes(fit_picture(p, max_side)) for p in pixels]
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from distillkit.classify.gradcam import gradcam_maps

    batch = torch.stack([to_tensor(p, runtime.mean, runtime.std) for p in pixels])
    targets = [decided[i][0] if decided[i] else 0 for i in indices]
    maps = gradcam_maps(loaded, batch, targets)
    pictures = []
    for rgb, heat in zip(pixels, maps, strict=True):
        overlay = show_cam_on_image(rgb.astype(np.float32) / 255.0, heat, use_rgb=True)
        gap = np.full((rgb.shape[0], max(2, rgb.shape[1] // 16), 3), 255, dtype=np.uint8)
        pictures.append(jpeg_bytes(fit_picture(np.hstack([rgb, gap, overlay]), max_side)))
    return pictures


def classifier_validation(record: ExperimentRecord) -> tuple[Any, str]:
    """The labelled images a classifier run validated on: its ``--val``, else the held-out part of ``split.json``."""
    from distillkit.classify.sources import load_classification_data

    names = record.class_names
    if record.validation is not None:
        return load_classification_data(record.validation).aligned_to(names), str(record.validation)
    split = record.path / "split.json"
    dataset = record.config.get("data.dataset")
    if not split.is_file() or not dataset or not Path(str(dataset)).exists():
        raise ValidationNotFoundError(
            f"cannot find the validation images of {record.path} (no split.json, or its data {dataset} is gone)",
            "pass --data with a labelled folder, CSV or COCO file to score it on",
        )
    import orjson

    entries = [Path(str(p)) for p in (orjson.loads(split.read_bytes()).get("val") or [])]
    full = load_classification_data(str(dataset)).aligned_to(names)
    by_name: dict[str, list[int]] = {}
    for index, path in enumerate(full.paths):
        by_name.setdefault(path.name, []).append(index)
    chosen = []
    for entry in entries:
        candidates = by_name.get(entry.name, [])
        if entry.is_absolute():
            match = next((i for i in candidates if full.paths[i] == entry), None)
        else:  # relative to where training ran: match the path's tail (leading "../" dropped)
            tail = tuple(part for part in entry.parts if part not in ("..", "."))
            match = next((i for i in candidates if full.paths[i].parts[-len(tail) :] == tail), None)
        if match is not None:
            chosen.append(match)
    if not chosen:
        raise ValidationNotFoundError(
            f"the validation images listed in {split} are not in {dataset} any more",
            "pass --data with a labelled folder, CSV or COCO file to score it on",
        )
    return full.subset(chosen), f"{dataset} (validation part, {split.name})"
