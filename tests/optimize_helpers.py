"""Tiny YOLO checkpoints with random weights for the export tests, built in well under a second.

``score_logit`` lifts the class logits of the head so the untrained model emits confident-looking
detections (a random model's scores are ~1e-3): predictions then exist to compare between formats
and to serve as ground truth for the accuracy guard. ``live_features`` re-initialises the
convolutions so activations keep their scale through the network, as in a trained model: with
ultralytics' default init they shrink to ~1e-10 by the head, which static INT8 quantizers cannot
represent (ai-edge-quantizer's int32 biases overflow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from distillkit.ultralytics_env import import_ultralytics


def make_checkpoint(
    path: Path,
    task: str = "detect",
    names: tuple[str, ...] = ("square", "disc"),
    category_ids: tuple[int, ...] = (5, 9),
    imgsz: int = 128,
    score_logit: float | None = 1.0,
    seed: int = 0,
    live_features: bool = False,
    score_weight: float = 0.05,
) -> Path:
    """A train-student-like checkpoint: ultralytics layout plus the distillkit class mapping."""
    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    torch.manual_seed(seed)
    cls = SegmentationModel if task == "segment" else DetectionModel
    config = "yolov8n-seg.yaml" if task == "segment" else "yolov8n.yaml"
    model = cls(config, nc=len(names), verbose=False)
    model.names = dict(enumerate(names))
    if live_features:
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    if score_logit is not None:
        with torch.no_grad():
            for branch in model.model[-1].cv3:
                branch[-1].bias.fill_(score_logit)
                branch[-1].weight.mul_(score_weight)  # scores vary a little around sigmoid(score_logit)
    model.args = {"imgsz": imgsz, "task": task}
    checkpoint = {
        "model": model.half(),  # as ultralytics stores trained models
        "train_args": {"imgsz": imgsz, "task": task},
        "distillkit": {
            "class_mapping": {category: index for index, category in enumerate(category_ids)},
            "category_ids": sorted(category_ids),
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def make_images(folder: Path, count: int = 4, size: tuple[int, int] = (128, 128), seed: int = 0) -> list[Path]:
    """Coloured shapes on a dark background: real image files, varied content."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        image = Image.new("RGB", size, (30, 30, 30))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = int(rng.integers(0, size[0] - 40)), int(rng.integers(0, size[1] - 40))
            colour = tuple(int(c) for c in rng.integers(40, 255, size=3))
            draw.rectangle([x, y, x + int(rng.integers(15, 40)), y + int(rng.integers(15, 40))], fill=colour)
        path = folder / f"img_{index}.png"
        image.save(path)
        paths.append(path)
    return paths


def ground_truth_from(
    predictions: list[dict],
    images: list[Path],
    category_ids: tuple[int, ...],
    target: Path,
    names: tuple[str, ...] = ("square", "disc"),
) -> Path:
    """A COCO file whose annotations are the given predictions (boxes and, when present, masks).

    ``names`` are the categories' names, in ``category_ids`` order: those of ``make_checkpoint``'s model.
    """
    ids = {str(path): index + 1 for index, path in enumerate(images)}
    coco_images = []
    for path in images:
        with Image.open(path) as opened:
            width, height = opened.size
        coco_images.append({"id": ids[str(path)], "file_name": path.name, "width": width, "height": height})
    annotations = []
    for entry in predictions:
        x, y, w, h = entry["bbox"]
        annotation = {
            "id": len(annotations) + 1,
            "image_id": ids[entry["file_name"]],
            "category_id": entry["category_id"],
            "bbox": [x, y, w, h],
            "area": w * h,
            "iscrowd": 0,
        }
        if "segmentation" in entry:
            annotation["segmentation"] = entry["segmentation"]
        annotations.append(annotation)
    categories = [{"id": category, "name": name} for category, name in zip(category_ids, names, strict=True)]
    target.write_text(json.dumps({"images": coco_images, "annotations": annotations, "categories": categories}))
    return target
