"""Benchmark: `distillkit evaluate` against plain pycocotools on the golden cases in ../shared/data.

For each case it runs pycocotools exactly as a user would (COCO(), loadRes, COCOeval) and
`evaluate_predictions`, checks that the twelve numbers are identical, and prints both wall times
and their ratio. distillkit does more (validation, per-class AP, best-F1 P/R/F1, matched-mask IoU,
confusion matrix), so the ratio shows what those extras cost.

    .venv/bin/python tests/bench/bench_evaluate.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from distillkit.evaluation import evaluate_predictions
from distillkit.evaluation.coco_metrics import STAT_KEYS

GOLDEN = Path(__file__).resolve().parents[3] / "shared" / "data" / "coco_eval_golden"


def _pycocotools(gt_path: Path, dt: list[dict[str, Any]], iou_type: str, fix_ids: bool = False) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        if fix_ids:
            data = json.loads(gt_path.read_text())
            for image in data["images"]:
                image["id"] = int(image["id"])
            for ann in data["annotations"]:
                ann["image_id"] = int(ann["image_id"])
            gt = COCO()
            gt.dataset = data
            gt.createIndex()
        else:
            gt = COCO(str(gt_path))
        if iou_type == "segm":
            dt = copy.deepcopy(dt)
            for d in dt:
                d.pop("bbox", None)
                if isinstance(d["segmentation"], list):
                    image = gt.imgs[d["image_id"]]
                    d["segmentation"] = mask_utils.merge(
                        mask_utils.frPyObjects(d["segmentation"], image["height"], image["width"])
                    )
        evaluator = COCOeval(gt, gt.loadRes(dt), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


CASES = [
    (
        "cocoapi val2014 bbox",
        "cocoapi_val2014_100/instances_val2014_100.json",
        "cocoapi_val2014_100/instances_val2014_fakebbox100_results.json",
        "bbox",
        0.0,
        False,
    ),
    (
        "cocoapi val2014 segm",
        "cocoapi_val2014_100/instances_val2014_100.json",
        "cocoapi_val2014_100/instances_val2014_fakesegm100_results.json",
        "segm",
        0.0,
        False,
    ),
    (
        "faster_coco_eval small segm",
        "faster_coco_eval_small/gt_dataset.json",
        "faster_coco_eval_small/dt_dataset.json",
        "segm",
        0.0,
        False,
    ),
    (
        "faster_coco_eval ignore bbox",
        "faster_coco_eval_small/gt_ignore_test.json",
        "faster_coco_eval_small/dt_ignore_test.json",
        "bbox",
        0.1,
        True,
    ),
    (
        "detectron2 brain tumor bbox",
        "detectron2_braintumor_real/valid_annotations.coco.json",
        "detectron2_braintumor_real/coco_instances_results.json",
        "bbox",
        0.0,
        False,
    ),
    (
        "detectron2 brain tumor segm",
        "detectron2_braintumor_real/valid_annotations.coco.json",
        "detectron2_braintumor_real/coco_instances_results.json",
        "segm",
        0.0,
        False,
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best wall time counts")
    args = parser.parse_args()
    if not GOLDEN.exists():
        print(f"golden data not found at {GOLDEN}; nothing to measure")
        return 0
    failures = 0
    print(f"{'case':32} {'pycocotools':>12} {'distillkit':>11} {'ratio':>6}  numbers")
    for name, gt_name, dt_name, iou_type, min_score, fix_ids in CASES:
        gt_path, dt_path = GOLDEN / gt_name, GOLDEN / dt_name
        detections = [d for d in json.loads(dt_path.read_text()) if d["score"] >= min_score]
        base_times, ours_times = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            expected = _pycocotools(gt_path, detections, iou_type, fix_ids)
            base_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = evaluate_predictions(gt_path, dt_path, iou_types=iou_type, min_score=min_score)
            ours_times.append(time.perf_counter() - start)
        got = [result.metrics[iou_type].stats[k] for k in STAT_KEYS]
        same = np.array_equal(np.asarray(got), np.asarray(expected))
        failures += not same
        base, ours = min(base_times), min(ours_times)
        print(f"{name:32} {base:11.3f}s {ours:10.3f}s {ours / base:6.2f}  {'identical' if same else 'DIFFERENT'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
