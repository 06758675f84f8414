"""`evaluate`: the golden COCO cases reproduced exactly, the extras checked by hand, the CLI contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from distillkit.errors import DataError, UsageError
from distillkit.evaluation import evaluate_predictions
from distillkit.evaluation.coco_metrics import STAT_KEYS
from tests.helpers import shared_data, square
from tests.test_cli import run

EXACT = 1e-12

VAL2014_BBOX = [
    0.5045806987249628,
    0.6969727247299577,
    0.5729816669904824,
    0.5856257209410443,
    0.5193996948036719,
    0.5013978986347466,
    0.38681277964578054,
    0.5936795762842003,
    0.595352982877607,
    0.6398109626113442,
    0.5664205978994309,
    0.5642905982905982,
]
VAL2014_SEGM = [
    0.3195452758576433,
    0.5622883972521636,
    0.29892653412086784,
    0.3873740315997838,
    0.31018272403369485,
    0.3269339071005138,
    0.2682297225711534,
    0.41544868114906375,
    0.4168394992198818,
    0.4694498622754236,
    0.37675922666197265,
    0.3814715099715099,
]
SMALL_SEGM = [
    0.6947194719471946,
    0.6947194719471946,
    0.6947194719471946,
    -1.0,
    0.7367986798679867,
    0.0,
    0.6666666666666666,
    0.75,
    0.75,
    -1.0,
    0.7916666666666666,
    0.0,
]
IGNORE_BBOX = [
    0.7099009900990099,
    1.0,
    0.8415841584158416,
    -1.0,
    0.7099009900990099,
    -1.0,
    0.0,
    0.45384615384615384,
    0.7153846153846154,
    -1.0,
    0.7153846153846154,
    -1.0,
]


def stats(result: Any, iou_type: str) -> list[float]:
    return [result.metrics[iou_type].stats[key] for key in STAT_KEYS]


def test_golden_cocoapi_fake_results_bbox_and_segm() -> None:
    folder = shared_data("coco_eval_golden", "cocoapi_val2014_100")
    gt = folder / "instances_val2014_100.json"
    boxes = evaluate_predictions(gt, folder / "instances_val2014_fakebbox100_results.json", iou_types="bbox")
    assert stats(boxes, "bbox") == pytest.approx(VAL2014_BBOX, abs=EXACT)
    masks = evaluate_predictions(gt, folder / "instances_val2014_fakesegm100_results.json", iou_types="segm")
    assert stats(masks, "segm") == pytest.approx(VAL2014_SEGM, abs=EXACT)


def test_golden_small_segm_uses_mask_areas() -> None:
    folder = shared_data("coco_eval_golden", "faster_coco_eval_small")
    # the detections carry polygons *and* boxes: scoring masks with box areas would give APm 0.792
    result = evaluate_predictions(folder / "gt_dataset.json", folder / "dt_dataset.json", iou_types="segm")
    assert stats(result, "segm") == pytest.approx(SMALL_SEGM, abs=EXACT)


def test_golden_string_image_ids_and_min_score() -> None:
    folder = shared_data("coco_eval_golden", "faster_coco_eval_small")
    result = evaluate_predictions(folder / "gt_ignore_test.json", folder / "dt_ignore_test.json", min_score=0.1)
    assert stats(result, "bbox") == pytest.approx(IGNORE_BBOX, abs=EXACT)
    assert result.num_detections == 36


def test_golden_detectron2_real_model_output() -> None:
    folder = shared_data("coco_eval_golden", "detectron2_braintumor_real")
    expected = json.loads((folder / "metrics.json").read_text().strip().splitlines()[-1])
    result = evaluate_predictions(
        folder / "valid_annotations.coco.json", folder / "coco_instances_results.json", iou_types="both"
    )
    for iou_type in ("bbox", "segm"):
        got = result.metrics[iou_type].stats
        for key in ("AP", "AP50", "AP75", "APm", "APl"):
            assert got[key] * 100 == pytest.approx(expected[f"{iou_type}/{key}"], abs=1e-9)
        assert got["APs"] == -1.0  # detectron2 writes NaN where pycocotools gives -1
    assert 0.5 < result.metrics["segm"].mean_mask_iou < 1.0


# --- the extras, on a case small enough to check by hand --------------------------------------------


def _tiny_case(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    gt = {
        "images": [
            {"id": 1, "file_name": "images/a.png", "width": 100, "height": 100},
            {"id": 2, "file_name": "images/b.png", "width": 100, "height": 100},
        ],
        "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square(10, 10, 20)], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [square(50, 50, 20)], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "segmentation": [square(30, 30, 30)], "iscrowd": 0},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    detections = [
        # exact hit on scratch in image 1, by file name
        {
            "file_name": "a.png",
            "category_id": 1,
            "score": 0.9,
            "bbox": [10, 10, 20, 20],
            "segmentation": [square(10, 10, 20)],
        },
        # dent predicted as scratch (wrong class) in image 1
        {"image_id": 1, "category_id": 1, "score": 0.8, "bbox": [50, 50, 20, 20], "segmentation": [square(50, 50, 20)]},
        # half-overlapping scratch in image 2: mask IoU 20*30/(2*900-600) = 0.5
        {"image_id": 2, "category_id": 1, "score": 0.7, "bbox": [30, 40, 30, 20], "segmentation": [square(30, 40, 20)]},
        # a low-score false positive
        {"image_id": 2, "category_id": 2, "score": 0.1, "bbox": [0, 80, 10, 10], "segmentation": [square(0, 80, 10)]},
    ]
    return path, detections


def test_precision_recall_f1_at_best_confidence_and_mask_iou(tmp_path: Path) -> None:
    gt, detections = _tiny_case(tmp_path)
    result = evaluate_predictions(gt, detections, iou_types="both")
    boxes = result.metrics["bbox"]
    # box IoU of the third detection: [30,40,30,20] vs [30,30,30,30] = 600/900 = 0.67 ≥ 0.5 → 2 TPs of 3 GT
    # at threshold 0.7: 3 detections, 2 TP → P 2/3, R 2/3, F1 2/3 (better than 0.9: P 1, R 1/3, F1 0.5)
    assert boxes.confidence == pytest.approx(0.7)
    assert (boxes.precision, boxes.recall, boxes.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    scratch = next(c for c in boxes.per_class if c.name == "scratch")
    assert (scratch.gt_instances, scratch.detections) == (2, 3)
    assert (scratch.precision, scratch.recall) == pytest.approx((2 / 3, 1.0))
    masks = result.metrics["segm"]
    # matched mask pairs at IoU 0.5: exact hit (1.0); the half-overlap is 400/(400+900-400)=0.444 → unmatched
    assert masks.mean_mask_iou == pytest.approx(1.0)
    # confusion (rows predicted, columns true, background last) at score ≥ 0.7
    assert boxes.confusion.tolist() == [[2, 1, 0], [0, 0, 0], [0, 0, 0]]


def test_errors_name_the_detection(tmp_path: Path) -> None:
    gt, detections = _tiny_case(tmp_path)
    with pytest.raises(DataError, match="detection #0 refers to image_id 99"):
        evaluate_predictions(gt, [{**detections[1], "image_id": 99}])
    with pytest.raises(DataError, match="category_id 7"):
        evaluate_predictions(gt, [{**detections[1], "category_id": 7}])
    with pytest.raises(DataError, match="no usable score"):
        evaluate_predictions(gt, [{k: v for k, v in detections[1].items() if k != "score"}])
    with pytest.raises(DataError, match="unusable segmentation"):
        evaluate_predictions(gt, [{**detections[1], "segmentation": {"size": [100, 100], "counts": "0a"}}])
    boxes_only = [{k: v for k, v in d.items() if k != "segmentation"} for d in detections]
    with pytest.raises(UsageError, match="predictions has no segmentation"):
        evaluate_predictions(gt, boxes_only, iou_types="segm")
    assert list(evaluate_predictions(gt, boxes_only).metrics) == ["bbox"]


def test_no_detections_gives_zero_not_a_crash(tmp_path: Path) -> None:
    gt, _ = _tiny_case(tmp_path)
    result = evaluate_predictions(gt, [])
    assert result.metrics["bbox"].stats["AP"] == 0.0 or result.metrics["bbox"].stats["AP"] == -1.0
    assert result.metrics["bbox"].f1 == 0.0


def test_cli_json_and_output_files(tmp_path: Path) -> None:
    gt, detections = _tiny_case(tmp_path)
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps(detections))
    out_dir = tmp_path / "eval"
    code, out, err = run(
        "evaluate", "--data", str(gt), "--predictions", str(predictions), "--output", str(out_dir), "--json"
    )
    assert code == 0, err
    document = json.loads(out)
    for iou_type in ("bbox", "segm"):
        assert set(STAT_KEYS) <= set(document[iou_type])
        assert {"precision", "recall", "f1", "per_class"} <= set(document[iou_type])
    assert "mean_mask_iou" in document["segm"]
    for name in ("metrics.json", "per_class.csv", "pr_curve_bbox.png", "confusion_matrix_segm.png"):
        assert (out_dir / name).stat().st_size > 0
    with Image.open(out_dir / "pr_curve_bbox.png") as image:
        assert image.format == "PNG" and min(image.size) > 100
    rows = (out_dir / "per_class.csv").read_text().splitlines()
    assert rows[0].startswith("iou_type,class_id,class_name") and len(rows) == 1 + 2 * 2
    assert json.loads((out_dir / "metrics.json").read_text())["bbox"]["AP"] == document["bbox"]["AP"]


def test_cli_errors(tmp_path: Path) -> None:
    gt, detections = _tiny_case(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**detections[0], "image_id": 5}]))
    code, out, err = run("evaluate", "--data", str(gt), "--predictions", str(bad))
    assert code == 1 and out == "" and err.count("\n") == 1 and "image_id 5" in err
    code, _, err = run("evaluate", "--data", str(gt), "--predictions", str(bad), "--iou-type", "keypoints")
    assert code == 2 and "not one of bbox, segm" in err
    code, _, err = run("evaluate", "--data", str(gt))
    assert code == 2 and "--predictions" in err
    # a detector with classification data (a class-per-folder tree) used to be told the folder is no JSON file
    detector = tmp_path / "detector.pt"
    detector.write_bytes(b"not a classifier")
    (tmp_path / "tree" / "cat").mkdir(parents=True)
    code, _, err = run("evaluate", "--data", str(tmp_path / "tree"), "--model", str(detector))
    assert code == 2 and err.count("\n") == 1 and "not a classifier" in err and "COCO JSON" in err


def test_pr_curve_values_come_from_cocoeval(tmp_path: Path) -> None:
    gt, detections = _tiny_case(tmp_path)
    result = evaluate_predictions(gt, detections)
    curves = result.metrics["bbox"].pr_curves
    assert set(curves) == {1, 2}
    assert all(len(curve) == 101 for curve in curves.values())
    assert np.all(curves[1][:50] >= 0)
