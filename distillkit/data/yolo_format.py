"""COCO → ultralytics YOLO dataset (labels + dataset.yaml), written once and reused while unchanged.

Layout (what ultralytics reads: a label file sits where ``/images/`` → ``/labels/`` and the suffix
→ ``.txt`` point)::

    ROOT/dataset.yaml
    ROOT/images/<split>/<name>   symbolic links to the original image files (copied if links fail)
    ROOT/labels/<split>/<stem>.txt
    ROOT/conversion.json         what was converted, and the content hash that decides reuse
    ROOT/soft_targets.json       teacher labels' soft targets (score, mask quality, per-class scores),
                                 keyed by split/image and label box; only when some annotation has them

Conventions, the same as ultralytics' own ``convert_coco``: class index = position of the COCO
category in id order (``DatasetInfo.class_mapping``); crowd annotations are left out (ultralytics
has no ignore regions; COCO evaluation ignores detections on them); for segmentation, polygons
with several parts are joined with ultralytics' ``merge_multi_segment``, RLE masks become their
outer contours, and box-only annotations become their rectangle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import yaml

from distillkit.data.images import ImageLocator
from distillkit.errors import DataError
from distillkit.io import atomic_write_json, atomic_write_text, dumps_json
from distillkit.progress import NULL_PROGRESS, Progress

Task = Literal["detect", "segment"]
CONVERSION_VERSION = 2  # bump when the label format written here changes
_MARKER = "conversion.json"
SOFT_TARGETS_FILE = "soft_targets.json"


@dataclass(frozen=True)
class SplitSource:
    """One split to convert: a validated COCO dict and where its images are."""

    dataset: dict[str, Any]
    image_roots: Sequence[Path]


@dataclass(frozen=True)
class YoloDataset:
    root: Path
    yaml_path: Path
    task: Task
    names: list[str]
    class_mapping: dict[int, int]
    content_hash: str
    reused: bool
    label_counts: dict[str, int]  # split -> number of label lines written


def prepare_yolo_dataset(
    splits: Mapping[str, SplitSource],
    output_dir: str | Path,
    task: Task,
    class_mapping: Mapping[int, int],
    class_names: Sequence[str],
    progress: Progress = NULL_PROGRESS,
) -> YoloDataset:
    """Write the YOLO version of ``splits`` into ``output_dir``, or reuse it when nothing changed."""
    root = Path(output_dir)
    located = {name: _locate_images(source) for name, source in splits.items()}
    content_hash = _content_hash(splits, located, task, class_mapping, class_names)
    marker = root / _MARKER

    def result(reused: bool, label_counts: dict[str, int]) -> YoloDataset:
        return YoloDataset(
            root=root,
            yaml_path=root / "dataset.yaml",
            task=task,
            names=list(class_names),
            class_mapping=dict(class_mapping),
            content_hash=content_hash,
            reused=reused,
            label_counts=label_counts,
        )

    if marker.exists():
        try:
            previous = orjson.loads(marker.read_bytes())
        except orjson.JSONDecodeError:
            previous = {}
        if previous.get("content_hash") == content_hash and (root / "dataset.yaml").exists():
            return result(True, dict(previous.get("label_counts", {})))

    marker.unlink(missing_ok=True)  # an interrupted rewrite is never mistaken for a finished one
    counts: dict[str, int] = {}
    soft = SoftTargetTable(num_classes=len(class_names))
    for name, source in splits.items():
        for sub in ("images", "labels"):
            shutil.rmtree(root / sub / name, ignore_errors=True)
            (root / sub / name).mkdir(parents=True, exist_ok=True)
        counts[name] = _write_split(root, name, source, located[name], task, class_mapping, soft, progress)
    (root / SOFT_TARGETS_FILE).unlink(missing_ok=True)
    if soft.rows:
        atomic_write_json(root / SOFT_TARGETS_FILE, soft.to_dict(), indent=False)

    document = {
        "path": str(root.resolve()),
        **{name: f"images/{name}" for name in splits},
        "names": dict(enumerate(class_names)),
    }
    atomic_write_text(root / "dataset.yaml", yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    atomic_write_json(
        marker,
        {
            "version": CONVERSION_VERSION,
            "content_hash": content_hash,
            "task": task,
            "names": list(class_names),
            "class_mapping": {str(k): v for k, v in class_mapping.items()},
            "label_counts": counts,
        },
    )
    return result(False, counts)


# ------------------------------------------------------------------------------------------------
# label lines


@dataclass
class SoftTargetTable:
    """Soft targets of teacher-made (or teacher-scored) labels, one row per label line.

    ``rows[t]`` = ``[score, mask_quality, p_0 .. p_{C-1}]`` (an ignore region, ``"ignore_region"`` in
    its annotation, has score -1 and ``p_c = 1`` for the classes not taught there); ``images["split/name"]`` lists
    ``[t, class, cx, cy, w, h]`` per label (the box as ultralytics reads it back: the line's box for
    detection, the polygon's extent for segmentation), so the training dataset can find each label's
    row whatever order ultralytics keeps the lines in.
    """

    num_classes: int
    rows: list[list[float]] = field(default_factory=list)
    images: dict[str, list[list[float]]] = field(default_factory=dict)

    def add(self, image_key: str, ann: dict[str, Any], line: str) -> None:
        values = [float(v) for v in line.split()]
        class_index, points = int(values[0]), np.asarray(values[1:], dtype=np.float64)
        if len(points) == 4:
            box = points
        else:
            xy = points.reshape(-1, 2)
            low, high = xy.min(axis=0), xy.max(axis=0)
            box = np.r_[(low + high) / 2, high - low]
        score = IGNORE_REGION_SCORE if ann.get("ignore_region") else float(ann.get("score", 1.0))
        vector = ann.get("class_scores")
        if vector is None or len(vector) != self.num_classes:
            vector = [score if c == class_index else 0.0 for c in range(self.num_classes)]
        quality = ann.get("mask_quality")
        self.images.setdefault(image_key, []).append([len(self.rows), class_index, *box.tolist()])
        self.rows.append([score, 1.0 if quality is None else float(quality), *(float(v) for v in vector)])

    def to_dict(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "rows": self.rows, "images": self.images}


IGNORE_REGION_SCORE = -1.0  # soft_targets.IGNORE_SCORE (kept here so the conversion needs no torch)


def has_soft_target(ann: dict[str, Any]) -> bool:
    """Annotations carrying teacher knowledge: a teacher's label, or ground truth the teacher scored."""
    return "class_scores" in ann or "mask_quality" in ann or ann.get("source") == "teacher"


def yolo_label_lines(
    annotations: Sequence[dict[str, Any]], width: int, height: int, task: Task, class_mapping: Mapping[int, int]
) -> list[str]:
    """The label file content of one image (crowd regions left out)."""
    return [line for _, line in yolo_label_rows(annotations, width, height, task, class_mapping)]


def yolo_label_rows(
    annotations: Sequence[dict[str, Any]], width: int, height: int, task: Task, class_mapping: Mapping[int, int]
) -> list[tuple[dict[str, Any], str]]:
    """Each written label line with the annotation it comes from (crowd and degenerate ones left out)."""
    lines: list[tuple[dict[str, Any], str]] = []
    for ann in annotations:
        if ann.get("iscrowd", 0):
            continue
        class_index = class_mapping[ann["category_id"]]
        if task == "detect":
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = np.clip([(x + w / 2) / width, (y + h / 2) / height, w / width, h / height], 0.0, 1.0)
            if box[2] <= 0 or box[3] <= 0:
                continue
            lines.append((ann, f"{class_index} " + " ".join(f"{v:.6f}" for v in box)))
        else:
            points = _polygon_points(ann, width, height)
            if points is None or len(points) < 3:
                continue
            normalised = np.clip(points / np.array([width, height], dtype=np.float64), 0.0, 1.0)
            lines.append((ann, f"{class_index} " + " ".join(f"{v:.6f}" for v in normalised.reshape(-1))))
    return lines


def _polygon_points(ann: dict[str, Any], width: int, height: int) -> np.ndarray | None:
    """One polygon (N, 2) in pixels for an annotation: joined parts, RLE contours, or its box."""
    segmentation = ann.get("segmentation")
    parts: list[list[float]] = []
    if isinstance(segmentation, list):
        parts = [p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
    elif isinstance(segmentation, dict):
        parts = _rle_contours(segmentation, width, height)
    if not parts:
        x, y, w, h = (float(v) for v in ann["bbox"])
        return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)
    if len(parts) == 1:
        return np.asarray(parts[0], dtype=np.float64).reshape(-1, 2)
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.data.converter import merge_multi_segment

    return np.concatenate(merge_multi_segment(parts), axis=0).astype(np.float64)


def _rle_contours(segmentation: dict[str, Any], width: int, height: int) -> list[list[float]]:
    import cv2
    from pycocotools import mask as mask_utils

    counts = segmentation["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    binary = np.ascontiguousarray(mask_utils.decode(rle))
    contours = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


# ------------------------------------------------------------------------------------------------
# files


def _locate_images(source: SplitSource) -> dict[int, Path]:
    locator = ImageLocator(source.image_roots)
    found: dict[int, Path] = {}
    missing = []
    for image in source.dataset["images"]:
        path = locator.resolve(image["file_name"])
        if path is None:
            missing.append(image["file_name"])
        else:
            found[image["id"]] = path.resolve()
    if missing:
        roots = ", ".join(str(r) for r in source.image_roots)
        raise DataError(
            f"{len(missing)} image files were not found under {roots} (e.g. {missing[0]!r})",
            "pass --images-dir with the folder holding the images",
        )
    return found


def _output_names(dataset: dict[str, Any], paths: dict[int, Path]) -> dict[int, str]:
    """Link names per image: the file's own name, prefixed by the image id only where names collide."""
    by_name: dict[str, list[int]] = defaultdict(list)
    for image in dataset["images"]:
        by_name[paths[image["id"]].name].append(image["id"])
    names = {}
    for name, ids in by_name.items():
        for image_id in ids:
            names[image_id] = name if len(ids) == 1 else f"{image_id}_{name}"
    return names


def _write_split(
    root: Path,
    split: str,
    source: SplitSource,
    paths: dict[int, Path],
    task: Task,
    class_mapping: Mapping[int, int],
    soft: SoftTargetTable,
    progress: Progress,
) -> int:
    per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in source.dataset["annotations"]:
        per_image[ann["image_id"]].append(ann)
    names = _output_names(source.dataset, paths)
    written = 0
    images = source.dataset["images"]
    with progress.task(f"writing {split} labels", total=len(images)) as task_bar:
        for image in images:
            name = names[image["id"]]
            _link(paths[image["id"]], root / "images" / split / name)
            rows = yolo_label_rows(per_image.get(image["id"], []), image["width"], image["height"], task, class_mapping)
            lines = [line for _, line in rows]
            for ann, line in rows:
                if has_soft_target(ann):
                    soft.add(f"{split}/{name}", ann, line)
            label = root / "labels" / split / (Path(name).stem + ".txt")
            label.write_text("\n".join(lines) + ("\n" if lines else ""))
            written += sum(1 for ann, _ in rows if not ann.get("ignore_region"))
            task_bar.advance()
    return written


def _link(target: Path, link: Path) -> None:
    try:
        os.symlink(target, link)
    except OSError:
        try:
            os.link(target, link)
        except OSError:
            shutil.copyfile(target, link)


def _content_hash(
    splits: Mapping[str, SplitSource],
    located: Mapping[str, dict[int, Path]],
    task: Task,
    class_mapping: Mapping[int, int],
    class_names: Sequence[str],
) -> str:
    """Hash of everything the written files depend on: annotations, image files, settings."""
    digest = hashlib.sha256()
    digest.update(
        dumps_json(
            {
                "version": CONVERSION_VERSION,
                "task": task,
                "names": list(class_names),
                "mapping": {str(k): v for k, v in class_mapping.items()},
            }
        )
    )
    for name in sorted(splits):
        source = splits[name]
        digest.update(name.encode())
        digest.update(dumps_json({"images": source.dataset["images"], "annotations": source.dataset["annotations"]}))
        for image_id, path in sorted(located[name].items()):
            stat = path.stat()
            digest.update(f"{image_id}:{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()
