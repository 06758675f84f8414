"""`label --backend ray`: a local Ray (started by each run, 2 CPUs) labels exactly as the local backend.

Ray runs go through a subprocess: Ray's gRPC threads in pytest's own process could break later forks.

A tiny random-weight Grounding DINO zero-shot teacher (no downloads) on 12 generated 64-px images:
the same cache keys and entries, the same COCO annotations, a second run computing nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from distillkit.io import read_json
from tests.test_teachers import run_cli
from tests.tiny_teachers import write_shapes_dataset, write_tiny_grounding_dino

if importlib.util.find_spec("ray") is None:
    pytest.skip('the ray extra is not installed (pip install "distillkit[ray]")', allow_module_level=True)

pytestmark = pytest.mark.usefixtures("torch_one_thread")
IMAGES = 12
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("label_ray")
    return {
        "dino": write_tiny_grounding_dino(root / "weights" / "dino").resolve(),
        "raw": write_shapes_dataset(root / "raw", IMAGES, "boxes", seed=7, name="unused.json").parent / "images",
    }


def _cli(*args: Any) -> tuple[int, str, str]:
    """In-process for the local backend; a subprocess with Ray, so Ray's threads never live in pytest's process."""
    if "ray" not in [str(a) for a in args]:
        result = run_cli(*args)
        return result.exit_code, result.stdout, result.output
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "distillkit", *(str(a) for a in args)], env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def _label(world: dict[str, Path], output: Path, cache: Path, *extra: Any) -> dict[str, Any]:
    code, stdout, output_text = _cli(
        "label", world["raw"], "-o", output, "--classes", "red, green", "--dino-weights", world["dino"],
        "--conf", "0", "--batch", "4", "--cache-dir", cache, "--device", "cpu", "--json", *extra,
    )  # fmt: skip
    assert code == 0, output_text
    return json.loads(stdout)


def _entries(cache: Path) -> dict[str, Any]:
    return {path.name: read_json(path) for path in cache.rglob("*.json") if path.parent.name != cache.name}


def test_ray_labels_exactly_as_local(world: dict[str, Path], tmp_path: Path) -> None:
    local = _label(world, tmp_path / "local" / "labels.json", tmp_path / "cache_local")
    # two actors on the 2 CPUs: one torch thread each, as this test's local run (equal results need equal
    # thread counts: a matmul's float sums depend on how they are split)
    ray = _label(
        world, tmp_path / "ray" / "labels.json", tmp_path / "cache_ray", "--backend", "ray", "--ray-actors", "2"
    )
    assert local["computed"] == ray["computed"] == IMAGES
    assert local["teacher_identity"] == ray["teacher_identity"]
    local_entries, ray_entries = _entries(tmp_path / "cache_local"), _entries(tmp_path / "cache_ray")
    assert len(local_entries) == IMAGES and set(ray_entries) == set(local_entries)  # the same content keys
    assert ray_entries == local_entries  # the same predictions, number for number
    local_coco, ray_coco = (read_json(tmp_path / kind / "labels.json") for kind in ("local", "ray"))
    for key in ("images", "annotations", "categories"):
        assert ray_coco[key] == local_coco[key]
    assert ray_coco["annotations"], "the tiny teacher at --conf 0 labels something"

    again = _label(world, tmp_path / "ray" / "again.json", tmp_path / "cache_ray", "--backend", "ray")
    assert again["computed"] == 0 and again["cached"] == IMAGES  # resumable: nothing is computed twice


def test_ray_fills_only_the_missing_entries(world: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _label(world, tmp_path / "a.json", cache)
    entries = sorted(path for path in cache.rglob("*.json") if path.parent.name != cache.name)
    assert first["computed"] == IMAGES and len(entries) == IMAGES
    for path in entries[:5]:  # as if a job was killed before these were written
        path.unlink()
    resumed = _label(world, tmp_path / "b.json", cache, "--backend", "ray", "--ray-actors", "1")
    assert resumed["computed"] == 5 and resumed["cached"] == IMAGES - 5
    # other batches (the 5 missing images together) pad differently: equal up to float rounding
    resumed_annotations = read_json(tmp_path / "b.json")["annotations"]
    first_annotations = read_json(tmp_path / "a.json")["annotations"]
    assert len(resumed_annotations) == len(first_annotations)
    for a, b in zip(resumed_annotations, first_annotations, strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)


def test_backend_options_are_checked_before_any_work(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_cli("label", world["raw"], "-o", tmp_path / "x.json", "--classes", "red", "--backend", "spark")
    assert result.exit_code == 2 and "--backend spark is unknown" in result.output
    result = run_cli("label", world["raw"], "-o", tmp_path / "x.json", "--classes", "red", "--ray-actors", "2")
    assert result.exit_code == 2 and "go with --backend ray" in result.output
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = run_cli("label", world["raw"], "-o", tmp_path / "x.json", "--classes", "red", "--backend", "ray")
    assert result.exit_code == 2 and 'pip install "distillkit[ray]"' in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.json").exists()


def test_train_student_labels_on_ray_as_it_does_locally(tmp_path: Path) -> None:
    """`train-student --teacher T --unlabeled DIR --label-backend ray`: the same teacher-output cache as local."""
    from tests.optimize_helpers import make_checkpoint
    from tests.test_train_student import FAST, make_shapes

    train, val = make_shapes(tmp_path / "train", 8, 0), make_shapes(tmp_path / "val", 4, 1)
    unlabeled = make_shapes(tmp_path / "unlabeled", 6, 2).parent / "images"
    teacher = make_checkpoint(tmp_path / "teacher" / "best.pt", names=("square", "disc"), imgsz=64, score_logit=1.0)
    caches = {}
    for backend in ("local", "ray"):
        out = tmp_path / f"student_{backend}"
        # a random teacher: accepted as it is (its AP is 0 on every class, which would otherwise stop the run)
        settings = [*FAST, "student.imgsz=64", "student.epochs=1", "distillation.teacher_min_ap=0"]
        settings += ["distillation.unknown_classes=[]"]
        code, stdout, output_text = _cli(
            "train-student", "-d", train, "-v", val, "-o", out, "--teacher", teacher, "--unlabeled", unlabeled,
            "--label-backend", backend, *(part for item in settings for part in ("--set", item)), "--json",
        )  # fmt: skip
        assert code == 0, output_text
        report = json.loads(stdout)
        assert report["pseudo_labels"]["unlabeled_images"] == 6, report["pseudo_labels"]
        caches[backend] = _entries(out / "cache" / "teacher_outputs")
    assert caches["local"] and caches["ray"] == caches["local"]  # train, val and unlabelled images, entry by entry
