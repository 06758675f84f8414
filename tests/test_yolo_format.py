"""COCO → YOLO conversion: round trips within a pixel, multi-part and RLE masks, reuse by content hash."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from distillkit.data.synthetic import generate_inspection_dataset
from distillkit.data.validate import validate_dataset
from distillkit.data.yolo_format import SplitSource, prepare_yolo_dataset, yolo_label_lines
from distillkit.errors import DataError
from tests.helpers import square

MAPPING = {3: 0, 7: 1}


def _box_from_line(line: str, width: int, height: int) -> tuple[int, list[float]]:
    values = line.split()
    cx, cy, w, h = (float(v) for v in values[1:])
    return int(values[0]), [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]


def _polygon_from_line(line: str, width: int, height: int) -> tuple[int, np.ndarray]:
    values = line.split()
    return int(values[0]), np.array([float(v) for v in values[1:]]).reshape(-1, 2) * [width, height]


def test_boxes_round_trip_within_a_pixel() -> None:
    rng = np.random.default_rng(0)
    width, height = 640, 480
    anns = []
    for i in range(50):
        x, y = rng.uniform(0, 500), rng.uniform(0, 400)
        anns.append(
            {"id": i, "category_id": 3 if i % 2 else 7, "bbox": [x, y, rng.uniform(2, 100), rng.uniform(2, 70)]}
        )
    lines = yolo_label_lines(anns, width, height, "detect", MAPPING)
    assert len(lines) == 50
    for ann, line in zip(anns, lines, strict=True):
        class_index, box = _box_from_line(line, width, height)
        assert class_index == MAPPING[ann["category_id"]]
        expected = np.clip(
            [ann["bbox"][0], ann["bbox"][1], ann["bbox"][0] + ann["bbox"][2], ann["bbox"][1] + ann["bbox"][3]],
            0,
            [width, height, width, height],
        )
        got = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
        assert np.abs(np.array(got) - expected).max() < 1.0


def test_polygons_round_trip_and_crowd_is_left_out() -> None:
    polygon = [10.5, 20.25, 60.0, 22.0, 55.5, 70.75, 12.0, 66.0]
    anns = [
        {"id": 1, "category_id": 7, "segmentation": [polygon], "bbox": [10.5, 20.25, 49.5, 50.5], "iscrowd": 0},
        {"id": 2, "category_id": 3, "segmentation": [square(1, 1, 5)], "bbox": [1, 1, 5, 5], "iscrowd": 1},
    ]
    lines = yolo_label_lines(anns, 100, 80, "segment", MAPPING)
    assert len(lines) == 1
    class_index, points = _polygon_from_line(lines[0], 100, 80)
    assert class_index == 1
    assert np.abs(points - np.array(polygon).reshape(-1, 2)).max() < 0.01


def test_multi_part_polygon_is_joined_and_covers_both_parts() -> None:
    parts = [square(5, 5, 10), square(50, 40, 12)]
    ann = {"id": 1, "category_id": 3, "segmentation": parts, "bbox": [5, 5, 57, 47], "iscrowd": 0}
    (line,) = yolo_label_lines([ann], 100, 80, "segment", MAPPING)
    _, points = _polygon_from_line(line, 100, 80)
    # every original vertex is on the joined outline, within a pixel
    for part in parts:
        for vertex in np.array(part).reshape(-1, 2):
            assert np.min(np.linalg.norm(points - vertex, axis=1)) < 1.0


def test_rle_masks_become_their_outer_contour() -> None:
    binary = np.zeros((60, 80), dtype=np.uint8, order="F")
    binary[10:30, 20:50] = 1
    rle = mask_utils.encode(binary)
    compressed = {"size": rle["size"], "counts": rle["counts"].decode()}
    ann = {"id": 1, "category_id": 7, "segmentation": compressed, "bbox": [20, 10, 30, 20], "iscrowd": 0}
    (line,) = yolo_label_lines([ann], 80, 60, "segment", MAPPING)
    _, points = _polygon_from_line(line, 80, 60)
    assert points[:, 0].min() == pytest.approx(20, abs=1) and points[:, 0].max() == pytest.approx(49, abs=1)
    assert points[:, 1].min() == pytest.approx(10, abs=1) and points[:, 1].max() == pytest.approx(29, abs=1)


def test_box_only_annotation_in_a_segment_dataset_becomes_its_rectangle() -> None:
    ann = {"id": 1, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0}
    (line,) = yolo_label_lines([ann], 100, 100, "segment", MAPPING)
    _, points = _polygon_from_line(line, 100, 100)
    assert np.allclose(points, [[10, 20], [40, 20], [40, 60], [10, 60]], atol=1e-3)


def _example(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    annotations = generate_inspection_dataset(tmp_path / "example", num_images=12, seed=3)
    result = validate_dataset(annotations)
    assert result.report.valid and result.dataset is not None
    return result.dataset, annotations.parent


def test_dataset_is_written_then_reused_until_the_data_changes(tmp_path: Path) -> None:
    dataset, folder = _example(tmp_path)
    info = validate_dataset(dataset, check_images=False).info
    source = SplitSource(dataset, [folder, folder / "images"])
    out = tmp_path / "yolo"
    first = prepare_yolo_dataset({"train": source, "val": source}, out, "segment", info.class_mapping, info.class_names)
    assert not first.reused
    document = yaml.safe_load(first.yaml_path.read_text())
    assert document["names"] == dict(enumerate(info.class_names))
    assert document["train"] == "images/train" and Path(document["path"]) == out.resolve()
    images = sorted((out / "images" / "train").iterdir())
    labels = sorted((out / "labels" / "train").iterdir())
    assert len(images) == len(labels) == 12
    assert all(os.path.islink(p) or p.is_file() for p in images)
    assert sum(1 for p in labels if p.read_text().strip()) == sum(
        1 for i in dataset["images"] if any(a["image_id"] == i["id"] for a in dataset["annotations"])
    )
    assert first.label_counts["train"] == len(dataset["annotations"])

    again = prepare_yolo_dataset({"train": source, "val": source}, out, "segment", info.class_mapping, info.class_names)
    assert again.reused and again.content_hash == first.content_hash

    dataset["annotations"] = dataset["annotations"][1:]
    changed = prepare_yolo_dataset(
        {"train": source, "val": source}, out, "segment", info.class_mapping, info.class_names
    )
    assert not changed.reused and changed.content_hash != first.content_hash
    assert changed.label_counts["train"] == first.label_counts["train"] - 1


def test_missing_images_are_a_clear_error(tmp_path: Path) -> None:
    dataset, _ = _example(tmp_path)
    info = validate_dataset(dataset, check_images=False).info
    with pytest.raises(DataError, match="12 image files were not found"):
        prepare_yolo_dataset(
            {"train": SplitSource(dataset, [tmp_path / "nowhere"])},
            tmp_path / "y",
            "detect",
            info.class_mapping,
            info.class_names,
        )
