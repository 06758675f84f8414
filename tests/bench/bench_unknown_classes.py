"""Benchmark: a class the teacher cannot find, taught as background or ignored on the unlabelled images.

Synthetic, so that the effect is isolated (the BCCD protocol of ``bench_semi_supervised.py`` cannot
show it: at 320 px not even the student trained on every label finds a platelet). Red squares and
blue discs (``tests/test_train_student.make_shapes``): a quarter of the training images keep their
labels, the rest become an unlabelled pool. The teacher is an oracle for squares that never finds a
disc — the situation of a teacher scoring AP 0 on one class of ``--val``. Students (yolov8n from
scratch, 128 px) are trained with that teacher on the labelled quarter + the pool:

* ``background``: ``distillation.unknown_class_ap=0`` — the pool's discs have no label, so every one
  of them is trained as background (what distillkit did before);
* ``ignore``: the default — discs are declared unknown on ``--val``, each pool image gets a
  whole-image ignore region for them, so the discs of the pool are neither positives nor negatives;
* ``labelled``: no teacher, the labelled quarter alone (the disc class's reference).

Reports test AP per class, two seeds::

    .venv/bin/python tests/bench/bench_unknown_classes.py [--epochs 15] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from distillkit.labelling.types import TeacherPrediction  # noqa: E402
from tests.test_train_student import FAST, make_shapes  # noqa: E402

ROWS = {"background": ["distillation.unknown_class_ap=0"], "ignore": [], "labelled": []}


class SquaresOracle:
    """Finds every square of the images it knows (exactly, score 0.9) and never a disc."""

    identity = "squares-oracle-1"
    class_names = ("square", "disc")

    def __init__(self, truth: dict[str, list[list[float]]]) -> None:
        self.truth = truth

    def predict(self, images: Sequence[Path]) -> list[TeacherPrediction]:
        out = []
        for path in images:
            squares = self.truth[Path(path).resolve().as_posix()]
            out.append(
                TeacherPrediction(
                    width=128,
                    height=128,
                    boxes=[[x, y, x + w, y + h] for x, y, w, h in squares],
                    scores=[0.9] * len(squares),
                    class_ids=[0] * len(squares),
                    class_scores=[[0.9, 0.0]] * len(squares),
                )
            )
        return out


def build_data(work: Path, images: int, fraction: float) -> dict[str, Any]:
    """labelled.json (a quarter of train, with its images), pool/ (the rest, images only), val, test."""
    full = make_shapes(work / "train", images, 0)
    val = make_shapes(work / "val", 32, 1)
    test = make_shapes(work / "test", 48, 2)
    coco = json.loads(full.read_text())
    cut = int(len(coco["images"]) * fraction)
    kept = {image["id"] for image in coco["images"][:cut]}
    labelled = {
        **coco,
        "images": coco["images"][:cut],
        "annotations": [a for a in coco["annotations"] if a["image_id"] in kept],
    }
    (work / "train" / "labelled.json").write_text(json.dumps(labelled))
    pool = work / "pool"
    pool.mkdir(exist_ok=True)
    truth: dict[str, list[list[float]]] = {}
    for folder, document in ((work / "train", coco), (work / "val", json.loads(val.read_text()))):
        for image in document["images"]:
            source = folder / image["file_name"]
            squares = [
                a["bbox"] for a in document["annotations"] if a["image_id"] == image["id"] and a["category_id"] == 5
            ]
            truth[source.resolve().as_posix()] = squares
            if folder.name == "train" and image["id"] not in kept:
                copy = pool / Path(image["file_name"]).name
                shutil.copyfile(source, copy)
                truth[copy.resolve().as_posix()] = squares
    hidden = sum(1 for a in coco["annotations"] if a["image_id"] not in kept and a["category_id"] == 9)
    return {
        "labelled": work / "train" / "labelled.json",
        "val": val,
        "test": test,
        "pool": pool,
        "truth": truth,
        "labelled_images": cut,
        "pool_images": len(coco["images"]) - cut,
        "pool_discs": hidden,
    }


def per_class_ap(model: Path, test: Path) -> dict[str, float]:
    from distillkit.evaluation.models import evaluate_models

    evaluation = evaluate_models(test, [model], imgsz=128)[0]
    metrics = next(iter(evaluation.result.metrics.values()))
    return {"all": max(0.0, float(metrics.stats["AP"])), **{c.name: max(0.0, float(c.AP)) for c in metrics.per_class}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--images", type=int, default=160, help="training images (a quarter keep labels)")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    from distillkit.students.train import train_student

    work = args.workdir or Path(tempfile.mkdtemp(prefix="distillkit-bench-unknown-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = build_data(work, args.images, args.fraction)
    print(
        f"labelled {data['labelled_images']} images; pool {data['pool_images']} images "
        f"({data['pool_discs']} discs hidden); teacher: an oracle for squares that never finds a disc",
        flush=True,
    )
    teacher = SquaresOracle(data["truth"])
    results: dict[str, list[dict[str, float]]] = {row: [] for row in ROWS}
    for seed in (int(s) for s in args.seeds.split(",")):
        for row, settings in ROWS.items():
            overrides = [*FAST, f"student.epochs={args.epochs}", f"training_dynamics.seed={seed}", *settings]
            if row != "labelled":
                overrides.append(f"distillation.unlabeled_images={data['pool']}")
            started = time.perf_counter()
            result = train_student(
                data["labelled"],
                data["val"],
                work / f"{row}_s{seed}",
                overrides=overrides,
                teacher=teacher if row != "labelled" else None,
            )
            scores = per_class_ap(result.best, data["test"])
            scores["seconds"] = time.perf_counter() - started
            results[row].append(scores)
            labels = result.pseudo_labels
            print(
                f"{row:<10} seed {seed}: AP {scores['all']:.3f}  square {scores['square']:.3f}  "
                f"disc {scores['disc']:.3f}  ({scores['seconds']:.0f} s; unknown {labels.get('unknown_classes')}, "
                f"{labels.get('ignore_regions', 0)} ignore regions)",
                flush=True,
            )
    print(f"\n{'row':<11}{'AP':>7}{'square':>8}{'disc':>7}  per-seed disc AP")
    for row, runs in results.items():
        mean = {key: statistics.mean(r[key] for r in runs) for key in ("all", "square", "disc")}
        spread = ", ".join(f"{r['disc']:.3f}" for r in runs)
        print(f"{row:<11}{mean['all']:7.3f}{mean['square']:8.3f}{mean['disc']:7.3f}  [{spread}]")
    gain = statistics.mean(r["disc"] for r in results["ignore"]) - statistics.mean(
        r["disc"] for r in results["background"]
    )
    print(f"disc AP, ignore - background: {gain:+.3f}")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
