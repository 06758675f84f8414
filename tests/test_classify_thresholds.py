"""Per-class thresholds of multi-label classifiers: tuned in training, applied by infer/evaluate, kept in ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distillkit.classify import ClassifierMeta, ClassifierSpec, build_classifier, load_classifier, save_classifier
from distillkit.classify.metrics import best_f1_thresholds
from distillkit.classify.predict import predict_paths
from distillkit.classify.runtime import open_classifier
from distillkit.classify.thresholds import tune_thresholds
from distillkit.classify.train import train_classifier
from distillkit.errors import UsageError
from tests.test_classify_train import CLASSES, FAST, make_tree
from tests.test_cli import run

pytestmark = pytest.mark.usefixtures("torch_one_thread")

NAMES = ["a", "b", "c"]
# A head with zero weights and these biases gives every image the probabilities sigmoid(BIAS) = 0.27, 0.73, 0.5:
# at 0.5 the classes are {b, c}; at the tuned cuts below {a, c}; at --threshold 0.3 {b, c}.
BIAS = [-1.0, 1.0, 0.0]
TUNED = [0.2, 0.8, 0.5]


def _constant_classifier(path: Path, thresholds: list[float] | None, threshold: float = 0.5) -> Path:
    model = build_classifier(ClassifierSpec("test_resnet", 3)).model.eval()
    head = model.backbone.get_classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor(BIAS))
    meta = ClassifierMeta(
        model.spec, NAMES, True, 32, [0.5] * 3, [0.25] * 3, threshold=threshold, thresholds=thresholds
    )
    return save_classifier(path, model, meta)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder of 4 images, one-hot CSV labelling each of them {a, c})."""
    base = tmp_path_factory.mktemp("thr")
    folder = base / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["file,a,b,c"]
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        rows.append(f"{folder / f'img{i}.png'},1,0,1")
    (base / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder, base / "labels.csv"


def test_tune_thresholds_beats_the_default_and_keeps_it_without_positives() -> None:
    probs = np.array([[0.30, 0.9, 0.1], [0.35, 0.7, 0.2], [0.10, 0.6, 0.3], [0.05, 0.2, 0.4]])
    truth = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]])
    tuning = tune_thresholds(probs, truth, NAMES, default=0.5)
    assert tuning.thresholds == pytest.approx([0.30, 0.9, 0.5])  # class a has no probability over 0.5
    assert tuning.best_f1 == pytest.approx([1.0, 1.0, 0.0])
    assert tuning.kept_default == ["c"] and tuning.to_dict(NAMES)["thresholds"]["a"] == pytest.approx(0.3)


def test_runtime_thresholds_for_pt_and_onnx(images: tuple[Path, Path], tmp_path: Path) -> None:
    export = pytest.importorskip("distillkit.classify.export")
    tuned = _constant_classifier(tmp_path / "tuned.pt", TUNED)
    plain = _constant_classifier(tmp_path / "plain.pt", None, threshold=0.3)
    runtime = open_classifier(tuned, "cpu")
    assert runtime.thresholds == TUNED and runtime.decision().source == "tuned"
    assert runtime.decision(0.3).values == [0.3] * 3 and runtime.decision(0.3).source == "override"
    assert open_classifier(plain, "cpu").decision().values == [0.3] * 3  # none tuned: the scalar repeated
    # ONNX: tuned thresholds travel in the metadata; an export without them falls back to the scalar
    export.export_classifier_onnx(export.load_classifier_source(tuned), tmp_path / "tuned.onnx")
    export.export_classifier_onnx(export.load_classifier_source(plain), tmp_path / "plain.onnx")
    onnx_tuned = open_classifier(tmp_path / "tuned.onnx", "cpu")
    assert onnx_tuned.kind == "onnx" and onnx_tuned.thresholds == pytest.approx(TUNED)
    onnx_plain = open_classifier(tmp_path / "plain.onnx", "cpu")
    assert onnx_plain.decision().source == "default" and onnx_plain.thresholds == pytest.approx([0.3] * 3)
    folder, _ = images
    code, stdout, stderr = run(
        "infer", "-m", str(tmp_path / "tuned.onnx"), str(folder), "-o", str(tmp_path / "o"), "--json"
    )
    assert code == 0, stderr
    assert {tuple(r["classes"]) for r in json.loads(stdout)["results"]} == {("a", "c")}
    # a stored list that does not fit the classes is a clear error, not a silent mis-decision
    broken = _constant_classifier(tmp_path / "broken.pt", [0.2, 0.8])
    with pytest.raises(UsageError, match="2 per-class thresholds for 3 classes"):
        open_classifier(broken, "cpu")


