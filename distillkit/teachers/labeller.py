"""The trained teachers of an experiment as one labelling ``Teacher`` (``distillkit.labelling``).

Per batch of images: one Grounding DINO pass scores every class at once (the prompt holds all
class names), then SAM, when the experiment has a SAM adapter, turns each kept box into a mask.
Masks-only data trains both teachers (validate derives the boxes), so SAM is normally prompted with
Grounding DINO's boxes; a SAM-only experiment (``train-teacher --only sam``) is prompted with
ground-truth boxes, which ``load_teacher(..., ground_truth=...)`` supplies; so can a DINO+SAM one.

``identity`` hashes everything that changes the outputs (adapter files, base weights named,
prompt, thresholds, the ground-truth file when used), so the content-keyed cache of
``distillkit.labelling`` never serves labels of another teacher. The identity comes from the files
alone, so ``load_teacher(..., defer_models=True)`` gives a teacher whose models are built on first
use: a Ray driver, which only names the classes and the cache while its actors predict, then never
pays for importing transformers and loading weights it would not run. ``label_images_sharded`` is the
``torchrun`` form of labelling: ranks split the uncached images, rank 0 writes the cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from distillkit.data.validate import ValidationResult, load_valid_dataset
from distillkit.errors import UsageError
from distillkit.io import sha256_file
from distillkit.labelling import TeacherOutputCache, TeacherPrediction, image_content_key
from distillkit.labelling.cache import LabellingStats
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.teachers.grounding_dino.data import read_rgb
from distillkit.teachers.grounding_dino.model import FOLDER_NAME as DINO_FOLDER
from distillkit.teachers.grounding_dino.model import TEACHER_FILE as DINO_TEACHER_FILE
from distillkit.teachers.grounding_dino.model import GroundingDinoBundle, read_teacher_file
from distillkit.teachers.grounding_dino.predict import predict_boxes

SAM_FOLDER = "sam_lora"
TEACHERS_DIR = "teachers"
CACHE_DIR = Path("cache") / "teacher_outputs"

ModelT = TypeVar("ModelT")


class Deferred(Generic[ModelT]):
    """A model built on first use; ``key`` stands for it in a teacher's identity without building it."""

    def __init__(self, build: Callable[[], ModelT], key: str) -> None:
        self._build: Callable[[], ModelT] | None = build
        self._value: ModelT | None = None
        self.key = key

    @classmethod
    def ready(cls, value: ModelT, key: str) -> Deferred[ModelT]:
        """An already built model."""
        deferred: Deferred[ModelT] = cls(lambda: value, key)
        deferred.get()
        return deferred

    @property
    def built(self) -> bool:
        return self._build is None

    def get(self) -> ModelT:
        if self._build is not None:
            self._value, self._build = self._build(), None
        return self._value  # type: ignore[return-value]


def teacher_cache_dir(exp_dir: str | os.PathLike[str]) -> Path:
    """Where an experiment's teacher labels are cached (``EXP/cache/teacher_outputs``)."""
    return Path(exp_dir) / CACHE_DIR


@dataclass
class GroundTruthBoxes:
    """Ground-truth boxes per image content key, for SAM prompted by ground truth."""

    by_image: dict[str, tuple[np.ndarray, np.ndarray]]  # content key -> (xyxy boxes, class ids)
    source_hash: str


def ground_truth_boxes(data: ValidationResult | str | Path, images_dir: Path | None = None) -> GroundTruthBoxes:
    """Every non-crowd box of ``data``, keyed by the content hash of its image file."""
    from distillkit.teachers.grounding_dino.data import locate_images

    result = data if isinstance(data, ValidationResult) else load_valid_dataset(data)
    assert result.dataset is not None
    source = Path(result.report.source) if result.report.source else None
    paths = locate_images(result.dataset, source, images_dir)
    mapping = result.info.class_mapping
    boxes: dict[int, list[list[float]]] = {}
    classes: dict[int, list[int]] = {}
    for ann in result.dataset["annotations"]:
        bbox = ann.get("bbox")
        if ann.get("iscrowd", 0) or not bbox:
            continue
        x, y, w, h = (float(v) for v in bbox)
        boxes.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
        classes.setdefault(ann["image_id"], []).append(mapping[ann["category_id"]])
    by_image = {}
    for image_id, path in paths.items():
        by_image[image_content_key(path)] = (
            np.asarray(boxes.get(image_id, []), dtype=np.float32).reshape(-1, 4),
            np.asarray(classes.get(image_id, []), dtype=np.int64),
        )
    digest = sha256_file(source) if source is not None and source.is_file() else "in-memory"
    return GroundTruthBoxes(by_image, digest)


