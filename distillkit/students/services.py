"""What the students family (ultralytics YOLO models) brings to the shared services, in ``distillkit.tasks``.

`optimize` opens a YOLO checkpoint here (``export.source``, for ``detect`` and ``segment``: a checkpoint
recording no distillkit task is an ultralytics one), and ``label --teacher MODEL.pt`` labels with a YOLO
teacher (``labelling.teacher``, kind ``ultralytics``). Heavy imports happen when a function is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillkit.errors import UsageError
from distillkit.tasks import register

if TYPE_CHECKING:
    from distillkit.labelling.factory import LabellingTeacher


def source_model(path: Path, imgsz: int | None = None) -> Any:
    """A train-student / ultralytics checkpoint opened for `optimize` (``export.SourceModel``)."""
    from distillkit.export.onnx_export import SourceModel
    from distillkit.inference.predictor import load_model

    loaded = load_model(path)
    if loaded.task not in ("detect", "segment"):
        raise UsageError(f"{path} is a {loaded.task} model", "optimize handles detection and segmentation")
    checkpoint = getattr(loaded.model, "ckpt", None) or {}
    trained = int((checkpoint.get("train_args") or {}).get("imgsz") or 640)
    names = [loaded.names[index] for index in sorted(loaded.names)]
    categories = [loaded.category_ids.get(index, index) for index in sorted(loaded.names)]
    return SourceModel(path, loaded.task, names, categories, int(imgsz or trained), handle=loaded.model)


def yolo_teacher(
    checkpoint: Path, classes: list[str] | None, device: str | None, batch_size: int, conf: float | None, imgsz: int
) -> LabellingTeacher:
    from distillkit.labelling.factory import YOLO_TEACHER_CONF, LabellingTeacher, score_floor, user_cache_dir
    from distillkit.labelling.to_coco import default_categories
    from distillkit.students.yolo_teacher import YoloTeacher
    from distillkit.training import resolve_device

    target = str(resolve_device(device if device is not None else "auto"))
    floor = score_floor(YOLO_TEACHER_CONF, conf, None)
    teacher_conf = YOLO_TEACHER_CONF if floor is None else floor
    names = classes
    if not names:  # every class of the checkpoint, in its order
        names = YoloTeacher(checkpoint, [], device=target).teacher_names
    teacher = YoloTeacher(checkpoint, names, conf=teacher_conf, imgsz=imgsz, device=target)
    categories = default_categories(teacher.class_names)
    stored = (getattr(teacher.model, "ckpt", None) or {}).get("distillkit", {}) or {}
    mapping = stored.get("class_mapping") or {}
    by_index = {int(index): int(category) for category, index in mapping.items()}
    for category, teacher_index in zip(categories, teacher.class_index, strict=True):
        category["id"] = by_index.get(teacher_index, category["id"])
    if len({c["id"] for c in categories}) != len(categories):  # a partial mapping: fall back to 1..C
        categories = default_categories(teacher.class_names)
    del batch_size  # ultralytics batches the images of each predict call itself
    return LabellingTeacher(
        teacher=teacher,
        kind="ultralytics",
        source=str(checkpoint),
        categories=categories,
        cache_dir=user_cache_dir(),
        settings={"conf": teacher_conf, "imgsz": imgsz, "task": teacher.task, "masks": teacher.task == "segment"},
    )


register("export.source", "detect", source_model)
register("export.source", "segment", source_model)
register("labelling.teacher", "ultralytics", yolo_teacher)