def test_infer_and_evaluate_apply_tuned_thresholds_and_threshold_overrides(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, labels = images
    tuned = _constant_classifier(tmp_path / "tuned.pt", TUNED)
    plain = _constant_classifier(tmp_path / "plain.pt", None)
    code, stdout, stderr = run("infer", "-m", str(tuned), str(folder), "-o", str(tmp_path / "o1"), "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    assert {tuple(r["classes"]) for r in document["results"]} == {("a", "c")}  # at 0.5 it would be (b, c)
    assert document["thresholds"] == {"source": "tuned", "per_class": dict(zip(NAMES, TUNED, strict=True))}
    written = json.loads((tmp_path / "o1" / "predictions.json").read_text())
    assert written[0]["classes"] == ["a", "c"]
    code, stdout, _ = run(
        "infer", "-m", str(tuned), str(folder), "-o", str(tmp_path / "o2"), "--threshold", "0.3", "--json"
    )
    assert code == 0
    document = json.loads(stdout)
    assert {tuple(r["classes"]) for r in document["results"]} == {("b", "c")}
    assert document["thresholds"]["source"] == "override"

    code, stdout, stderr = run("evaluate", "-d", str(labels), "-m", str(tuned), "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["accuracy"] == 1.0 and document["decision_thresholds"]["source"] == "tuned"
    assert document["thresholds"] == TUNED
    code, stdout, _ = run("evaluate", "-d", str(labels), "-m", str(tuned), "--threshold", "0.5", "--json")
    document = json.loads(stdout)
    assert code == 0 and document["accuracy"] == 0.0
    assert document["decision_thresholds"] == {"source": "override", "per_class": dict.fromkeys(NAMES, 0.5)}
    # ensemble: the first model's thresholds decide, as the scalar did
    code, stdout, _ = run("evaluate", "-d", str(labels), "-m", str(tuned), "-m", str(plain), "--json")
    assert code == 0 and json.loads(stdout)["decision_thresholds"]["source"] == "tuned"
    code, stdout, _ = run("evaluate", "-d", str(labels), "-m", str(plain), "-m", str(tuned), "--json")
    assert code == 0 and json.loads(stdout)["decision_thresholds"]["source"] == "default"
    # the human table names the source; --threshold on a detector input is refused in one line
    code, stdout, _ = run("evaluate", "-d", str(labels), "-m", str(tuned))
    assert code == 0 and "thr: tuned thresholds" in stdout
    (tmp_path / "detector.pt").write_bytes(b"not a classifier")
    code, _, stderr = run(
        "infer", "-m", str(tmp_path / "detector.pt"), str(folder), "-o", str(tmp_path / "o3"), "--threshold", "0.3"
    )
    assert code == 2 and "--conf" in stderr and stderr.count("\n") == 1


def _multi_label_csv(root: Path, name: str, per_class: int, seed: int, skip: str | None = None) -> Path:
    """One-hot CSV over a generated tree; horizontal images also carry 'vertical'; ``skip`` has no positive."""
    tree = make_tree(root / name, per_class, seed=seed)
    rows = ["file," + ",".join(CLASSES)]
    for path in sorted(tree.rglob("*.png")):
        kind = CLASSES.index(path.parent.name)
        flags = [kind == k or (kind == 1 and k == 2) for k in range(3)]
        flags = [flag and CLASSES[k] != skip for k, flag in enumerate(flags)]
        rows.append(f"{path}," + ",".join("1" if flag else "0" for flag in flags))
    target = root / f"{name}.csv"
    target.write_text("\n".join(rows) + "\n")
    return target


def test_training_tunes_stores_and_reports_thresholds(tmp_path: Path) -> None:
    train = _multi_label_csv(tmp_path, "train", 4, seed=0)
    val = _multi_label_csv(tmp_path, "val", 3, seed=1, skip="dots")  # no positive 'dots' in val
    settings = [*FAST, "training_dynamics.epochs=1", "classifier.tune_thresholds=true", "classifier.threshold=0.4"]
    result = train_classifier(train, tmp_path / "exp", val=val, overrides=settings)
    assert result.multi_label and result.thresholds is not None
    assert any("optimistic" in notice for notice in result.notices)
    stored = load_classifier(result.best).meta.thresholds
    assert stored is not None and stored[0] == 0.4  # 'dots' keeps classifier.threshold
    assert all(t != 0.5 for t in stored) and list(result.thresholds.values()) == stored
    # exactly the best-F1 cuts of the calibrated validation probabilities inference will see
    runtime = open_classifier(result.best, "cpu")
    from distillkit.classify.sources import load_classification_data

    val_data = load_classification_data(val).aligned_to(list(CLASSES))
    probs = predict_paths(runtime, val_data.paths).probabilities
    expected, _ = best_f1_thresholds(probs, val_data.targets, default=0.4)
    assert stored == pytest.approx(expected, abs=1e-5)
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert results["thresholds"] == result.thresholds
    tuning = results["metrics"]["threshold_tuning"]
    assert tuning["kept_default"] == ["dots"] and "macro_f1_at_default" in tuning
    assert results["metrics"]["thresholds"] == stored  # the reported val metrics use the tuned cuts


def test_tune_thresholds_on_single_label_data_is_a_notice(tmp_path: Path) -> None:
    data = make_tree(tmp_path / "tree", 3)
    settings = [*FAST, "training_dynamics.epochs=1", "classifier.tune_thresholds=true"]
    result = train_classifier(data, tmp_path / "exp", overrides=settings, val_fraction=0.34)
    assert not result.multi_label and result.thresholds is None
    assert any("tune_thresholds has no effect on single-label" in notice for notice in result.notices)
    assert load_classifier(result.best).meta.thresholds is None
