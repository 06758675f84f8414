"""A closed-set ultralytics checkpoint used as a teacher: pseudo-labels through the ``Teacher`` protocol.

The checkpoint's class names must cover the dataset's categories (matched by name, ignoring case,
spaces, ``_`` and ``-``); extra teacher classes (say the other 77 COCO classes) are ignored. The
same name matching decides which teacher score channel the logit-KD loss compares with each
student class.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.errors import UsageError
from distillkit.io import sha256_file
from distillkit.labelling.types import TeacherPrediction
from distillkit.ultralytics_env import import_ultralytics


def _normalise(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def teacher_class_index(teacher_names: Sequence[str], dataset_names: Sequence[str], source: str) -> list[int]:
    """For each dataset class, the index of the teacher class with the same name.

    Raises UsageError (one line, both lists named) when some dataset class has no teacher class.
    """
    lookup: dict[str, int] = {}
    for index, name in enumerate(teacher_names):
        lookup.setdefault(_normalise(name), index)
    missing = [name for name in dataset_names if _normalise(name) not in lookup]
    if missing:
        raise UsageError(
            f"teacher {source} does not know the dataset classes {missing}: its classes are "
            f"{list(teacher_names)}, the dataset's are {list(dataset_names)}",
            "use a teacher trained on these categories (class names must match)",
        )
    return [lookup[_normalise(name)] for name in dataset_names]


def checkpoint_class_names(names: Mapping[int, str] | Sequence[str]) -> list[str]:
    """Ultralytics stores names as {index: name}; return them as a list in index order."""
    if isinstance(names, Mapping):
        return [str(names[key]) for key in sorted(names)]
    return [str(name) for name in names]


class YoloTeacher:
    """An ultralytics detection/segmentation checkpoint labelling images for the dataset's classes.

    ``identity`` hashes the checkpoint file and every setting that changes the predictions, so the
    teacher-output cache never serves labels from other weights or thresholds.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        dataset_class_names: Sequence[str],
        *,
        conf: float = 0.1,
        iou: float = 0.7,
        imgsz: int = 640,
        device: str = "cpu",
        max_det: int = 300,
    ) -> None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise UsageError(f"teacher checkpoint {checkpoint} not found", "pass the path of a local ultralytics .pt")
        if path.suffix != ".pt":
            raise UsageError(
                f"teacher {checkpoint} is not a .pt checkpoint",
                "pass an ultralytics .pt (e.g. a train-student best.pt)",
            )
        import_ultralytics()
        from ultralytics import YOLO

        try:
            self.model = YOLO(str(path))
        except UsageError:  # refused by distillkit.safe_load: its line says why
            raise
        except Exception as exc:  # ultralytics raises many types for a file that is not a checkpoint
            raise UsageError(f"{path} is not an ultralytics checkpoint ({exc})", "pass a .pt written by YOLO") from exc
        if self.model.task not in ("detect", "segment"):
            raise UsageError(f"teacher {path} is a {self.model.task} model", "use a detection or segmentation teacher")
        self.path = path.resolve()
        self.teacher_names = checkpoint_class_names(self.model.names)
        self.dataset_names = list(dataset_class_names)
        self.class_index = teacher_class_index(self.teacher_names, self.dataset_names, str(path))
        self.conf, self.iou, self.imgsz, self.device, self.max_det = conf, iou, imgsz, device, max_det
        settings = {
            "kind": "ultralytics",
            "weights": sha256_file(self.path),
            "conf": conf,
            "iou": iou,
            "imgsz": imgsz,
            "max_det": max_det,
            "classes": self.class_index,
            "outputs": "class-vectors",  # entries cached before per-class scores were kept are not reused
        }
        self._identity = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def class_names(self) -> list[str]:
        return list(self.dataset_names)

    @property
    def task(self) -> str:
        return str(self.model.task)

    def predict(self, images: Sequence[Path]) -> list[TeacherPrediction]:
        to_dataset = {teacher: dataset for dataset, teacher in enumerate(self.class_index)}
        results = self.model.predict(
            [str(p) for p in images],
            conf=self.conf,
            iou=self.iou,
            imgsz=self.imgsz,
            device=self.device,
            max_det=self.max_det,
            classes=sorted(to_dataset),  # only the classes the dataset has survive NMS
            verbose=False,
            predictor=class_vector_predictor(self.task),
        )
        return [self._prediction(result, to_dataset) for result in results]

    def _prediction(self, result: Any, to_dataset: dict[int, int]) -> TeacherPrediction:
        height, width = (int(v) for v in result.orig_shape)
        boxes = result.boxes
        teacher_classes = boxes.cls.cpu().numpy().astype(np.int64)
        masks = None
        if result.masks is not None:
            masks = [_polygon_rle(polygon, height, width) for polygon in result.masks.xy]
        vectors = getattr(result, "feats", None)  # (N, teacher classes) sigmoid scores, see class_vector_predictor
        class_scores = None
        if vectors is not None and len(teacher_classes):
            table = np.asarray(vectors, dtype=np.float32).reshape(len(teacher_classes), -1)
            if table.shape[1] > max(self.class_index):
                class_scores = table[:, self.class_index]  # the dataset's classes, in its order
        return TeacherPrediction(
            width=width,
            height=height,
            boxes=boxes.xyxy.cpu().numpy(),
            scores=boxes.conf.cpu().numpy(),
            class_ids=np.array([to_dataset[int(c)] for c in teacher_classes], dtype=np.int64),
            class_scores=class_scores,
            masks=masks,
        )


def class_vector_predictor(task: str) -> type:
    """An ultralytics predictor class whose results keep every class's score per kept detection.

    ultralytics' NMS keeps the best class and its score only. With ``return_idxs`` it also says which
    anchor each kept detection came from; the hook it has for that (``_feats`` + ``get_obj_feats``,
    meant for re-identification features) is given the per-class sigmoid scores of the raw output
    instead, so ``result.feats`` holds an (N, classes) table aligned with ``result.boxes``. Setting
    ``_feats`` also turns off the segmentation predictor's drop of empty masks, which would break
    that alignment.
    """
    from ultralytics.models.yolo.detect import DetectionPredictor
    from ultralytics.models.yolo.segment import SegmentationPredictor

    base = SegmentationPredictor if task == "segment" else DetectionPredictor

    class ClassVectorPredictor(base):  # type: ignore[misc, valid-type]
        def postprocess(self, preds: Any, img: Any, orig_imgs: Any, **kwargs: Any) -> Any:
            raw = preds
            while isinstance(raw, list | tuple):  # (inference output, extras) nestings of detect and segment
                raw = raw[0]
            self._feats = raw[:, 4 : 4 + len(self.model.names)]  # (B, classes, anchors), already sigmoid
            try:
                return super().postprocess(preds, img, orig_imgs, **kwargs)
            finally:
                self._feats = None

        def get_obj_feats(self, feat_maps: Any, idxs: Any) -> list[Any]:
            return [feat_maps[b][:, idx.long().view(-1)].T.float().cpu().numpy() for b, idx in enumerate(idxs)]

    return ClassVectorPredictor


def _polygon_rle(polygon: np.ndarray, height: int, width: int) -> dict[str, Any]:
    """An ultralytics mask contour (pixel xy) as a compressed COCO RLE at the image's size."""
    from pycocotools import mask as mask_utils

    points = np.asarray(polygon, dtype=np.float64).reshape(-1)
    if len(points) < 6:  # a degenerate contour: an empty mask keeps one entry per detection
        rle = mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    else:
        rle = mask_utils.merge(mask_utils.frPyObjects([points.tolist()], height, width))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
