"""Plumbing run: tiny random-weight Grounding DINO + SAM teachers through the whole teacher -> student flow.

The foundation weights cannot be downloaded here, so this measures the *machinery* only (its
numbers mean nothing about quality): a synthetic masks-only dataset (polygons, no boxes, as labelme
and CVAT export them) is split into a labelled part and an unlabelled pool; then, through the real
CLI, in one process each:

1. ``validate`` derives the boxes (has_boxes and has_masks: both teachers);
2. ``train-teacher`` trains Grounding DINO (boxes) and SAM (masks) LoRA adapters;
3. ``label`` labels the pool into a scored COCO file (the review file for CVAT), validated;
4. ``train-student --teacher-dir`` (no ``--unlabeled``): the teachers label the training images;
5. ``train-student --teacher-dir --unlabeled POOL --exclude test.json``: and the pool.

Each step's wall time and the counts it reports are printed::

    .venv/bin/python tests/bench/bench_tiny_foundation_flow.py
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

TEACHER_SETS = [
    "--set", "teacher_grounding_dino_lora.shortest_edge=96", "--set", "teacher_grounding_dino_lora.longest_edge=96",
    "--set", "teacher_grounding_dino_lora.box_threshold=0.0", "--set", "teacher_grounding_dino_lora.text_threshold=0.0",
    "--set", "training_dynamics.num_workers=0", "--set", "augmentation.intensity=none",
]  # fmt: skip
STUDENT = [
    "--student", "yolov8n-seg", "--epochs", "2", "--imgsz", "64", "--batch", "4", "--device", "cpu",
    "--set", "student.nbs=4", "--set", "student.plots=false", "--set", "student.workers=0",
    "--force-teacher",  # random teachers score ~0 on val: the floor would (rightly) refuse them
    "--set", "distillation.calibrate_thresholds=false", "--set", "distillation.pseudo_label_conf=0.0",
]  # fmt: skip


def cli(*args: Any) -> tuple[int, dict[str, Any], float]:
    from distillkit.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{args[0]} failed ({code}): {stderr.getvalue().strip()[-500:]}")
    return code, json.loads(stdout.getvalue() or "{}"), seconds


def main() -> int:
    from tests.tiny_sam import write_tiny_sam
    from tests.tiny_teachers import write_shapes_dataset, write_tiny_grounding_dino

    work = Path(tempfile.mkdtemp(prefix="distillkit-tiny-flow-"))
    data = work / "data"
    train = write_shapes_dataset(data, 8, "masks", seed=0, name="train.json")
    val = write_shapes_dataset(data, 4, "masks", seed=1, name="val.json")
    test = write_shapes_dataset(data, 4, "masks", seed=2, name="test.json")
    pool_source = write_shapes_dataset(work / "pool_src", 12, "masks", seed=3, name="pool.json")
    pool = work / "pool"
    shutil.copytree(pool_source.parent / "images", pool)
    test_image = data / "images" / Path(json.loads(test.read_text())["images"][0]["file_name"]).name
    shutil.copyfile(test_image, pool / "copy_of_a_held_out_image.png")  # must be screened out by --exclude
    exp = work / "exp"
    rows = []

    _, report, seconds = cli("validate", train, "--json")
    rows.append(("validate", seconds, f"mode {report['mode']}, {report['generated']['bbox']} boxes derived"))
    _, report, seconds = cli(
        "train-teacher", "-d", train, "-v", val, "-o", exp, "--epochs", "2", "--batch", "2", "--device", "cpu",
        "--dino-weights", write_tiny_grounding_dino(work / "dino"), "--sam-weights", write_tiny_sam(work / "sam"),
        "--json", *TEACHER_SETS,
    )  # fmt: skip
    rows.append(("train-teacher", seconds, f"teachers {report['decision']}"))
    _, report, seconds = cli(
        "label", pool, "--teacher-dir", exp, "-o", work / "labels.json", "--exclude", test, "--json"
    )
    rows.append(("label", seconds, json.dumps({k: v for k, v in report.items() if isinstance(v, int)})))
    _, report, seconds = cli("validate", work / "labels.json", "--images-dir", pool, "--skip-images", "--json")
    rows.append(("validate labels", seconds, f"valid {report['valid']}, {report['num_annotations']} annotations"))
    for name, extra in (("train-student", []), ("train-student --unlabeled", ["--unlabeled", pool, "--exclude", test])):
        _, report, seconds = cli(
            "train-student", "-d", train, "-v", val, "-o", work / name.replace(" ", "_"), "--teacher-dir", exp,
            *STUDENT, *extra, "--json",
        )  # fmt: skip
        active = [n for n, c in report["distillation"].items() if c["active"]]
        labels = report["pseudo_labels"]
        keys = ("train_labels_added", "ground_truth_soft_targets", "unlabeled_labels", "skipped_duplicate_images")
        counts = {k: labels[k] for k in keys} | {"soft_targets_matched": labels["soft_targets_matched"]}
        rows.append((name, seconds, f"components {active}; {counts}"))
    print(f"\ntiny Grounding DINO + SAM flow in {work} (plumbing only: random weights)")
    for step, seconds, what in rows:
        print(f"{step:<26} {seconds:7.1f} s  {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
