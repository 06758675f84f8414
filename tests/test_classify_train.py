"""train-classifier end to end on tiny generated images: training, outputs, resume, KD, evaluate, infer, Grad-CAM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distillkit.classify import is_classifier_checkpoint, load_classifier
from distillkit.classify.gradcam import gradcam_maps
from distillkit.classify.train import train_classifier
from tests.test_cli import run

# Fast settings: a tiny timm test model at 32 px, no worker processes, a learning rate for scratch training.
FAST = [
    "classifier.model=test_resnet",
    "classifier.imgsz=32",
    "classifier.topk=[1,2]",
    "training_dynamics.lr=0.003",
    "training_dynamics.batch_size=8",
    "training_dynamics.num_workers=0",
    "training_dynamics.warmup_epochs=0.5",
    "training_dynamics.device=cpu",
]
CLASSES = ("dots", "horizontal", "vertical")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _bars(kind: int, rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(0, 60, (32, 32, 3)).astype(np.uint8)
    offset = int(rng.integers(-4, 5))
    if kind == 0:
        image[::6, ::6] += 190
    elif kind == 1:
        image[12 + offset : 20 + offset, :] += 150
    else:
        image[:, 12 + offset : 20 + offset] += 150
    return image


def make_tree(root: Path, per_class: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for kind, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_bars(kind, rng)).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(train tree, test tree, experiment) after a short run with CBAM, EMA and mixup on."""
    base = tmp_path_factory.mktemp("cls")
    train = make_tree(base / "train", 14, seed=0)
    test = make_tree(base / "test", 6, seed=1)
    exp = base / "exp"
    train_classifier(
        train,
        exp,
        overrides=[
            *FAST,
            "training_dynamics.epochs=4",
            "classifier.cbam_stages=[4]",
            "classifier.mixup_alpha=0.2",
            "training_dynamics.ema.decay=0.9",
        ],
        val_fraction=0.25,
    )
    return train, test, exp


def test_training_learns_and_writes_its_outputs(trained: tuple[Path, Path, Path]) -> None:
    _, test, exp = trained
    for name in ("best.pt", "last.pt", "results.json", "training_curves.png", "metrics.csv", "classifier_config.yaml"):
        assert (exp / name).is_file(), name
    assert list((exp / "tensorboard").rglob("events.out.tfevents*"))
    assert (exp / "checkpoints" / "last.pt").is_file()
    results = json.loads((exp / "results.json").read_text())
    assert results["task"] == "classify" and results["class_names"] == list(CLASSES)
    assert len(results["history"]) == 4 and "val/accuracy" in results["history"][0]
    assert results["config"]["classifier"]["cbam_stages"] == [4]
    assert results["split"] == "auto" and results["val_images"] == 10  # 25% of 42, largest-remainder rounding
    loaded = load_classifier(exp / "best.pt")
    assert loaded.class_names == list(CLASSES) and loaded.imgsz == 32 and not loaded.multi_label
    assert "layer4" in loaded.model.stage_modules.values()
    # A clear margin over chance (1/3) on held-out images the run never saw.
    code, stdout, _ = run("evaluate", "--data", str(test), "--model", str(exp / "best.pt"), "--json")
    assert code == 0
    document = json.loads(stdout)
    for key in ("accuracy", "top_k", "ece", "macro_f1", "micro_f1", "per_class"):
        assert key in document
    assert document["accuracy"] >= 0.7, document["accuracy"]
    assert set(document["per_class"]) == set(CLASSES)


