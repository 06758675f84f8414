"""Labelling a list of images into one COCO file, resumably and in bounded memory.

The work happens in three passes, each of which survives a kill:

1. **screening**: every image is keyed by its content (``ImageKeyIndex``, remembered in
   ``CACHE/image_keys.jsonl``); images equal to one of an ``--exclude`` dataset (a validation or
   test split must never be labelled into training data) and repeats of earlier images are dropped;
2. **teacher**: images whose prediction is not in the content-keyed teacher-output cache (the one
   ``train-student`` uses) are predicted batch by batch, each prediction written to the cache as
   soon as its batch is done — a rerun after a kill computes only the missing images;
3. **writing**: the COCO file is streamed from the cache entries into a temporary file that is
   renamed over ``output`` when complete (images first, annotations spooled beside them), so no
   reader ever sees half a file and memory does not grow with the number of images.

The raw teacher output is cached; the label filter (same-class NMS, cross-class duplicates, the
per-class or global score gate of ``postprocess``) is applied while writing, so a new threshold
never means running the teacher again.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from distillkit.errors import DataError, UsageError
from distillkit.io import atomic_open, dumps_json
from distillkit.labelling.cache import LabellingStats, TeacherOutputCache
from distillkit.labelling.coco_export import check_mask_format, prediction_annotations
from distillkit.labelling.postprocess import LabelFilter
from distillkit.labelling.sources import ImageKeyIndex, Selection, excluded_images, select_images
from distillkit.labelling.types import Teacher
from distillkit.progress import NULL_PROGRESS, Progress

#: Global score gate when no calibrated per-class thresholds are given.
DEFAULT_CONF = 0.25
#: Same-class boxes overlapping above this are one object (Grounding DINO has no NMS of its own).
DEFAULT_NMS_IOU = 0.6
#: Boxes of different classes overlapping above this are one object scored twice.
DEFAULT_CROSS_CLASS_IOU = 0.8
#: Remembered content keys (path, size, mtime → sha256), inside the cache folder.
KEY_MANIFEST = "image_keys.jsonl"


@dataclass
class LabelResult:
    """What ``label_to_coco`` wrote and how: counts of the file, the cache, and the screening."""

    output: Path
    images_root: Path
    images: int = 0  # images in the file (labelled, with or without detections)
    annotations: int = 0
    images_without_detections: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    computed: int = 0  # images the teacher predicted in this run
    cached: int = 0  # images read back from the teacher-output cache
    hashed: int = 0  # image files read to compute their content key in this run
    skipped: dict[str, int] = field(default_factory=dict)
    exclude_files: list[str] = field(default_factory=list)
    exclude_images: int = 0
    exclude_missing: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_source: str = "global"
    mask_format: str = "rle"
    masks: int = 0
    cache_dir: Path | None = None
    teacher_identity: str = ""
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "images_root": str(self.images_root),
            "images": self.images,
            "annotations": self.annotations,
            "masks": self.masks,
            "images_without_detections": self.images_without_detections,
            "per_class": dict(self.per_class),
            "computed": self.computed,
            "cached": self.cached,
            "hashed": self.hashed,
            "skipped": dict(self.skipped),
            "exclude": {
                "files": list(self.exclude_files),
                "images": self.exclude_images,
                "missing": self.exclude_missing,
            },
            "thresholds": dict(self.thresholds),
            "threshold_source": self.threshold_source,
            "mask_format": self.mask_format,
            "cache_dir": str(self.cache_dir) if self.cache_dir is not None else None,
            "teacher_identity": self.teacher_identity,
            "notices": list(self.notices),
        }


# (images, their content keys, cache folder, batch size, progress) -> hits and computed counts
CacheFiller = Callable[[Sequence[Path], Sequence[str], Path, int, Progress], LabellingStats]


def default_categories(class_names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"id": index + 1, "name": name, "supercategory": ""} for index, name in enumerate(class_names)]


def images_root_for(output: Path, images: Sequence[Path]) -> Path:
    """The folder ``file_name`` values are relative to.

    The output file's folder when every image lies under it (``validate OUTPUT`` then finds them
    without ``--images-dir``), else the deepest folder holding them all (pass it as ``--images-dir``).
    """
    resolved = [Path(p).resolve() for p in images]
    home = Path(output).expanduser().resolve().parent
    if all(path.is_relative_to(home) for path in resolved):
        return home
    root = resolved[0].parent
    for path in resolved[1:]:
        while not path.is_relative_to(root):
            root = root.parent
    return root


def fill_cache(
    teacher: Teacher,
    images: Sequence[Path],
    keys: Sequence[str],
    cache_dir: Path,
    *,
    batch_size: int = 8,
    progress: Progress = NULL_PROGRESS,
) -> LabellingStats:
    """Predict the images whose cache entry is missing, ``batch_size`` at a time, each entry written at once."""
    cache = TeacherOutputCache(Path(cache_dir), teacher.identity)
    missing = [(Path(p), k) for p, k in zip(images, keys, strict=True) if not cache.entry_path(k).is_file()]
    stats = LabellingStats(hits=len(images) - len(missing), computed=0)
    with progress.task("Teacher labelling", total=len(images)) as task:
        task.advance(stats.hits)
        pending: dict[str, Path] = {}
        for path, key in missing:  # the same content twice is predicted once
            pending.setdefault(key, path)
        queue = list(pending.items())
        for start in range(0, len(queue), batch_size):
            batch = queue[start : start + batch_size]
            predictions = teacher.predict([path for _, path in batch])
            for (key, _), prediction in zip(batch, predictions, strict=True):
                cache.put(key, prediction)
            stats.computed += len(batch)
            task.advance(len(batch))
    return stats


def label_to_coco(
    teacher: Teacher,
    images: Sequence[Path],
    output: Path,
    cache_dir: Path,
    *,
    categories: Sequence[dict[str, Any]] | None = None,
    exclude: Sequence[Path] = (),
    exclude_keys: Iterable[str] = (),
    exclude_images_dir: Path | None = None,
    conf: float | None = None,
    class_thresholds: Sequence[float] | None = None,
    nms_iou: float = DEFAULT_NMS_IOU,
    cross_class_iou: float = DEFAULT_CROSS_CLASS_IOU,
    mask_format: str = "rle",
    batch_size: int = 8,
    max_images: int | None = None,
    images_root: Path | None = None,
    info: dict[str, Any] | None = None,
    progress: Progress = NULL_PROGRESS,
    filler: CacheFiller | None = None,
) -> LabelResult:
    """Label ``images`` with ``teacher`` into the COCO file ``output``; see the module docstring.

    ``categories`` are the COCO categories of the teacher's classes, in its class order (default:
    ids 1..C named after ``teacher.class_names``). ``exclude`` (COCO files, their images found as
    every command finds them) and ``exclude_keys`` (content keys) name images never to label; repeats
    inside ``images`` are labelled once. Score gate: ``class_thresholds`` (one per class, e.g. a
    ``TeacherCalibration``'s) unless ``conf`` is given, which then applies to every class; neither:
    ``DEFAULT_CONF``. ``mask_format``: ``rle``, ``polygon`` or ``none``. ``file_name`` values are
    relative to ``images_root`` (default: ``images_root_for``). Every annotation has a ``score``.
    ``filler`` computes the missing cache entries in place of ``fill_cache`` (``label --backend ray``).
    """
    check_mask_format(mask_format)
    names = list(teacher.class_names)
    cats = [dict(c) for c in categories] if categories is not None else default_categories(names)
    if len(cats) != len(names):
        raise UsageError(f"{len(cats)} categories for the teacher's {len(names)} classes", "give one per class")
    thresholds, source = _score_gates(names, conf, class_thresholds)
    output = Path(output)
    result = LabelResult(
        output=output,
        images_root=Path(images_root).resolve() if images_root is not None else output.parent.resolve(),
        mask_format=mask_format,
        cache_dir=Path(cache_dir),
        teacher_identity=teacher.identity,
        thresholds=dict(zip(names, thresholds, strict=True)),
        threshold_source=source,
    )
    with ImageKeyIndex(Path(cache_dir) / KEY_MANIFEST) as index:
        screened = excluded_images(list(exclude), index, images_dir=exclude_images_dir, progress=progress)
        selection = select_images(
            images, index, screened.keys | set(exclude_keys), max_images=max_images, progress=progress
        )
        result.hashed = index.hashed
    result.exclude_files, result.exclude_images, result.exclude_missing = (
        screened.files,
        screened.images,
        screened.missing,
    )
    result.skipped = selection.to_dict()
    if screened.missing:
        result.notices.append(
            f"{screened.missing} of the {screened.images} images of --exclude files were not found (e.g. "
            f"{screened.missing_example!r}), so copies of them cannot be recognised; pass --exclude-images-dir"
        )
    if not selection.images:
        raise UsageError(
            f"no image left to label: {selection.excluded} are copies of --exclude images, "
            f"{selection.duplicates} repeat other sources",
            "give other images",
        )
    if images_root is None:
        result.images_root = images_root_for(output, selection.images)
    outside = next((p for p in selection.images if not p.resolve().is_relative_to(result.images_root)), None)
    if outside is not None:
        raise UsageError(f"image {outside} is not under the images root {result.images_root}", "give another root")
    if filler is None:
        stats = fill_cache(
            teacher, selection.images, selection.keys, cache_dir, batch_size=batch_size, progress=progress
        )
    else:
        stats = filler(selection.images, selection.keys, Path(cache_dir), batch_size, progress)
    result.computed, result.cached = stats.computed, stats.hits
    label_filter = LabelFilter(thresholds=thresholds, nms_iou=nms_iou, cross_class_iou=cross_class_iou)
    document_info = _info(info, teacher, result, label_filter)
    _write_coco(output, teacher, selection, cats, label_filter, document_info, result, progress)
    return result


def _score_gates(
    names: list[str], conf: float | None, class_thresholds: Sequence[float] | None
) -> tuple[list[float], str]:
    if conf is not None:
        return [float(conf)] * len(names), "global (--conf)"
    if class_thresholds is not None:
        values = [float(v) for v in class_thresholds]
        if len(values) != len(names):
            raise DataError(
                f"{len(values)} calibrated thresholds for the teacher's {len(names)} classes",
                "calibrate the teacher again, or pass --conf",
            )
        return values, "calibrated per class"
    return [DEFAULT_CONF] * len(names), "global (default)"


def _info(
    info: dict[str, Any] | None, teacher: Teacher, result: LabelResult, label_filter: LabelFilter
) -> dict[str, Any]:
    from distillkit import __version__

    return {
        "description": "Teacher labels for review, written by distillkit label",
        "version": __version__,
        "contributor": "distillkit",
        "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "distillkit": {
            **(info or {}),
            "teacher_identity": teacher.identity,
            "thresholds": result.thresholds,
            "threshold_source": result.threshold_source,
            "nms_iou": label_filter.nms_iou,
            "cross_class_iou": label_filter.cross_class_iou,
            "mask_format": result.mask_format,
            "images_root": str(result.images_root),
        },
    }


def _write_coco(
    output: Path,
    teacher: Teacher,
    selection: Selection,
    categories: list[dict[str, Any]],
    label_filter: LabelFilter,
    info: dict[str, Any],
    result: LabelResult,
    progress: Progress,
) -> None:
    cache = TeacherOutputCache(Path(result.cache_dir or "."), teacher.identity)
    category_ids = [int(c["id"]) for c in categories]
    names = {int(c["id"]): str(c["name"]) for c in categories}
    per_class = dict.fromkeys(names, 0)
    head = dumps_json({"info": info, "licenses": [], "categories": categories})
    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_open(output, "wb") as handle,
        tempfile.TemporaryFile(dir=output.parent, prefix=f".{output.name}.annotations.") as spool,
        progress.task("Writing COCO", total=len(selection.images)) as task,
    ):
        handle.write(head[:-1] + b',\n"images":[\n')
        next_id = 1
        for image_id, (path, key) in enumerate(zip(selection.images, selection.keys, strict=True), start=1):
            prediction = cache.get(key)
            if prediction is None:
                raise DataError(
                    f"the teacher-output cache lost the entry of {path} while writing", "run the command again"
                )
            image = {
                "id": image_id,
                "file_name": path.resolve().relative_to(result.images_root).as_posix(),
                "width": int(prediction.width),
                "height": int(prediction.height),
            }
            handle.write((b"" if image_id == 1 else b",\n") + dumps_json(image))
            annotations = prediction_annotations(
                label_filter.apply(prediction), image_id, category_ids, next_id, result.mask_format
            )
            for annotation in annotations:
                spool.write((b"" if next_id == 1 else b",\n") + dumps_json(annotation))
                per_class[annotation["category_id"]] += 1
                result.masks += "segmentation" in annotation
                next_id += 1
            result.images_without_detections += not annotations
            task.advance()
        handle.write(b'\n],\n"annotations":[\n')
        spool.seek(0)
        shutil.copyfileobj(spool, handle)
        handle.write(b"\n]}\n")
    result.images = len(selection.images)
    result.annotations = next_id - 1
    result.per_class = {names[category]: count for category, count in per_class.items()}
