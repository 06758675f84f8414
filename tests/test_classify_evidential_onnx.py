"""Evidential classifiers keep their uncertainty u = K / S through the ONNX export (`optimize --format onnx`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from distillkit.classify import ClassifierMeta, ClassifierSpec, build_classifier, save_classifier
from distillkit.classify.export import export_classifier_onnx
from distillkit.classify.infer import classify_images
from distillkit.classify.research.objectives import evidential_uncertainty
from distillkit.export import read_onnx_metadata
from distillkit.export.onnx_export import load_source_model
from distillkit.model_metadata import write_onnx_metadata
from tests.optimize_helpers import make_images

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CLASSES = ["ok", "scratch", "dent"]


def checkpoint(path: Path, name: str) -> Path:
    torch.manual_seed(0)
    model = build_classifier(ClassifierSpec(name, len(CLASSES))).model.eval()
    with torch.no_grad():  # spread the random head's logits so the images get clearly different u
        for parameter in model.backbone.get_classifier().parameters():
            parameter.mul_(8.0)
    meta = ClassifierMeta(model.spec, CLASSES, False, 32, [0.5] * 3, [0.25] * 3, temperature=2.0)
    return save_classifier(path, model, meta)


def export(pt: Path, target: Path, dynamic: bool) -> Path:
    export_classifier_onnx(load_source_model(pt), target, dynamic=dynamic)
    return target


@pytest.fixture(scope="module")
def evidential(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    root = tmp_path_factory.mktemp("evidential")
    pt = checkpoint(root / "best.pt", "research:backbone=test_resnet,evidential=1")
    # static batch 1: infer's batches of 5 also exercise the runtime's one-image-at-a-time path
    onnx_file = export(pt, root / "model.onnx", dynamic=False)
    return pt, onnx_file, make_images(root / "images", count=5, size=(64, 48))


def test_evidential_export_has_alpha_and_flag(evidential: tuple[Path, Path, list[Path]]) -> None:
    _, onnx_file, _ = evidential
    graph = onnx.load(str(onnx_file)).graph
    assert [o.name for o in graph.output] == ["logits", "alpha"]
    stored = read_onnx_metadata(onnx_file)
    assert stored is not None and stored.extra["evidential"] is True and stored.outputs == ["logits", "alpha"]
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    logits, alpha = session.run(None, {"images": np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype("f")})
    # alpha = softplus(logits) + 1: an ONNX consumer gets u = K / sum(alpha) without distillkit
    expected = evidential_uncertainty(torch.from_numpy(logits)).numpy()
    assert np.allclose(len(CLASSES) / alpha.sum(axis=1), expected, atol=1e-6)


def test_onnx_infer_matches_checkpoint_probabilities_and_uncertainty(
    evidential: tuple[Path, Path, list[Path]],
) -> None:
    pt, onnx_file, images = evidential
    torch_result = classify_images([pt], images, batch_size=5)
    onnx_result = classify_images([onnx_file], images, batch_size=5)
    assert not onnx_result.notices
    u_torch = np.array([r["uncertainty"] for r in torch_result.records])
    u_onnx = np.array([r["uncertainty"] for r in onnx_result.records])
    assert np.ptp(u_torch) > 1e-3  # the images differ, so a constant u would be caught
    assert np.allclose(u_onnx, u_torch, atol=2e-6)  # records round to 6 decimals
    for a, b in zip(torch_result.records, onnx_result.records, strict=True):
        assert a["classes"] == b["classes"]
        assert all(abs(a["probabilities"][c] - b["probabilities"][c]) <= 1e-4 for c in CLASSES)


def test_old_evidential_export_loads_without_uncertainty_and_says_so(
    evidential: tuple[Path, Path, list[Path]], tmp_path: Path
) -> None:
    pt, onnx_file, images = evidential
    model = onnx.load(str(onnx_file))
    stored = read_onnx_metadata(onnx_file)
    assert stored is not None
    del stored.extra["evidential"]  # what exports written before the flag carry
    write_onnx_metadata(model, stored)
    old = tmp_path / "old.onnx"
    old.write_bytes(model.SerializeToString())
    result = classify_images([old], images[:2], batch_size=2)
    assert all("uncertainty" not in record for record in result.records)
    assert len(result.notices) == 1 and "re-export" in result.notices[0] and str(pt) in result.notices[0]
    assert result.summary()["notices"] == result.notices


def test_plain_classifier_export_is_unchanged(tmp_path: Path) -> None:
    pt = checkpoint(tmp_path / "best.pt", "test_resnet")
    onnx_file = export(pt, tmp_path / "model.onnx", dynamic=True)
    assert [o.name for o in onnx.load(str(onnx_file)).graph.output] == ["logits"]
    stored = read_onnx_metadata(onnx_file)
    assert stored is not None and stored.extra["evidential"] is False and stored.outputs == ["logits"]
    images = make_images(tmp_path / "images", count=2, size=(48, 48))
    result = classify_images([onnx_file], images)
    assert all("uncertainty" not in record for record in result.records)
    assert not result.notices and "notices" not in json.loads(json.dumps(result.summary()))


def test_evaluate_reports_the_same_uncertainty_for_the_export(
    evidential: tuple[Path, Path, list[Path]], tmp_path: Path
) -> None:
    from distillkit.classify.evaluate import evaluate_classifiers

    pt, onnx_file, _ = evidential
    for index, name in enumerate(CLASSES):  # class-per-folder data, the names the checkpoint knows
        make_images(tmp_path / "data" / name, count=2, size=(48, 48), seed=index)
    torch_report = evaluate_classifiers([pt], tmp_path / "data").to_dict()["uncertainty"]
    onnx_report = evaluate_classifiers([onnx_file], tmp_path / "data").to_dict()["uncertainty"]
    assert onnx_report["mean_u"] == pytest.approx(torch_report["mean_u"], abs=1e-6)
    assert [b["count"] for b in onnx_report["bins"]] == [b["count"] for b in torch_report["bins"]]