class DistilledTeacher:
    """Grounding DINO (+ SAM) adapters of one experiment, labelling images in batches."""

    def __init__(
        self,
        class_names: list[str],
        dino: GroundingDinoBundle | Deferred[GroundingDinoBundle] | None,
        dino_record: dict[str, Any] | None,
        sam: Any | Deferred[Any] | None,
        device: Any,
        batch_size: int,
        box_threshold: float,
        text_threshold: float,
        ground_truth: GroundTruthBoxes | None,
        max_detections: int = 100,
    ) -> None:
        if dino is None and ground_truth is None:
            raise UsageError(
                "this experiment has no Grounding DINO teacher (trained with --only sam), so SAM needs "
                "ground-truth boxes as prompts",
                "train it without --only sam so Grounding DINO gives the boxes, or pass the annotation file as "
                "ground truth",
            )
        self._class_names = list(class_names)
        self._dino = dino if isinstance(dino, Deferred) or dino is None else Deferred.ready(dino, dino.weights_source)
        self.dino_record = dino_record or {}
        self._sam = sam if isinstance(sam, Deferred) or sam is None else Deferred.ready(sam, sam.identity)
        self.device = device
        self.batch_size = batch_size
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.ground_truth = ground_truth
        self.max_detections = max_detections
        self._identity = self._compute_identity()

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def dino(self) -> GroundingDinoBundle | None:
        """The Grounding DINO bundle (built now if it was deferred), None without a Grounding DINO teacher."""
        return self._dino.get() if self._dino is not None else None

    @property
    def sam(self) -> Any | None:
        """The SAM teacher (``LoadedSam``; built now if it was deferred), None without one."""
        return self._sam.get() if self._sam is not None else None

    @property
    def has_masks(self) -> bool:
        """Whether the predictions carry masks (a SAM teacher), without building it."""
        return self._sam is not None

    @property
    def models_built(self) -> bool:
        return all(part is None or part.built for part in (self._dino, self._sam))

    def _compute_identity(self) -> str:
        digest = hashlib.sha256()
        parts: list[str] = [f"classes={self._class_names!r}", f"max_det={self.max_detections}"]
        if self._dino is not None:
            adapter = Path(self.dino_record["adapter_dir"])
            parts += [
                f"dino_adapter={sha256_file(adapter / 'adapter_model.safetensors')}",
                f"dino_config={sha256_file(adapter / 'adapter_config.json')}",
                f"dino_weights={self._dino.key}",
                f"prompt={self.dino_record.get('prompt')}",
                f"box_threshold={self.box_threshold}",
                f"text_threshold={self.text_threshold}",
            ]
        if self._sam is not None:
            parts.append(f"sam={self._sam.key}")
        if self.ground_truth is not None:
            parts.append(f"ground_truth={self.ground_truth.source_hash}")
        for part in parts:
            digest.update(part.encode("utf-8") + b"\n")
        return digest.hexdigest()

    def predict(self, images: Sequence[Path]) -> list[TeacherPrediction]:
        """Predictions for ``images``, in order; DINO runs once per ``batch_size`` images."""
        out: list[TeacherPrediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [Path(p) for p in images[start : start + self.batch_size]]
            pixels = [read_rgb(path) for path in chunk]
            out.extend(self._predict_chunk(chunk, pixels))
        return out

    def predict_decoded(self, paths: Sequence[Path], pixels: Sequence[np.ndarray]) -> list[TeacherPrediction]:
        """``predict`` on images already decoded by ``read_rgb`` (Ray's CPU workers decode them)."""
        out: list[TeacherPrediction] = []
        for start in range(0, len(paths), self.batch_size):
            end = start + self.batch_size
            out.extend(self._predict_chunk([Path(p) for p in paths[start:end]], list(pixels[start:end])))
        return out

    def _predict_chunk(self, paths: list[Path], pixels: list[np.ndarray]) -> list[TeacherPrediction]:
        num_classes = len(self._class_names)
        use_truth = self.ground_truth is not None
        boxes_of: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
        if use_truth:
            assert self.ground_truth is not None
            for path in paths:
                boxes, classes = self.ground_truth.by_image.get(
                    image_content_key(path), (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
                )
                onehot = np.eye(num_classes, dtype=np.float32)[classes] if len(classes) else None
                boxes_of.append((boxes, np.ones(len(boxes), np.float32), classes, onehot))
        else:
            dino = self.dino
            assert dino is not None
            found = predict_boxes(
                dino.model,
                dino.processor,
                self.dino_record["prompt"],
                num_classes,
                pixels,
                self.device,
                box_threshold=self.box_threshold,
                text_threshold=self.text_threshold,
                max_detections=self.max_detections,
            )
            boxes_of = [(p.boxes, p.scores, p.class_ids, p.class_scores) for p in found]
        results = []
        sam = self.sam
        for image, (boxes, scores, classes, class_scores) in zip(pixels, boxes_of, strict=True):
            height, width = image.shape[:2]
            masks = mask_quality = None
            extra: dict[str, Any] = {"box_source": "ground_truth" if use_truth else "grounding_dino"}
            if sam is not None:
                from distillkit.teachers.sam.predict import predict_masks

                masks, mask_scores = predict_masks(sam, image, boxes)
                mask_quality = np.clip(np.asarray(mask_scores, dtype=np.float32).reshape(-1), 0.0, 1.0)
            results.append(
                TeacherPrediction(
                    width=width,
                    height=height,
                    boxes=boxes,
                    scores=scores,
                    class_ids=classes,
                    class_scores=class_scores if class_scores is not None and len(boxes) else None,
                    masks=masks,
                    extra=extra,
                    mask_quality=mask_quality,
                )
            )
        return results


def _teachers_dir(exp_dir: Path) -> Path:
    folder = exp_dir / TEACHERS_DIR
    if not folder.is_dir():
        raise UsageError(f"{exp_dir} holds no trained teachers (no {TEACHERS_DIR}/ folder)", "run train-teacher first")
    return folder


def load_teacher(
    exp_dir: str | os.PathLike[str],
    device: str | Any | None = None,
    batch_size: int = 8,
    *,
    box_threshold: float | None = None,
    text_threshold: float | None = None,
    ground_truth: ValidationResult | str | Path | None = None,
    images_dir: Path | None = None,
    dino_weights: str | None = None,
    sam_weights: str | None = None,
    defer_models: bool = False,
) -> DistilledTeacher:
    """The teachers trained into ``exp_dir`` (``EXP/teachers/...``) as a labelling ``Teacher``.

    Thresholds default to the ones trained with (``distillkit_teacher.json``). ``ground_truth``
    prompts SAM with that file's boxes instead of Grounding DINO's (required when there is no
    Grounding DINO teacher). ``dino_weights`` / ``sam_weights`` replace the recorded base weights.
    ``defer_models`` builds the models on first use only (the identity and classes come from the
    files): for a caller that may never predict, as a Ray driver whose actors do.
    """
    from distillkit.training import resolve_device

    exp = Path(exp_dir)
    folder = _teachers_dir(exp)
    dino_dir, sam_dir = folder / DINO_FOLDER, folder / SAM_FOLDER
    has_dino = (dino_dir / DINO_TEACHER_FILE).is_file()
    has_sam = (sam_dir / "adapter_model.safetensors").is_file()
    if not has_dino and not has_sam:
        raise UsageError(f"{folder} holds no trained teacher adapters", "run train-teacher first")
    target = resolve_device(device if device is not None else "auto")
    dino: Deferred[GroundingDinoBundle] | None = None
    record = None
    class_names: list[str] = []
    if has_dino:
        record = {**read_teacher_file(dino_dir), "adapter_dir": str(dino_dir)}
        dino = Deferred(lambda: _load_dino(dino_dir, dino_weights, target), dino_weights or str(record["weights"]))
        if not defer_models:  # a bad weights folder fails here, at load time
            dino.get()
        class_names = list(record["class_names"])
    sam: Deferred[Any] | None = None
    if has_sam:
        from distillkit.teachers.sam.predict import load_sam_teacher, sam_teacher_info

        if defer_models:
            sam_identity, sam_classes = sam_teacher_info(sam_dir, weights=sam_weights)
            sam = Deferred(lambda: load_sam_teacher(sam_dir, target, weights=sam_weights), sam_identity)
        else:  # the loaded teacher has its identity: the adapter file is hashed once
            loaded_sam = load_sam_teacher(sam_dir, target, weights=sam_weights)
            sam, sam_classes = Deferred.ready(loaded_sam, loaded_sam.identity), loaded_sam.class_names
        if not class_names:
            class_names = list(sam_classes)
    truth = ground_truth_boxes(ground_truth, images_dir) if ground_truth is not None else None
    return DistilledTeacher(
        class_names=class_names,
        dino=dino,
        dino_record=record,
        sam=sam,
        device=target,
        batch_size=batch_size,
        box_threshold=box_threshold if box_threshold is not None else float((record or {}).get("box_threshold", 0.35)),
        text_threshold=text_threshold
        if text_threshold is not None
        else float((record or {}).get("text_threshold", 0.25)),
        ground_truth=truth,
    )


def _load_dino(adapter_dir: Path, weights: str | None, device: Any) -> GroundingDinoBundle:
    from distillkit.teachers.grounding_dino.model import load_adapter

    bundle = load_adapter(adapter_dir, weights)
    bundle.model.to(device)
    return bundle


def label_images_sharded(
    teacher: Any,
    images: Sequence[Path],
    cache_dir: Path,
    *,
    batch_size: int = 8,
    progress: Progress = NULL_PROGRESS,
) -> LabellingStats:
    """Fill the teacher-output cache for ``images``; under ``torchrun`` the ranks share the work.

    The uncached images are split round-robin across ranks; each rank predicts its share in
    batches and the predictions are gathered to rank 0, which writes them (one atomic file per
    image, batch by batch, so an interrupted run resumes where it stopped). In one process this is
    the same as iterating ``label_images``. Under ``torchrun`` the process group is set up here when
    the caller has not. Returns the cache hits and computed counts (all ranks together).
    """
    from distillkit.training import distributed_context

    device = getattr(teacher, "device", None)
    with distributed_context(device if isinstance(device, torch.device) else None) as world:
        return _label_shards(teacher, images, Path(cache_dir), world, batch_size, progress)


def _label_shards(
    teacher: Any, images: Sequence[Path], cache_dir: Path, world: Any, batch_size: int, progress: Progress
) -> LabellingStats:
    from distillkit.training import all_gather_object, barrier, shard

    cache = TeacherOutputCache(Path(cache_dir), teacher.identity)
    keys = [image_content_key(Path(p)) for p in images]
    missing = [(Path(p), key) for p, key in zip(images, keys, strict=True) if not cache.entry_path(key).is_file()]
    mine = shard(missing, world)
    # Every rank runs the same number of rounds so the collective gathers pair up.
    rounds = -(-len(missing) // (batch_size * world.world_size)) if missing else 0
    with progress.task("Teacher labelling", total=len(missing)) as task:
        for index in range(rounds):
            chunk = mine[index * batch_size : (index + 1) * batch_size]
            predictions = teacher.predict([path for path, _ in chunk]) if chunk else []
            records = [(key, pred.to_record()) for (_, key), pred in zip(chunk, predictions, strict=True)]
            gathered = all_gather_object(records)
            if world.is_main:
                for rank_records in gathered:
                    for key, record in rank_records:
                        cache.put(key, TeacherPrediction.from_record(record))
            task.advance(sum(len(part) for part in gathered))
    barrier()
    return LabellingStats(hits=len(images) - len(missing), computed=len(missing))
