"""Benchmark: a YOLO student alone vs distilled from a larger YOLO teacher, on BCCD's own split.

Protocol of issue 3 (defaults): BCCD (``../shared/data/bccd``, train/val/test from
``ImageSets/Main``), from scratch, 320 px, batch 16; the teacher (yolov8s, 50 epochs) is trained
once, then every student variant (yolov8n, 25 epochs) for every seed; each model is scored on the
test split (COCO AP through distillkit's evaluation, and ultralytics' own mAP50-95). The table
gives the mean over seeds and the delta of each variant against the student alone:

    .venv/bin/python tests/bench/bench_distillation.py                                   # full protocol
    .venv/bin/python tests/bench/bench_distillation.py --epochs 2 --teacher-epochs 2 --seeds 0 --variants alone,full

Variants (``--variants``, comma-separated): alone; inherit (weight selection only: the student
starts from weights selected out of the teacher's); pseudo (teacher labels on the training images,
merged with the ground truth); logit, dfl, feature (one KD term each); kd (the three KD terms);
pseudo_kd (pseudo + kd); inherit_kd (inherit + kd); full (inherit + pseudo + kd); ultralytics
(ultralytics' own ``distill_model``). Results are also written to
``WORKDIR/results.json``; trained runs are kept there and reused (``--fresh`` retrains).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

BCCD = REPO.parent / "shared" / "data" / "bccd"
KD_OFF = ["distillation.logit_weight=0", "distillation.dfl_weight=0", "distillation.feature_weight=0"]
NO_INHERIT = "distillation.inherit_weights=false"
VARIANTS: dict[str, list[str]] = {
    "alone": [],
    "inherit": [*KD_OFF],
    "pseudo": ["distillation.label_train_images=true", *KD_OFF, NO_INHERIT],
    "logit": ["distillation.dfl_weight=0", "distillation.feature_weight=0", NO_INHERIT],
    "dfl": ["distillation.logit_weight=0", "distillation.feature_weight=0", NO_INHERIT],
    "feature": ["distillation.logit_weight=0", "distillation.dfl_weight=0", NO_INHERIT],
    "kd": [NO_INHERIT],
    "pseudo_kd": ["distillation.label_train_images=true", NO_INHERIT],
    "inherit_kd": [],
    "full": ["distillation.label_train_images=true"],
    "ultralytics": ["distillation.use_ultralytics_distill_model=true", NO_INHERIT],
}


def make_splits(bccd: Path, work: Path) -> dict[str, Path]:
    """train/val/test COCO files from BCCD's ImageSets/Main lists (invalid boxes dropped, as validate does)."""
    from distillkit.data.validate import validate_dataset

    result = validate_dataset(bccd / "annotations.json", drop_invalid=True)
    assert result.dataset is not None
    dataset = result.dataset
    paths = {}
    for split in ("train", "val", "test"):
        stems = set((bccd / "ImageSets" / "Main" / f"{split}.txt").read_text().split())
        images = [i for i in dataset["images"] if Path(i["file_name"]).stem in stems]
        ids = {i["id"] for i in images}
        coco = {**dataset, "images": images, "annotations": [a for a in dataset["annotations"] if a["image_id"] in ids]}
        paths[split] = work / f"{split}.json"
        paths[split].write_text(json.dumps(coco))
    return paths


def score(model: Path, test: Path, images: Path, imgsz: int, work: Path) -> dict[str, float]:
    """COCO AP (pycocotools, distillkit evaluate) and ultralytics' mAP50-95 on the test split."""
    from distillkit.data.validate import load_valid_dataset
    from distillkit.data.yolo_format import SplitSource, prepare_yolo_dataset
    from distillkit.evaluation.models import evaluate_models
    from distillkit.ultralytics_env import import_ultralytics

    evaluation = evaluate_models(test, [model], images_dir=images, imgsz=imgsz)[0]
    coco_ap = float(next(iter(evaluation.result.metrics.values())).stats["AP"])
    info = load_valid_dataset(test).info
    source = SplitSource(load_valid_dataset(test).dataset, [images])  # type: ignore[arg-type]
    yolo_test = prepare_yolo_dataset(
        {"train": source, "val": source},  # ultralytics insists on a train entry; only val is read
        work / "yolo_test",
        "detect",
        info.class_mapping,
        info.class_names,
    )
    import_ultralytics()
    from ultralytics import YOLO

    metrics = YOLO(str(model)).val(
        data=str(yolo_test.yaml_path), imgsz=imgsz, batch=16, plots=False, verbose=False, project=str(work / "val")
    )
    return {"coco_AP": coco_ap, "map50_95": float(metrics.box.map)}


