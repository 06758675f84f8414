"""Every check and repair of `validate_dataset`, on small COCO dicts built here."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from distillkit.data.validate import validate_dataset
from tests.helpers import square


def codes(result: Any, severity: str | None = None) -> set[str]:
    issues = result.report.errors + result.report.warnings
    return {i.code for i in issues if severity is None or i.severity == severity}


def issue(result: Any, code: str) -> Any:
    for item in result.report.errors + result.report.warnings:
        if item.code == code:
            return item
    raise AssertionError(f"no issue {code}; have {codes(result)}")


def test_clean_dataset_is_valid_and_reports_counts(coco: dict[str, Any]) -> None:
    result = validate_dataset(coco, check_images=False)
    report = result.report
    assert report.valid
    assert report.num_images == 3 and report.num_annotations == 3
    assert report.info.num_empty_images == 1
    assert report.info.has_boxes and report.info.has_masks and report.info.mode == "both"
    by_id = {c.id: c for c in report.info.categories}
    assert (by_id[1].annotations, by_id[1].images) == (2, 2)
    assert (by_id[2].annotations, by_id[2].images) == (1, 1)
    assert report.generated["bbox"] == 1 and report.generated["area"] == 1


def test_input_dict_is_not_modified(coco: dict[str, Any]) -> None:
    before = copy.deepcopy(coco)
    validate_dataset(coco, check_images=False)
    assert coco == before


def test_mode_is_derived_from_the_data(coco: dict[str, Any]) -> None:
    boxes_only = copy.deepcopy(coco)
    boxes_only["annotations"] = [a for a in coco["annotations"] if "bbox" in a]
    assert validate_dataset(boxes_only, check_images=False).info.mode == "boxes"
    masks_only = copy.deepcopy(coco)
    masks_only["annotations"] = [a for a in coco["annotations"] if "segmentation" in a]
    # After repair masks-only data holds boxes derived from the masks, and the report says so (issue 13).
    report = validate_dataset(masks_only, check_images=False).report
    assert report.info.mode == "both" and report.info.has_boxes and report.info.has_masks
    assert report.info.teachers == ["grounding_dino", "sam"]
    assert report.generated["bbox"] == len(masks_only["annotations"]) == 1
    assert report.to_dict()["generated"]["bbox"] == 1 and report.to_dict()["has_boxes"] is True


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda d: d.pop("annotations"), "structure"),
        (lambda d: d.__setitem__("images", {"not": "a list"}), "structure"),
        (lambda d: d["images"].append({"id": 1, "file_name": "x.png", "width": 1, "height": 1}), "duplicate_image_id"),
        (lambda d: d["annotations"].append({**d["annotations"][0]}), "duplicate_annotation_id"),
        (lambda d: d["categories"].append({"id": 1, "name": "other"}), "duplicate_category_id"),
        (lambda d: d["annotations"][0].__setitem__("image_id", 99), "missing_image"),
        (lambda d: d["annotations"][0].__setitem__("category_id", 99), "missing_category"),
        (lambda d: d["annotations"][0].__setitem__("iscrowd", 7), "invalid_iscrowd"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [1, 1, 0, 5]), "invalid_bbox"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [1, 1, -3, 5]), "invalid_bbox"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [1, float("nan"), 3, 5]), "invalid_bbox"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [1, 2, 3]), "invalid_bbox"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [500, 500, 3, 3]), "bbox_outside_image"),
        (lambda d: d["annotations"][1].__setitem__("segmentation", [[1, 2, 3, 4, 5]]), "invalid_polygon"),
        (lambda d: d["annotations"][1].__setitem__("segmentation", [[1, 2, 3, 4]]), "invalid_polygon"),
        (lambda d: d["annotations"][1].__setitem__("segmentation", [[1, 2, 3, 4, "x", 6]]), "invalid_polygon"),
        (lambda d: d["annotations"][1].__setitem__("segmentation", [[1, 2, 3, 4, 1e12, 6]]), "invalid_polygon"),
        (lambda d: d["annotations"][1].__setitem__("segmentation", "polygon"), "invalid_segmentation"),
        (
            lambda d: d["annotations"][1].__setitem__("segmentation", {"counts": [8000], "size": [10, 10]}),
            "rle_size_mismatch",
        ),
        (
            lambda d: d["annotations"][1].__setitem__("segmentation", {"counts": [5, 5], "size": [80, 100]}),
            "invalid_rle",
        ),
        (lambda d: d["annotations"][1].__setitem__("segmentation", [[10, 10, 20, 20, 30, 30]]), "empty_mask"),
        (lambda d: d["annotations"][0].pop("bbox"), "no_geometry"),
        (
            lambda d: (
                d["categories"].append({"id": 3, "name": "dent"})
                or d["annotations"].append({"id": 9, "image_id": 3, "category_id": 3, "bbox": [1, 1, 2, 2]})
            ),
            "duplicate_category_name",
        ),
        (lambda d: d["images"][0].__setitem__("file_name", "../../etc/passwd"), "unsafe_file_name"),
        (lambda d: d["images"][0].__setitem__("file_name", "/etc/passwd"), "unsafe_file_name"),
        (lambda d: d["images"][0].pop("width"), "invalid_image"),
        (lambda d: d["categories"].append({"id": 5}), "invalid_category"),
        (lambda d: d["annotations"].append({"id": 9, "image_id": 1}), "invalid_annotation"),
    ],
)
def test_each_error_is_reported_with_ids(coco: dict[str, Any], mutate: Any, code: str) -> None:
    mutate(coco)
    result = validate_dataset(coco, check_images=False)
    assert not result.report.valid
    found = issue(result, code)
    assert found.severity == "error"
    assert found.message and "\n" not in found.message
    if found.id_type != "dataset":
        assert found.ids, "errors name the ids involved"


def test_drop_invalid_turns_annotation_errors_into_warnings(coco: dict[str, Any]) -> None:
    coco["annotations"][0]["bbox"] = [1, 1, 0, 0]
    strict = validate_dataset(coco, check_images=False)
    assert not strict.report.valid
    lenient = validate_dataset(coco, check_images=False, drop_invalid=True)
    assert lenient.report.valid
    assert issue(lenient, "invalid_bbox").severity == "warning"
    assert [a["id"] for a in lenient.dataset["annotations"]] == [2, 3]


def test_warnings_do_not_invalidate(coco: dict[str, Any]) -> None:
    coco["categories"].append({"id": 7, "name": "unused"})
    coco["annotations"][0]["bbox"] = [-5, 70, 30, 20]  # overshoots left and bottom
    result = validate_dataset(coco, check_images=False, min_per_class=2)
    assert result.report.valid
    assert {"unused_category", "bbox_clipped", "class_below_min"} <= codes(result, "warning")
    assert result.dataset["annotations"][0]["bbox"] == [0.0, 70.0, 25.0, 10.0]
    assert issue(result, "class_below_min").ids == [2]


def test_string_numbers_and_crowd_strings_are_coerced(coco: dict[str, Any]) -> None:
    coco["images"][0]["id"] = "1"
    coco["annotations"][0].update(id="1", iscrowd="false", bbox=["10", "10", "20", "20"])
    coco["annotations"][2]["iscrowd"] = True
    result = validate_dataset(coco, check_images=False)
    assert result.report.valid
    assert "coerced_value" in codes(result, "warning")
    first = result.dataset["annotations"][0]
    assert first["id"] == 1 and first["iscrowd"] == 0 and first["bbox"] == [10.0, 10.0, 20.0, 20.0]
    assert result.dataset["annotations"][2]["iscrowd"] == 1
    assert result.dataset["images"][0]["id"] == 1


def test_flat_polygon_is_wrapped(coco: dict[str, Any]) -> None:
    coco["annotations"][1]["segmentation"] = square(50, 20, 10)
    result = validate_dataset(coco, check_images=False)
    assert result.report.valid
    assert result.dataset["annotations"][1]["segmentation"] == [square(50, 20, 10)]


def test_inconsistent_bbox_and_area_are_flagged_and_replaced(coco: dict[str, Any]) -> None:
    coco["annotations"][1]["bbox"] = [0, 474, 0, 1332]  # the CVAT corruption
    coco["annotations"][1]["area"] = 0.0
    result = validate_dataset(coco, check_images=False)
    assert result.report.valid
    assert {"bbox_mask_mismatch", "area_mask_mismatch"} <= codes(result, "warning")
    repaired = result.dataset["annotations"][1]
    assert repaired["bbox"] == [50.0, 20.0, 10.0, 10.0]
    assert repaired["area"] == 100.0
    assert result.report.replaced["bbox"] == 1 and result.report.replaced["area"] == 1


def test_consistent_bbox_is_kept(coco: dict[str, Any]) -> None:
    coco["annotations"][1]["bbox"] = [50.2, 20.1, 9.7, 9.9]
    coco["annotations"][1]["area"] = 97.0
    result = validate_dataset(coco, check_images=False)
    assert result.dataset["annotations"][1]["bbox"] == [50.2, 20.1, 9.7, 9.9]
    assert result.dataset["annotations"][1]["area"] == 97.0
    assert "bbox_mask_mismatch" not in codes(result)


def test_roboflow_placeholder_category_is_dropped(coco: dict[str, Any]) -> None:
    coco["categories"].insert(0, {"id": 0, "name": "scratch", "supercategory": "none"})
    result = validate_dataset(coco, check_images=False)
    assert result.report.valid
    assert issue(result, "placeholder_category").ids == [0]
    assert [c["id"] for c in result.dataset["categories"]] == [1, 2]
    assert [c.id for c in result.info.categories] == [1, 2]


@pytest.mark.parametrize("bad", [None, [], 3, True, {"images": 1}, {"images": [], "annotations": [], "categories": 5}])
def test_unusable_structures_give_a_report_not_an_exception(bad: Any) -> None:
    result = validate_dataset(bad, check_images=False)
    assert not result.report.valid
    assert result.report.errors[0].code == "structure"


# --- bbox and area equal pycocotools, for every mask shape ---------------------------------------


def _pycocotools_box_area(segmentation: Any, height: int, width: int) -> tuple[list[float], float]:
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.toBbox(rle).tolist(), float(mask_utils.area(rle))


def _random_masks(rng: np.random.Generator, height: int, width: int) -> list[Any]:
    segmentations: list[Any] = []
    for _ in range(30):
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            n = int(rng.integers(3, 12))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radius = rng.uniform(2, 30, n)
            xy = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)
            parts.append(xy.reshape(-1).round(2).tolist())
        segmentations.append(parts)
    for _ in range(10):
        binary = np.zeros((height, width), dtype=np.uint8, order="F")
        y, x = int(rng.integers(0, height - 10)), int(rng.integers(0, width - 10))
        binary[y : y + int(rng.integers(1, 10)), x : x + int(rng.integers(1, 10))] = 1
        compressed = mask_utils.encode(binary)
        segmentations.append({"size": compressed["size"], "counts": compressed["counts"].decode()})
        # uncompressed (list counts) form of the same mask, as CVAT and COCO crowd write it
        flat = binary.reshape(-1, order="F")
        changes = np.flatnonzero(np.diff(np.r_[0, flat, 2 if flat[-1] == 0 else 0]))
        counts = np.diff(np.r_[0, changes]).tolist()
        counts = [c for c in counts if c > 0]
        if flat[0] == 1:
            counts = [0, *counts]
        if sum(counts) == height * width:
            segmentations.append({"size": [height, width], "counts": counts})
    return segmentations


def test_bbox_and_area_equal_pycocotools_for_polygons_and_both_rle_forms() -> None:
    rng = np.random.default_rng(0)
    images, annotations = [], []
    ann_id = 1
    for image_id, (height, width) in enumerate([(80, 120), (97, 61), (256, 256)], start=1):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": width, "height": height})
        for segmentation in _random_masks(rng, height, width):
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": segmentation,
                    "iscrowd": int(isinstance(segmentation, dict)),
                }
            )
            ann_id += 1
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}
    result = validate_dataset(coco, check_images=False)
    kinds = {"polygon": 0, "rle_list": 0, "rle_string": 0}
    dims = {img["id"]: (img["height"], img["width"]) for img in images}
    repaired = {a["id"]: a for a in result.dataset["annotations"]}
    for original in annotations:
        segmentation = original["segmentation"]
        box, area = _pycocotools_box_area(segmentation, *dims[original["image_id"]])
        if area == 0:
            assert original["id"] not in repaired
            continue
        got = repaired[original["id"]]
        assert got["bbox"] == box and got["area"] == area, original["id"]
        if isinstance(segmentation, list):
            kinds["polygon"] += 1
        elif isinstance(segmentation["counts"], list):
            kinds["rle_list"] += 1
        else:
            kinds["rle_string"] += 1
    assert all(count >= 5 for count in kinds.values()), kinds
