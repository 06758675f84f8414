"""The real COCO files in ../shared/data/coco_quirks/ and the shared datasets: all read, repaired, reported.

Skipped cleanly when ../shared/data is absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pycocotools import mask as mask_utils

from distillkit.data.validate import validate_dataset
from tests.helpers import shared_data


def _codes(result: Any) -> set[str]:
    return {i.code for i in result.report.errors + result.report.warnings}


QUIRK_FILES = [
    "01_coco_val2014_100img_gt.json",
    "02_panopticapi_detection_format_rle_strings.json",
    "03_cvat_logseg_instances_extra_rle_lists.json",
    "04_cvat_cardash_instances_default_polygons_attributes.json",
    "05_labelme2coco_annotations.json",
    "06_labelstudio_sdk_2.1.2_export_result.json",
    "07_coco_annotator_style_export.json",
    "08_roboflow_facade_valid_dup_category_names.json",
]


@pytest.mark.parametrize("name", QUIRK_FILES)
def test_every_quirk_file_is_read_and_valid(name: str) -> None:
    path = shared_data("coco_quirks", name)
    result = validate_dataset(path)
    assert result.report.valid, [e.message for e in result.report.errors]
    raw = json.loads(path.read_text())
    assert result.report.num_images == len(raw["images"])
    # every annotation that has geometry survives, with a bbox and an area
    for ann in result.dataset["annotations"]:
        assert len(ann["bbox"]) == 4 and ann["bbox"][2] > 0 and ann["bbox"][3] > 0
        assert ann["area"] >= 0
        assert ann["iscrowd"] in (0, 1)


def test_coco_val2014_crowd_rle_and_multipart_polygons() -> None:
    result = validate_dataset(shared_data("coco_quirks", "01_coco_val2014_100img_gt.json"))
    info = result.info
    assert info.mode == "both"
    assert len(info.categories) == 80
    assert sum(c.annotations == 0 for c in info.categories) == 10
    crowd = [a for a in result.dataset["annotations"] if a["iscrowd"] == 1]
    assert len(crowd) == 9


def test_panopticapi_string_rle_gives_pycocotools_boxes() -> None:
    path = shared_data("coco_quirks", "02_panopticapi_detection_format_rle_strings.json")
    raw = json.loads(path.read_text())
    result = validate_dataset(path)
    repaired = {a["id"]: a for a in result.dataset["annotations"]}
    for ann in raw["annotations"]:
        box = mask_utils.toBbox(ann["segmentation"]).tolist()
        got = repaired[ann["id"]]["bbox"]
        assert max(abs(a - b) for a, b in zip(got, box, strict=False)) <= 2.0


def test_cvat_corrupt_bbox_is_repaired_from_its_polygon() -> None:
    path = shared_data("coco_quirks", "04_cvat_cardash_instances_default_polygons_attributes.json")
    result = validate_dataset(path)
    assert "bbox_mask_mismatch" in _codes(result)
    corrupt = next(a for a in result.dataset["annotations"] if a["id"] == 20)
    assert corrupt["bbox"] == pytest.approx([0, 1140, 795, 192], abs=1.5)
    assert corrupt["area"] == pytest.approx(118339, rel=0.02)


def test_labelme_background_category_and_zero_ids() -> None:
    result = validate_dataset(shared_data("coco_quirks", "05_labelme2coco_annotations.json"))
    assert 0 in {c.id for c in result.info.categories}
    assert result.report.valid


def test_label_studio_keypoint_annotation_gets_an_area_from_its_box() -> None:
    result = validate_dataset(shared_data("coco_quirks", "06_labelstudio_sdk_2.1.2_export_result.json"))
    keypoint = next(a for a in result.dataset["annotations"] if a["id"] == 2)
    assert keypoint["area"] == 24 * 11
    assert result.report.generated["area"] == 1


def test_coco_annotator_string_iscrowd_is_coerced() -> None:
    result = validate_dataset(shared_data("coco_quirks", "07_coco_annotator_style_export.json"))
    assert "coerced_value" in _codes(result)
    assert all(a["iscrowd"] == 0 for a in result.dataset["annotations"])


def test_roboflow_duplicate_name_placeholder_is_dropped() -> None:
    result = validate_dataset(shared_data("coco_quirks", "08_roboflow_facade_valid_dup_category_names.json"))
    assert "placeholder_category" in _codes(result)
    assert [c["name"] for c in result.dataset["categories"]].count("facade") == 1


def test_non_coco_json_is_a_clean_error() -> None:
    result = validate_dataset(shared_data("coco_quirks", "06_labelstudio_input_tasks.json"))
    assert not result.report.valid
    assert result.report.errors[0].code == "structure"


def test_bccd_zero_size_boxes_are_errors_unless_dropped() -> None:
    path = shared_data("bccd", "annotations.json")
    strict = validate_dataset(path)
    assert not strict.report.valid
    bad = next(e for e in strict.report.errors if e.code == "invalid_bbox")
    assert len(bad.ids) == 2
    assert strict.report.images_checked and strict.report.images_found == 364
    lenient = validate_dataset(path, drop_invalid=True)
    assert lenient.report.valid and lenient.report.num_annotations == 4886
    names = {c.name: c.annotations for c in lenient.info.categories}
    assert names["WBC"] == 372 and names["Platelets"] == 361


def test_fruits_nuts_images_are_checked() -> None:
    result = validate_dataset(shared_data("fruits_nuts", "trainval.json"))
    assert result.report.valid and result.report.images_checked
    assert result.report.images_found == 18
    assert result.info.mode == "both"


def test_brain_tumor_roboflow_export() -> None:
    path = shared_data("brain_tumor", "valid", "_annotations.coco.json")
    result = validate_dataset(path)
    assert result.report.valid
    assert result.report.images_checked
    assert result.info.num_empty_images > 0
    assert {"placeholder_category", "area_mask_mismatch"} <= _codes(result)


def test_missing_and_mismatched_image_files_are_errors(tmp_path: Path) -> None:
    source = shared_data("fruits_nuts", "trainval.json")
    raw = json.loads(source.read_text())
    images_dir = source.parent / "images"
    raw["images"][0]["file_name"] = "does_not_exist.jpg"
    raw["images"][1]["width"] += 7
    target = tmp_path / "anns.json"
    target.write_text(json.dumps(raw))
    result = validate_dataset(target, images_dir=images_dir)
    found = {e.code: e for e in result.report.errors}
    assert found["image_file_missing"].ids == [raw["images"][0]["id"]]
    assert found["image_size_mismatch"].ids == [raw["images"][1]["id"]]


def test_unreadable_image_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ok.png").write_bytes(b"not really a png")
    coco = {
        "images": [{"id": 1, "file_name": "ok.png", "width": 4, "height": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]}],
        "categories": [{"id": 1, "name": "x"}],
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps(coco))
    result = validate_dataset(path)
    assert [e.code for e in result.report.errors] == ["image_unreadable"]