def test_ema_weights_are_what_is_saved(trained: tuple[Path, Path, Path]) -> None:
    _, _, exp = trained
    state = torch.load(exp / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert state["ema"] is not None
    last = torch.load(exp / "last.pt", map_location="cpu", weights_only=True)["model"]
    key = "backbone.fc.weight"
    assert torch.equal(last[key], state["ema"]["shadow"][f"classifier.{key}"])
    assert not torch.equal(last[key], state["model"][f"classifier.{key}"])  # the live weights differ


def test_evaluate_files_ensemble_and_tta(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, test, exp = trained
    code, stdout, stderr = run(
        "evaluate", "-d", str(test), "-m", str(exp / "best.pt"), "-m", str(exp / "last.pt"),
        "--tta", "hflip", "--top-k", "2", "-o", str(tmp_path / "eval"), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["ensemble"] and document["tta"] == ["hflip"] and list(document["top_k"]) == ["2"]
    assert len(document["models"]) == 2
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "reliability.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    rows = (tmp_path / "eval" / "confusion_matrix.csv").read_text().splitlines()
    assert len(rows) == 4 and sum(int(v) for row in rows[1:] for v in row.split(",")[1:]) == 18


def test_infer_json_and_gradcam(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, test, exp = trained
    code, stdout, stderr = run(
        "infer", "-m", str(exp / "best.pt"), str(test / "dots"), "-o", str(tmp_path / "out"),
        "--gradcam", str(tmp_path / "cam"), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["images"] == 6 and len(document["results"]) == 6
    first = document["results"][0]
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert first["classes"][0] in CLASSES
    overlays = sorted((tmp_path / "cam").glob("*_gradcam.png"))
    assert len(overlays) == 6
    assert np.asarray(Image.open(overlays[0])).shape == (32, 32, 3)
    loaded = load_classifier(exp / "best.pt")
    maps = gradcam_maps(loaded, torch.randn(2, 3, 32, 32), [0, 1])
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    # overlays written among the input images would be classified by the next run over that folder
    before = sorted(p.name for p in (test / "dots").iterdir())
    args = ["-o", str(tmp_path / "o2"), "--gradcam", str(test / "dots")]
    code, _, stderr = run("infer", "-m", str(exp / "best.pt"), str(test / "dots"), *args)
    assert code == 2 and "--gradcam" in stderr and stderr.count("\n") == 1
    assert sorted(p.name for p in (test / "dots").iterdir()) == before


def test_resume_continues_the_run(tmp_path: Path) -> None:
    data = make_tree(tmp_path / "data", 5)
    first = train_classifier(data, tmp_path / "exp", overrides=[*FAST, "training_dynamics.epochs=1"])
    assert first.epochs_run == 1
    resumed = train_classifier(data, tmp_path / "exp", overrides=[*FAST, "training_dynamics.epochs=2"], resume=True)
    assert resumed.epochs_run == 2
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert is_classifier_checkpoint(tmp_path / "exp" / "last.pt")
    # forgetting --resume must not overwrite the run; --resume with nothing to resume writes nothing
    best = (tmp_path / "exp" / "best.pt").read_bytes()
    code, _, stderr = run("train-classifier", "-d", str(data), "-o", str(tmp_path / "exp"), "--set", *FAST[:1])
    assert code == 2 and "already holds a training run" in stderr and "--resume" in stderr
    assert (tmp_path / "exp" / "best.pt").read_bytes() == best
    code, _, stderr = run("train-classifier", "-d", str(data), "-o", str(tmp_path / "new"), "--resume")
    assert code == 2 and "nothing to resume" in stderr and not (tmp_path / "new").exists()


def test_distillation_and_multi_label_csv(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    train, _, exp = trained
    student = train_classifier(
        train,
        tmp_path / "student",
        overrides=[
            *FAST,
            "training_dynamics.epochs=1",
            "classifier.model=test_efficientnet",
            "classifier.feature_weight=0.5",
        ],
        teacher=exp / "best.pt",
    )
    assert {"train/kd", "train/feature", "train/hard"} <= set(student.history[0])
    # Multi-label from a one-hot CSV: detected, the loss switches to bce, macro F1 is monitored.
    rows = ["file,dots,horizontal,vertical"]
    for path in sorted(train.rglob("*.png"))[::2]:
        kind = CLASSES.index(path.parent.name)
        flags = ["1" if kind == k else "0" for k in range(3)]
        if kind == 1:
            flags[2] = "1"  # several labels on some images
        rows.append(f"{path},{','.join(flags)}")
    (tmp_path / "multi.csv").write_text("\n".join(rows) + "\n")
    result = train_classifier(
        tmp_path / "multi.csv", tmp_path / "multi", overrides=[*FAST, "training_dynamics.epochs=1"]
    )
    assert result.multi_label and result.monitor == "val/macro_f1"
    assert any("bce" in notice for notice in result.notices)
    assert result.metrics["hamming_loss"] is not None and "subset_accuracy" in result.metrics


def test_cli_train_classifier_errors_and_list(tmp_path: Path) -> None:
    code, stdout, _ = run("train-classifier", "--list-models", "--model", "test_eff*", "--json")
    assert code == 0 and "test_efficientnet" in json.loads(stdout)["models"]
    code, _, stderr = run("train-classifier", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "x"))
    assert code == 2 and "does not exist" in stderr and "Traceback" not in stderr
    code, _, stderr = run("train-classifier", "-d", str(tmp_path), "-o", str(tmp_path / "x"), "--imgsz", "big")
    assert code == 2 and "--imgsz" in stderr
    # inputs that used to train without a word: output inside the data tree, one class, an empty class
    data = make_tree(tmp_path / "tree", 2)
    sets = [arg for setting in FAST for arg in ("--set", setting)]
    code, _, stderr = run("train-classifier", "-d", str(data), "-o", str(data / "exp"), *sets)
    assert code == 2 and "inside the input" in stderr and stderr.count("\n") == 1
    assert sorted(p.name for p in data.iterdir()) == sorted(CLASSES)
    one = tmp_path / "one"
    (one / "dots").mkdir(parents=True)
    for path in (data / "dots").iterdir():
        (one / "dots" / path.name).write_bytes(path.read_bytes())
    code, _, stderr = run("train-classifier", "-d", str(one), "-o", str(tmp_path / "x1"), *sets)
    assert code == 1 and "single class" in stderr
    (one / "empty").mkdir()
    code, _, stderr = run("train-classifier", "-d", str(one), "-o", str(tmp_path / "x2"), *sets)
    assert code == 1 and "empty" in stderr and "hold no images" in stderr


def test_onnx_export_is_evaluated_like_its_checkpoint(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    export = pytest.importorskip("distillkit.classify.export")
    _, test, exp = trained
    export.export_classifier_onnx(export.load_classifier_source(exp / "best.pt"), tmp_path / "m.onnx", dynamic=True)
    code, stdout, stderr = run(
        "evaluate", "-d", str(test), "-m", str(exp / "best.pt"), "-m", str(tmp_path / "m.onnx"), "--json"
    )
    assert code == 0, stderr
    torch_model, onnx_model = json.loads(stdout)["models"]
    assert (torch_model["kind"], onnx_model["kind"]) == ("torch", "onnx")
    assert onnx_model["accuracy"] == pytest.approx(torch_model["accuracy"])
    assert onnx_model["ece"] == pytest.approx(torch_model["ece"], abs=1e-4)