def train(
    splits: dict[str, Path], images: Path, out: Path, settings: list[str], fresh: bool
) -> tuple[Path, float, dict[str, Any]]:
    from distillkit.students.train import train_student

    marker = out / "bench_done.json"
    if marker.exists() and not fresh:
        record = json.loads(marker.read_text())
        return out / "best.pt", record["seconds"], record["distillation"]
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = train_student(splits["train"], splits["val"], out, overrides=settings, images_dir=images)
    seconds = time.perf_counter() - start
    marker.write_text(
        json.dumps({"seconds": seconds, "distillation": result.distillation, "pseudo_labels": result.pseudo_labels})
    )
    return result.best, seconds, result.distillation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=50)
    parser.add_argument("--seeds", default="0,1", help="comma-separated student seeds")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--student", default="yolov8n")
    parser.add_argument("--teacher", default="yolov8s")
    parser.add_argument("--variants", default="alone,inherit,pseudo,kd,full,ultralytics")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra --set, every run")
    parser.add_argument("--bccd", type=Path, default=BCCD)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distillkit-bench-distill")
    parser.add_argument("--fresh", action="store_true", help="retrain runs found in the workdir")
    parser.add_argument("--goal", type=float, default=0.40, help="target mean mAP50-95 drawn on the plot")
    parser.add_argument(
        "--existing-only",
        action="store_true",
        help="train nothing: tabulate the runs (variant, seed) already in the workdir, skip the others",
    )
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    splits = make_splits(args.bccd, work)
    images = args.bccd / "images"
    common = [
        "student.pretrained=false",
        f"student.imgsz={args.imgsz}",
        f"student.batch={args.batch}",
        f"student.workers={args.workers}",
        "student.plots=false",
        f"training_dynamics.device={args.device}",
        *args.extra,
    ]

    teacher_dir = work / f"teacher_{args.teacher}_{args.teacher_epochs}e_{args.imgsz}"
    if args.existing_only and not (teacher_dir / "bench_done.json").exists():
        parser.error(f"--existing-only: no trained teacher in {teacher_dir}")
    teacher, teacher_seconds, _ = train(
        splits,
        images,
        teacher_dir,
        [*common, f"student.model={args.teacher}", f"student.epochs={args.teacher_epochs}", "training_dynamics.seed=0"],
        args.fresh,
    )
    rows: dict[str, dict[str, Any]] = {
        "teacher": {
            "seeds": [0],
            "seconds": [teacher_seconds],
            **{k: [v] for k, v in score(teacher, splits["test"], images, args.imgsz, work).items()},
        }
    }
    print(f"teacher {args.teacher} ({args.teacher_epochs} epochs): {rows['teacher']}", flush=True)
    for variant in variants:
        row: dict[str, Any] = {"seeds": [], "seconds": [], "coco_AP": [], "map50_95": [], "components": None}
        for seed in seeds:
            settings = [
                *common,
                f"student.model={args.student}",
                f"student.epochs={args.epochs}",
                f"training_dynamics.seed={seed}",
                *VARIANTS[variant],
            ]
            if variant != "alone":
                settings.append(f"distillation.ultralytics_teacher={teacher}")
            if args.existing_only and not (work / f"{variant}_s{seed}_{args.epochs}e" / "bench_done.json").exists():
                continue
            best, seconds, components = train(
                splits, images, work / f"{variant}_s{seed}_{args.epochs}e", settings, args.fresh
            )
            scores = score(best, splits["test"], images, args.imgsz, work)
            row["seeds"].append(seed)
            row["seconds"].append(seconds)
            for key, value in scores.items():
                row[key].append(value)
            row["components"] = {name: c["weight"] for name, c in components.items() if c["active"]}
            print(f"{variant} seed {seed}: {scores} in {seconds:.0f} s", flush=True)
        if row["seconds"]:
            rows[variant] = row
    (work / "results.json").write_text(json.dumps(rows, indent=1))

    base = rows.get("alone")
    print(
        f"\nBCCD test, {args.student} {args.epochs} epochs (seeds {args.seeds}) vs {args.teacher} teacher "
        f"{args.teacher_epochs} epochs, {args.imgsz} px, batch {args.batch}"
    )
    print(
        f"{'variant':<12} {'mAP50-95':>9} {'delta':>7} {'COCO AP':>8} {'delta':>7} {'time':>7}  per seed / components"
    )
    for name, row in rows.items():
        mean_map = statistics.mean(row["map50_95"])
        mean_ap = statistics.mean(row["coco_AP"])
        delta_map = f"{mean_map - statistics.mean(base['map50_95']):+.3f}" if base and name != "teacher" else ""
        delta_ap = f"{mean_ap - statistics.mean(base['coco_AP']):+.3f}" if base and name != "teacher" else ""
        time_ratio = statistics.mean(row["seconds"]) / statistics.mean(base["seconds"]) if base else 1.0
        per_seed = ", ".join(f"s{seed} {v:.3f}" for seed, v in zip(row["seeds"], row["map50_95"], strict=True))
        print(
            f"{name:<12} {mean_map:9.3f} {delta_map:>7} {mean_ap:8.3f} {delta_ap:>7} {time_ratio:6.2f}x  "
            f"[{per_seed}] {row.get('components') or ''}"
        )
    print(f"plot: {plot(rows, work / 'distillation.png', args.goal)}")
    return 0


def plot(rows: dict[str, dict[str, Any]], target: Path, goal: float) -> Path:
    """Mean test mAP50-95 per variant (bars) with each seed's value (dots), the goal and the teacher."""
    from matplotlib.figure import Figure

    names = list(rows)
    figure = Figure(figsize=(8, 0.45 * len(names) + 1.2), dpi=110)
    axes = figure.add_subplot(1, 1, 1)
    for position, name in enumerate(names):
        values = rows[name]["map50_95"]
        axes.barh(position, statistics.mean(values), color="tab:orange" if name == "teacher" else "tab:blue")
        axes.plot(values, [position] * len(values), "k.", markersize=6)
    axes.axvline(goal, color="tab:red", linestyle="--", label=f"goal {goal:.2f}")
    axes.set(yticks=range(len(names)), yticklabels=names, xlabel="test mAP50-95 (ultralytics)")
    axes.invert_yaxis()
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(target)
    return target


if __name__ == "__main__":
    sys.exit(main())
