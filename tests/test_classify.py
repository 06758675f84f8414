"""Classifier building blocks: data sources, CBAM, losses, KD, mixing, metrics, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score, hamming_loss, precision_recall_fscore_support, top_k_accuracy_score
from sklearn.utils.class_weight import compute_class_weight

from distillkit.classify import (
    ClassifierMeta,
    ClassifierSpec,
    build_classifier,
    is_classifier_checkpoint,
    load_classifier,
    save_classifier,
)
from distillkit.classify.cbam import CBAM, StageWithAttention
from distillkit.classify.distill import distillation_total, feature_loss, kd_logit_loss
from distillkit.classify.losses import BCELoss, CrossEntropyLoss, FocalLoss, build_loss, dynamic_alpha
from distillkit.classify.metrics import (
    best_f1_thresholds,
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
)
from distillkit.classify.mixing import BatchMixer
from distillkit.classify.sources import load_classification_data, split_classification_data
from distillkit.config import build_config
from distillkit.errors import ConfigError, DataError, UsageError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _image(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 12, 3), value, np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------------------------- sources


def test_folder_tree(tmp_path: Path) -> None:
    for name, count in (("ok", 3), ("scratch", 2)):
        for i in range(count):
            _image(tmp_path / "tree" / name / f"{name}{i}.png")
    (tmp_path / "tree" / "ok" / "notes.txt").write_text("not an image")
    data = load_classification_data(tmp_path / "tree")
    assert data.class_names == ["ok", "scratch"]
    assert len(data) == 5 and not data.multi_label
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    assert data.kind == "folder"


def test_csv_label_column_single_label(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / "images" / name)
    (tmp_path / "labels.csv").write_text("image,label\na.png,cat\nb.png,dog\nc.png,cat\n")
    data = load_classification_data(tmp_path / "labels.csv")
    assert data.class_names == ["cat", "dog"] and not data.multi_label
    assert data.labels.tolist() == [0, 1, 0]


def test_csv_several_labels_per_cell_is_multi_label(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        _image(tmp_path / name)
    (tmp_path / "labels.csv").write_text('path,labels\na.png,"rust scratch"\nb.png,dent\n')
    data = load_classification_data(tmp_path / "labels.csv")
    assert data.multi_label
    assert data.class_names == ["dent", "rust", "scratch"]
    assert data.targets.tolist() == [[0, 1, 1], [1, 0, 0]]


def test_csv_one_hot_columns(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / name)
    (tmp_path / "onehot.csv").write_text("filename,scratch,dent,rust\na.png,1,0,1\nb.png,0,0,0\nc.png,0,1,0\n")
    data = load_classification_data(tmp_path / "onehot.csv")
    assert data.kind == "csv_onehot" and data.multi_label
    assert data.class_names == ["scratch", "dent", "rust"]
    assert data.targets.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


def test_csv_one_hot_rejects_non_binary(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    (tmp_path / "bad.csv").write_text("file,scratch\na.png,2\n")
    with pytest.raises(DataError, match="scratch"):
        load_classification_data(tmp_path / "bad.csv")


def test_severstal_rows(tmp_path: Path) -> None:
    for name in ("0001.jpg", "0002.jpg", "0003.jpg"):
        _image(tmp_path / "train_images" / name)
    (tmp_path / "train.csv").write_text(
        "ImageId,ClassId,EncodedPixels\n0001.jpg,1,1 5\n0001.jpg,3,10 2\n0002.jpg,4,7 7\n0003.jpg,,\n"
    )
    data = load_classification_data(tmp_path / "train.csv")
    assert data.class_names == ["1", "3", "4"]
    assert data.multi_label  # several defects on 0001, none on 0003
    by_name = {p.name: row.tolist() for p, row in zip(data.paths, data.targets, strict=True)}
    assert by_name == {"0001.jpg": [1, 1, 0], "0002.jpg": [0, 0, 1], "0003.jpg": [0, 0, 0]}


def test_severstal_old_format(tmp_path: Path) -> None:
    for name in ("x.jpg", "y.jpg"):
        _image(tmp_path / name)
    (tmp_path / "train.csv").write_text("ImageId_ClassId,EncodedPixels\nx.jpg_1,1 3\nx.jpg_2,\ny.jpg_1,\ny.jpg_2,4 4\n")
    data = load_classification_data(tmp_path / "train.csv")
    assert data.class_names == ["1", "2"]
    assert {p.name: row.tolist() for p, row in zip(data.paths, data.targets, strict=True)} == {
        "x.jpg": [1, 0],
        "y.jpg": [0, 1],
    }


def test_csv_missing_image_names_it(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("image,label\nnope.png,a\n")
    with pytest.raises(DataError, match=r"nope\.png"):
        load_classification_data(tmp_path / "labels.csv")


def test_coco_image_level_labels(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / "images" / name)
    coco = {
        "images": [
            {"id": i, "file_name": n, "width": 12, "height": 8} for i, n in enumerate(["a.png", "b.png", "c.png"])
        ],
        "categories": [{"id": 7, "name": "dent"}, {"id": 3, "name": "scratch"}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 7, "bbox": [0, 0, 2, 2]},
            {"id": 2, "image_id": 0, "category_id": 7, "bbox": [3, 3, 2, 2]},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2]},
            {"id": 4, "image_id": 1, "category_id": 7, "bbox": [0, 0, 2, 2]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    data = load_classification_data(tmp_path / "ann.json")
    assert data.class_names == ["scratch", "dent"]  # COCO category id order
    assert data.targets.tolist() == [[0, 1], [1, 1], [0, 0]]
    assert data.multi_label


def test_stratified_split_is_seeded_and_balanced(tmp_path: Path) -> None:
    for name, count in (("a", 40), ("b", 8)):
        for i in range(count):
            _image(tmp_path / name / f"{i}.png")
    data = load_classification_data(tmp_path)
    train, val = split_classification_data(data, 0.25, seed=3)
    again, _ = split_classification_data(data, 0.25, seed=3)
    assert len(train) == 36 and len(val) == 12
    assert train.paths == again.paths
    assert val.class_counts().tolist() == [10, 2]  # the rare class keeps its share
    assert not set(train.paths) & set(val.paths)


def test_val_alignment_rejects_unknown_class(tmp_path: Path) -> None:
    _image(tmp_path / "v" / "weird" / "0.png")
    val = load_classification_data(tmp_path / "v")
    with pytest.raises(DataError, match="weird"):
        val.aligned_to(["a", "b"])


# ---------------------------------------------------------------------------------------------- models


def test_cbam_keeps_shape_and_gates() -> None:
    block = CBAM(32)
    x = torch.randn(2, 32, 7, 9)
    y = block(x)
    assert y.shape == x.shape
    assert not torch.allclose(x, y)
    # Both gates are sigmoids, so attention only scales features down.
    assert torch.all(y.abs() <= x.abs() + 1e-6)


@pytest.mark.parametrize(("name", "stages"), [("test_resnet", (3, 4)), ("test_efficientnet", (1, 2, 3, 4))])
def test_cbam_placement(name: str, stages: tuple[int, ...]) -> None:
    built = build_classifier(ClassifierSpec(name, 5, stages))
    model = built.model
    wrapped = {path for path, module in model.backbone.named_modules() if isinstance(module, StageWithAttention)}
    assert wrapped == {model.stage_modules[s] for s in stages}
    for stage in stages:
        block = model.backbone.get_submodule(model.stage_modules[stage])
        assert block.cbam.channels == next(
            e["num_chs"] for e in model.backbone.feature_info if e["module"] == model.stage_modules[stage]
        )
    logits, features = model.forward_with_features(torch.randn(2, 3, 32, 48))
    assert logits.shape == (2, 5) and features.shape == (2, model.num_features)


def test_cbam_on_a_vit_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="CBAM"):
        build_classifier(ClassifierSpec("test_vit", 3, (3,)))


def test_unknown_model_suggests() -> None:
    with pytest.raises(UsageError, match="did you mean"):
        build_classifier(ClassifierSpec("test_resnett", 3))


def test_pretrained_without_local_weights_is_a_notice_and_explicit_file_is_loaded(tmp_path: Path) -> None:
    built = build_classifier(ClassifierSpec("test_resnet", 3), pretrained=True)
    assert built.pretrained_from is None and "nothing is downloaded" in built.notices[0]
    with pytest.raises(UsageError, match="does not exist"):
        build_classifier(ClassifierSpec("test_resnet", 3), weights=str(tmp_path / "missing.pth"))
    import timm

    source = timm.create_model("test_resnet", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded = build_classifier(ClassifierSpec("test_resnet", 3, (4,)), weights=str(tmp_path / "w.pth"))
    assert loaded.pretrained_from == tmp_path / "w.pth"
    assert torch.equal(loaded.model.backbone.conv1[0].weight, source.conv1[0].weight)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = build_classifier(ClassifierSpec("test_resnet", 3, (4,))).model.eval()
    meta = ClassifierMeta(model.spec, ["a", "b", "c"], True, (32, 48), [0.5] * 3, [0.25] * 3, threshold=0.3)
    path = save_classifier(tmp_path / "best.pt", model, meta)
    assert is_classifier_checkpoint(path)
    torch.save({"model": {}}, tmp_path / "other.pt")
    assert not is_classifier_checkpoint(tmp_path / "other.pt")
    assert not is_classifier_checkpoint(tmp_path / "missing.pt")
    loaded = load_classifier(path)
    x = torch.randn(2, 3, 32, 48)
    assert torch.allclose(loaded.model(x), model(x), atol=1e-6)
    assert not loaded.model.training
    assert (loaded.class_names, loaded.multi_label, loaded.imgsz, loaded.threshold) == (
        ["a", "b", "c"],
        True,
        (32, 48),
        0.3,
    )
    assert loaded.mean == [0.5] * 3 and loaded.std == [0.25] * 3


# ---------------------------------------------------------------------------------------------- losses


def test_dynamic_alpha_single_label_is_sklearn_balanced() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 5)
    counts = np.bincount(labels)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert np.allclose(dynamic_alpha(counts, len(labels), multi_label=False), expected)


def test_dynamic_alpha_multi_label_favours_rare_positives() -> None:
    alpha = dynamic_alpha(np.array([90, 10, 0]), 100, multi_label=True)
    assert np.allclose(alpha, [0.1, 0.9, 0.99])


def test_focal_loss_reduces_to_cross_entropy_and_weights_classes() -> None:
    logits = torch.randn(6, 4)
    targets = torch.eye(4)[torch.tensor([0, 1, 2, 3, 1, 0])]
    plain = FocalLoss(gamma=0.0, alpha=None, multi_label=False)(logits, targets)
    assert torch.allclose(plain, CrossEntropyLoss(0.0)(logits, targets), atol=1e-6)
    focused = FocalLoss(gamma=2.0, alpha=None, multi_label=False)(logits, targets)
    assert focused < plain  # (1 - p)^gamma < 1 down-weights every term
    weights = torch.tensor([2.0, 1.0, 1.0, 1.0])
    weighted = FocalLoss(gamma=0.0, alpha=weights, multi_label=False)(logits, targets)
    per_image = torch.nn.functional.cross_entropy(logits, targets.argmax(1), reduction="none")
    assert torch.allclose(weighted, (per_image * weights[targets.argmax(1)]).mean(), atol=1e-6)


def test_focal_loss_multi_label_matches_torchvision() -> None:
    from torchvision.ops import sigmoid_focal_loss

    logits = torch.randn(5, 3)
    targets = (torch.rand(5, 3) > 0.5).float()
    ours = FocalLoss(gamma=2.0, alpha=0.25, multi_label=True)(logits, targets)
    reference = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="mean")
    assert torch.allclose(ours, reference, atol=1e-6)


def test_build_loss_from_config() -> None:
    config = build_config(["classifier"], overrides=["classifier.loss=focal"]).classifier
    loss = build_loss(config, multi_label=False, class_counts=np.array([30, 10]), num_samples=40)
    assert isinstance(loss, FocalLoss)
    assert torch.allclose(loss.alpha, torch.tensor([40 / 60, 40 / 20]))
    ce = build_config(["classifier"]).classifier
    with pytest.raises(ConfigError, match="multi-label"):
        build_loss(ce, multi_label=True, class_counts=np.array([1, 1]), num_samples=2)
    bce = build_config(["classifier"], overrides=["classifier.loss=bce"]).classifier
    assert isinstance(build_loss(bce, True, np.array([1, 1]), 2), BCELoss)


# ---------------------------------------------------------------------------------------------- KD, mixing


def test_kd_terms() -> None:
    student = torch.randn(4, 5, requires_grad=True)
    assert kd_logit_loss(student.detach(), student.detach(), 4.0, False).abs() < 1e-6
    teacher = torch.randn(4, 5)
    kd = kd_logit_loss(student, teacher, 2.0, False)
    p_t = torch.softmax(teacher / 2, 1)
    manual = (p_t * (p_t.log() - torch.log_softmax(student / 2, 1))).sum(1).mean() * 4
    assert torch.allclose(kd, manual, atol=1e-5)
    kd.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    multi = kd_logit_loss(teacher, teacher, 3.0, True)
    assert multi.abs() < 1e-6 and kd_logit_loss(student, teacher, 3.0, True) > 0
    projector = torch.nn.Linear(8, 6)
    s_feat, t_feat = torch.randn(4, 8), torch.randn(4, 6)
    assert torch.allclose(feature_loss(s_feat, t_feat, projector), ((projector(s_feat) - t_feat) ** 2).mean())
    hard, kd_v, feat = torch.tensor(1.0), torch.tensor(3.0), torch.tensor(2.0)
    assert float(distillation_total(hard, kd_v, feat, 0.25, 0.5)) == pytest.approx(0.75 * 1 + 0.25 * 3 + 0.5 * 2)
    assert float(distillation_total(hard, None, None, 0.25, 0.5)) == 1.0


def test_mixup_mixes_images_and_targets_in_the_same_proportion() -> None:
    torch.manual_seed(0)
    images = torch.stack([torch.full((3, 4, 4), float(i)) for i in range(4)])
    targets = torch.eye(4)
    mixed, mixed_targets = BatchMixer(mixup_alpha=0.4)(images, targets)
    assert torch.allclose(mixed_targets.sum(1), torch.ones(4))
    # Each mixed image's constant value is the target-weighted mean of the source values.
    assert torch.allclose(mixed[:, 0, 0, 0], mixed_targets @ torch.arange(4.0), atol=1e-5)
    assert BatchMixer()(images, targets)[0] is images  # disabled: untouched


def test_cutmix_area_matches_target_share() -> None:
    np.random.seed(0)  # timm's Mixup draws from numpy's global generator (this seed: a 30% box)
    images = torch.zeros(2, 1, 10, 10)
    images[1] = 1.0
    mixed, mixed_targets = BatchMixer(cutmix_alpha=1.0)(images, torch.eye(2))
    pasted = float(mixed[0].mean())
    kept = float(mixed_targets[0, 0])
    assert 0 < pasted < 1
    assert pasted == pytest.approx(1 - kept)


def test_one_mixer_switches_mixup_and_cutmix_and_keeps_an_odd_last_image() -> None:
    np.random.seed(0)
    images = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(5)])
    before = images.clone()
    targets = torch.eye(5)
    mixer = BatchMixer(mixup_alpha=1.0, cutmix_alpha=1.0)
    kinds = set()
    for _ in range(20):
        batch = mixer.mix(images, targets)
        # timm's batch mode pairs an even batch: the fifth image and its target stay its own
        assert torch.equal(batch.images[4], images[4]) and torch.equal(batch.soft_targets[4], targets[4])
        # each mixed image's mean value is the target-weighted mean of the source values (pixels or area)
        assert torch.allclose(batch.images.mean((1, 2, 3)), batch.soft_targets @ torch.arange(5.0), atol=1e-5)
        kinds.add("cutmix" if batch.images[0].unique().numel() == 2 else "mixup")
    assert kinds == {"mixup", "cutmix"}  # both on: each batch uses one of the two
    assert torch.equal(images, before)  # the batch itself is left untouched
    multi_hot = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mixed = BatchMixer.strategy("mixup", alpha=1.0).mix(torch.randn(2, 3, 4, 4), multi_hot)
    assert torch.allclose(mixed.soft_targets, mixed.lam * multi_hot + (1 - mixed.lam) * multi_hot.flip(0))


# ---------------------------------------------------------------------------------------------- metrics


def _synthetic(n: int = 200, c: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return logits, probs, y


def test_single_label_metrics_match_sklearn() -> None:
    _, probs, y = _synthetic()
    names = [f"c{i}" for i in range(5)]
    m = classification_metrics(probs, np.eye(5)[y], names, multi_label=False, topk=[1, 3, 9])
    pred = probs.argmax(1)
    assert m.accuracy == pytest.approx((pred == y).mean())
    assert m.top_k[3] == pytest.approx(top_k_accuracy_score(y, probs, k=3))
    assert 9 not in m.top_k  # more than the number of classes
    assert m.macro_f1 == pytest.approx(f1_score(y, pred, average="macro"))
    assert m.micro_f1 == pytest.approx(f1_score(y, pred, average="micro"))
    _, r, _, s = precision_recall_fscore_support(y, pred)
    assert [c.recall for c in m.per_class] == pytest.approx(r.tolist())
    assert [c.support for c in m.per_class] == s.tolist()
    assert m.confusion.sum() == 200 and np.trace(m.confusion) == (pred == y).sum()
    for key in ("accuracy", "top_k", "ece", "macro_f1", "micro_f1", "per_class"):
        assert key in m.to_dict()


def test_ece_against_hand_computation() -> None:
    confidence = np.array([0.95, 0.85, 0.55, 0.62, 0.15])
    correct = np.array([1, 0, 1, 0, 0])
    # 5 bins: (0.8,1.0] holds 0.95/0.85 -> |0.5 - 0.9|; (0.6,0.8] holds 0.62 -> |0 - 0.62|;
    # (0.4,0.6] holds 0.55 -> |1 - 0.55|; (0,0.2] holds 0.15 -> |0 - 0.15|.
    expected = (2 * 0.4 + 0.62 + 0.45 + 0.15) / 5
    assert expected_calibration_error(confidence, correct, n_bins=5) == pytest.approx(expected)


def test_multi_label_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    truth = (rng.random((100, 4)) < 0.3).astype(float)
    probs = np.clip(truth * 0.6 + rng.random((100, 4)) * 0.5, 0, 1)
    m = classification_metrics(probs, truth, list("abcd"), multi_label=True, thresholds=0.5)
    pred = (probs >= 0.5).astype(int)
    assert m.hamming_loss == pytest.approx(hamming_loss(truth, pred))
    assert m.subset_accuracy == pytest.approx((pred == truth).all(1).mean())
    assert m.macro_f1 == pytest.approx(f1_score(truth, pred, average="macro", zero_division=0))
    assert m.micro_f1 == pytest.approx(f1_score(truth, pred, average="micro", zero_division=0))
    thresholds, scores = best_f1_thresholds(probs, truth)
    for c in range(4):  # the chosen threshold gives the best F1 over every candidate threshold
        candidates = [f1_score(truth[:, c], probs[:, c] >= t, zero_division=0) for t in np.unique(probs[:, c])]
        assert scores[c] == pytest.approx(max(candidates))
        assert f1_score(truth[:, c], probs[:, c] >= thresholds[c]) == pytest.approx(scores[c])


def test_temperature_scaling_lowers_nll_of_overconfident_logits() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2000, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in probs])  # labels drawn from softmax(logits): T=1 is calibrated
    over = logits * 4.0
    temperature = fit_temperature(over, np.eye(5)[y], multi_label=False)
    assert 3.3 < temperature < 4.8
    nll = lambda z: float(torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(y)))  # noqa: E731
    assert nll(over / temperature) < nll(over)
    # Perfectly separated: no NLL optimum; the mean confidence is matched to (n + 1) / (n + 2) = 0.8.
    perfect = np.eye(3) * 5
    separated = fit_temperature(perfect, np.eye(3), multi_label=False)
    assert torch.softmax(torch.tensor(perfect) / separated, 1).max(1).values.mean() == pytest.approx(0.8, abs=1e-4)
