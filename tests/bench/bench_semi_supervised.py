"""Benchmark: the teacher's knowledge reaching a student through unlabelled images (issue 13's protocol).

BCCD (``../shared/data/bccd``, its own train/val/test split). A seeded, stratified 25 % of the
training images keep their labels; the other 75 % become an unlabelled pool (their labels hidden:
the images are copied into ``WORKDIR/pool`` and nothing else of them is used). A yolov8s teacher is
trained on the labelled quarter only — it stands in for the foundation teachers, which cannot be
downloaded here; the labelling, soft-target and gating code it goes through is the same. Students
are yolov8n from scratch, 320 px, batch 16, 25 epochs, every row, seeds 0 and 1, scored on the test
split with distillkit's evaluation (pycocotools AP50-95 and AP50) and ultralytics' mAP50-95:

* ``A``: the student on the labelled quarter alone;
* ``B``: autodistill-style hard pseudo-labels on the pool: one global threshold 0.5, no soft
  targets, no calibrated gates, no KD terms, no weight selection;
* ``C``: distillkit's default with this teacher (``--teacher T.pt --unlabeled pool``);
* ``Cws``: C without weight selection (what the Grounding DINO / SAM path gets);
* ``D``: the student on all the training labels (the ceiling).

Wall time of B, C and Cws includes the teacher's training. Every run is kept in the workdir and
reused (``--fresh`` retrains); results go to ``WORKDIR/results.json`` and a bar chart::

    .venv/bin/python tests/bench/bench_semi_supervised.py                       # every row, seeds 0,1
    .venv/bin/python tests/bench/bench_semi_supervised.py --rows A,C --seeds 0   # a part
    .venv/bin/python tests/bench/bench_semi_supervised.py --epochs 2 --teacher-epochs 2 --seeds 0  # smoke
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_distillation import BCCD, make_splits, train  # noqa: E402

KD_OFF = ["distillation.logit_weight=0", "distillation.dfl_weight=0", "distillation.feature_weight=0"]
ROWS: dict[str, list[str]] = {
    "A": [],
    "B": [
        *KD_OFF,
        "distillation.inherit_weights=false",
        "distillation.label_train_images=false",
        "distillation.soft_targets=false",
        "distillation.calibrate_thresholds=false",
        "distillation.teacher_min_ap=0",
        "distillation.pseudo_label_conf=0.5",
    ],
    "C": [],
    "Cws": ["distillation.inherit_weights=false"],
    "D": [],
}
TEACHER_ROWS = ("B", "C", "Cws")


def labelled_quarter(splits: dict[str, Path], images: Path, work: Path, fraction: float, seed: int) -> dict[str, Any]:
    """``labelled.json`` (a stratified ``fraction`` of train) and ``pool/`` (copies of the other images)."""
    from distillkit.data.split import split_dataset

    train = json.loads(splits["train"].read_text())
    result = split_dataset(train, {"labelled": fraction, "pool": 1 - fraction}, seed=seed)
    labelled = work / "labelled.json"
    labelled.write_text(json.dumps(result.datasets["labelled"]))
    pool = work / "pool"
    if not pool.is_dir():
        staging = work / "pool.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for image in result.datasets["pool"]["images"]:
            shutil.copyfile(images / Path(image["file_name"]).name, staging / Path(image["file_name"]).name)
        staging.rename(pool)
    return {
        "labelled": labelled,
        "pool": pool,
        "labelled_images": len(result.datasets["labelled"]["images"]),
        "labelled_boxes": len(result.datasets["labelled"]["annotations"]),
        "pool_images": len(result.datasets["pool"]["images"]),
        "hidden_boxes": len(result.datasets["pool"]["annotations"]),
    }


def score(model: Path, test: Path, images: Path, imgsz: int) -> dict[str, float]:
    """COCO AP50-95 and AP50 on the test split (distillkit evaluate, pycocotools)."""
    from distillkit.evaluation.models import evaluate_models

    evaluation = evaluate_models(test, [model], images_dir=images, imgsz=imgsz)[0]
    metrics = next(iter(evaluation.result.metrics.values()))
    stats = metrics.stats
    per_class = {c.name: round(max(0.0, float(c.AP)), 4) for c in metrics.per_class}
    return {"AP": float(stats["AP"]), "AP50": float(stats["AP50"]), "per_class_AP": per_class}


def pseudo_label_count(run: Path) -> int | None:
    marker = run / "bench_done.json"
    record = json.loads(marker.read_text()) if marker.is_file() else {}
    counts = record.get("pseudo_labels") or {}
    if not counts:
        return None
    return int(counts.get("unlabeled_labels", 0)) + int(counts.get("train_labels_added", 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="A,B,C,Cws,D")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--teacher-epochs", type=int, default=50)
    parser.add_argument("--fraction", type=float, default=0.25, help="share of the training images kept labelled")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bccd", type=Path, default=BCCD)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distillkit-bench-semi")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--existing-only", action="store_true", help="train nothing; tabulate finished runs")
    parser.add_argument("--teacher-only", action="store_true", help="train (or reuse) the teacher and stop")
    args = parser.parse_args()
    rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows_wanted if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    splits = make_splits(args.bccd, work)
    images = args.bccd / "images"
    data = labelled_quarter(splits, images, work, args.fraction, seed=0)
    print(
        f"labelled: {data['labelled_images']} images / {data['labelled_boxes']} boxes; "
        f"pool: {data['pool_images']} images ({data['hidden_boxes']} boxes hidden)",
        flush=True,
    )
    quarter = {"train": data["labelled"], "val": splits["val"], "test": splits["test"]}
    common = [
        "student.pretrained=false",
        f"student.imgsz={args.imgsz}",
        f"student.batch={args.batch}",
        f"student.workers={args.workers}",
        "student.plots=false",
        f"training_dynamics.device={args.device}",
    ]
    results: dict[str, Any] = {"data": {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}}

    teacher_run = work / f"teacher_yolov8s_{args.teacher_epochs}e"
    teacher_seconds = 0.0
    if args.teacher_only or any(r in TEACHER_ROWS for r in rows_wanted):
        if args.existing_only and not (teacher_run / "bench_done.json").exists():
            parser.error(f"--existing-only: no trained teacher in {teacher_run}")
        teacher, teacher_seconds, _ = train(
            quarter,
            images,
            teacher_run,
            [*common, "student.model=yolov8s", f"student.epochs={args.teacher_epochs}", "training_dynamics.seed=0"],
            args.fresh,
        )
        results["teacher"] = {"seconds": teacher_seconds, **score(teacher, splits["test"], images, args.imgsz)}
        print(f"teacher: {results['teacher']}", flush=True)
        if args.teacher_only:
            return 0

    for row in rows_wanted:
        record: dict[str, Any] = {
            "seeds": [],
            "AP": [],
            "AP50": [],
            "per_class_AP": [],
            "seconds": [],
            "pseudo_labels": [],
        }
        for seed in seeds:
            run = work / f"{row}_s{seed}_{args.epochs}e"
            if args.existing_only and not (run / "bench_done.json").exists():
                continue
            settings = [
                *common,
                "student.model=yolov8n",
                f"student.epochs={args.epochs}",
                f"training_dynamics.seed={seed}",
                *ROWS[row],
            ]
            if row in TEACHER_ROWS:
                settings += [
                    f"distillation.ultralytics_teacher={teacher}",
                    f"distillation.unlabeled_images={data['pool']}",
                ]
            best, seconds, _ = train(splits if row == "D" else quarter, images, run, settings, args.fresh)
            scores = score(best, splits["test"], images, args.imgsz)
            record["seeds"].append(seed)
            record["AP"].append(scores["AP"])
            record["AP50"].append(scores["AP50"])
            record["per_class_AP"].append(scores["per_class_AP"])
            record["seconds"].append(seconds + (teacher_seconds if row in TEACHER_ROWS else 0.0))
            record["pseudo_labels"].append(pseudo_label_count(run))
            print(f"{row} seed {seed}: {scores} in {seconds:.0f} s (+teacher {teacher_seconds:.0f} s)", flush=True)
        if record["seeds"]:
            results[row] = record
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print_table(results)
    return 0


def print_table(results: dict[str, Any]) -> None:
    mean = {row: statistics.mean(r["AP"]) for row, r in results.items() if row in ROWS}
    print(f"\n{'row':<5} {'AP50-95':>8} {'AP50':>7} {'pseudo':>7} {'minutes':>8}  per seed")
    for row, record in results.items():
        if row not in ROWS:
            continue
        labels = [n for n in record["pseudo_labels"] if n is not None]
        per_seed = ", ".join(f"s{s} {ap:.3f}" for s, ap in zip(record["seeds"], record["AP"], strict=True))
        classes = record.get("per_class_AP") or []
        if classes:
            names = list(classes[0])
            per_seed += "; per class " + ", ".join(
                f"{name} {statistics.mean(c[name] for c in classes):.3f}" for name in names
            )
        print(
            f"{row:<5} {mean[row]:8.3f} {statistics.mean(record['AP50']):7.3f} "
            f"{(statistics.mean(labels) if labels else 0):7.0f} "
            f"{statistics.mean(record['seconds']) / 60:8.1f}  [{per_seed}]"
        )
    if "teacher" in results:
        print(f"teacher (yolov8s on the labelled quarter): AP {results['teacher']['AP']:.3f}")
    if {"A", "D", "Cws"} <= mean.keys():
        gap = mean["D"] - mean["A"]
        closed = (mean["Cws"] - mean["A"]) / gap if gap > 0 else float("nan")
        print(f"Cws closes {closed:.0%} of the A->D gap (goal >= 50%)")
    if {"B", "Cws"} <= mean.keys():
        print(f"Cws - B = {mean['Cws'] - mean['B']:+.3f} AP (goal >= +0.02)")
    if {"C", "D"} <= mean.keys():
        print(f"C - D = {mean['C'] - mean['D']:+.3f} AP (goal: C reaches D)")


if __name__ == "__main__":
    raise SystemExit(main())
