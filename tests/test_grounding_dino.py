"""Grounding DINO teacher: weights lookup, prompt, LoRA, loss, training, adapters, resume.

Everything runs on a 0.5 M-parameter random-weight Grounding DINO saved with save_pretrained into a
temporary folder (local BERT vocabulary keeping the model's hard-coded token ids), on 64 px images
of coloured squares: no downloads, a few seconds per training run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from distillkit.config import build_config
from distillkit.data.validate import load_valid_dataset
from distillkit.errors import UsageError
from tests.tiny_teachers import write_shapes_dataset, write_tiny_grounding_dino

SECTIONS = ["preprocessing", "augmentation", "training_dynamics", "checkpointing", "teacher_grounding_dino_lora"]


def tiny_overrides(weights: Path, **extra: Any) -> list[str]:
    values = {
        "teacher_grounding_dino_lora.weights": str(weights),
        "teacher_grounding_dino_lora.epochs": 2,
        "teacher_grounding_dino_lora.batch_size": 4,
        "teacher_grounding_dino_lora.lr": 0.01,
        "teacher_grounding_dino_lora.shortest_edge": 96,
        "teacher_grounding_dino_lora.longest_edge": 96,
        "training_dynamics.num_workers": 0,
        "training_dynamics.warmup_epochs": 0,
        "training_dynamics.ema.enabled": False,
        "training_dynamics.device": "cpu",
        "augmentation.intensity": "none",
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gdino")
    weights = write_tiny_grounding_dino(root / "weights")
    train = write_shapes_dataset(root / "data", 4, "boxes", seed=0, name="train.json")
    val = write_shapes_dataset(root / "data", 2, "boxes", seed=1, name="val.json")
    return {"root": root, "weights": weights, "train": train, "val": val}


def make_config(world: dict[str, Path], **extra: Any) -> Any:
    train = load_valid_dataset(world["train"])
    return build_config(
        SECTIONS,
        dataset_info=train.info,
        dataset_path=world["train"],
        overrides=tiny_overrides(world["weights"], **extra),
    )


@pytest.fixture(scope="module")
def trained(world: dict[str, Path]) -> Any:
    from distillkit.teachers.grounding_dino import train_grounding_dino

    config = make_config(world, **{"teacher_grounding_dino_lora.epochs": 2})
    out = world["root"] / "run" / "teachers"
    result = train_grounding_dino(world["train"], world["val"], config, out, merge=True)
    return result


# ------------------------------------------------------------------------------------------------
# weights


def test_local_folder_resolves_and_stored_preprocessing_is_honoured(world: dict[str, Path]) -> None:
    from transformers import GroundingDinoProcessor

    from distillkit.config import section_defaults
    from distillkit.teachers.weights import load_processor, resolve_weights

    folder = resolve_weights(world["weights"], flag="--dino-weights")
    assert folder == str(world["weights"])
    stored = json.loads((world["weights"] / "processor_config.json").read_text())["image_processor"]
    preprocessing = section_defaults("preprocessing").model_copy(update={"mean": [0.5, 0.5, 0.5]})
    processor = load_processor(GroundingDinoProcessor, folder, preprocessing)
    assert list(processor.image_processor.image_mean) == stored["image_mean"]  # stored wins over defaults


def test_defaults_apply_when_no_preprocessing_is_stored(tmp_path: Path) -> None:
    from transformers import GroundingDinoProcessor

    from distillkit.config import section_defaults
    from distillkit.teachers.weights import load_processor, resolve_weights

    folder = write_tiny_grounding_dino(tmp_path / "w", save_processor=False)
    assert not (folder / "processor_config.json").exists()
    preprocessing = section_defaults("preprocessing").model_copy(
        update={"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}
    )
    processor = load_processor(GroundingDinoProcessor, resolve_weights(folder, flag="--dino-weights"), preprocessing)
    assert list(processor.image_processor.image_mean) == pytest.approx([0.1, 0.2, 0.3])
    assert int(processor.image_processor.resample) == 3
    assert processor.tokenizer.convert_tokens_to_ids(".") == 1012


def test_offline_missing_weights_is_one_line_naming_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distillkit.teachers.weights import resolve_weights

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(UsageError) as err:
        resolve_weights("IDEA-Research/grounding-dino-tiny", flag="--dino-weights")
    message = str(err.value)
    assert "\n" not in message
    assert "IDEA-Research/grounding-dino-tiny" in message and "offline" in message
    assert "pass --dino-weights DIR" in message
    assert err.value.exit_code == 2


def test_hub_cache_under_hf_home_is_used_offline(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from distillkit.teachers.weights import resolve_weights

    snapshot = tmp_path / "hf" / "hub" / "models--acme--tiny-dino" / "snapshots" / "0123abcd"
    shutil.copytree(world["weights"], snapshot)
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert Path(resolve_weights("acme/tiny-dino", flag="--dino-weights")) == snapshot


def test_folder_without_weights_and_missing_path_are_usage_errors(tmp_path: Path) -> None:
    from distillkit.teachers.weights import resolve_weights

    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"does not hold SAM weights.*--sam-weights"):
        resolve_weights(tmp_path / "empty", flag="--sam-weights")
    with pytest.raises(UsageError, match=r"folder not found.*--dino-weights"):
        resolve_weights(str(tmp_path / "nope"), flag="--dino-weights")
    # swapped flags used to end in an internal tokenizer error from transformers
    sam = tmp_path / "sam"
    sam.mkdir()
    (sam / "config.json").write_text('{"model_type": "sam"}')
    (sam / "model.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match=r"holds 'sam' weights, not Grounding DINO.*--dino-weights"):
        resolve_weights(sam, flag="--dino-weights")
    assert resolve_weights(sam, flag="--sam-weights") == str(sam)


# ------------------------------------------------------------------------------------------------
# prompt, LoRA, loss


def test_prompt_holds_every_class_and_maps_phrases_back(world: dict[str, Path]) -> None:
    from transformers import GroundingDinoProcessor

    from distillkit.teachers.grounding_dino.prompt import build_prompt, phrase_token_maps

    prompt = build_prompt(["scratch", "dent", "ear_bag"], {"ear_bag": "ear of bag."})
    assert prompt.text == "scratch . dent . ear of bag ."
    tokenizer = GroundingDinoProcessor.from_pretrained(world["weights"]).tokenizer
    ids = tokenizer([prompt.text], return_tensors="pt")["input_ids"]
    maps = phrase_token_maps(ids, 32, 3)
    assert maps.shape == (1, 3, 32)
    assert maps[0].sum(-1).tolist() == [1.0, 1.0, 3.0]  # "ear of bag" spans three tokens


def test_lora_trains_only_adapters_on_attention(world: dict[str, Path]) -> None:
    from distillkit.teachers.grounding_dino.train import prepare_model
    from distillkit.training.lora import count_parameters

    bundle, _ = prepare_model(make_config(world))
    trainable, total = count_parameters(bundle.model)
    assert 0 < trainable / total < 0.1
    names = [name for name, p in bundle.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in name for name in names)
    assert any(".decoder.layers.1.encoder_attn_text.query.lora_A" in name for name in names)
    assert any(".encoder.layers.0.fusion_layer.attn.vision_proj.lora_A" in name for name in names)
    assert not any("backbone" in name for name in names)  # Swin and BERT stay frozen


def _batch(world: dict[str, Path], bundle: Any, prompt: Any) -> dict[str, Any]:
    from distillkit.teachers.grounding_dino.data import (
        GroundingDinoCollator,
        GroundingDinoDataset,
        detection_samples,
        locate_images,
    )

    train = load_valid_dataset(world["train"])
    samples = detection_samples(
        train.dataset, train.info.class_mapping, locate_images(train.dataset, world["train"], None)
    )
    dataset = GroundingDinoDataset(samples[:4])
    return GroundingDinoCollator(bundle.processor, prompt.text)([dataset[i] for i in range(4)])


def test_loss_uses_config_weights_and_falls_on_a_small_set(world: dict[str, Path]) -> None:
    from distillkit.config import section_defaults
    from distillkit.teachers.grounding_dino.loss import GroundingDinoLoss
    from distillkit.teachers.grounding_dino.train import make_compute_loss, prepare_model

    torch.manual_seed(0)
    bundle, prompt = prepare_model(make_config(world))
    batch = _batch(world, bundle, prompt)
    section = section_defaults("teacher_grounding_dino_lora").loss
    compute = make_compute_loss(GroundingDinoLoss(section))
    bundle.model.eval()  # no dropout: the same input gives the same terms
    with torch.no_grad():
        terms = compute(bundle.model, batch)
        no_class = make_compute_loss(GroundingDinoLoss(section.model_copy(update={"class_weight": 0.0})))(
            bundle.model, batch
        )
        other_gamma = make_compute_loss(GroundingDinoLoss(section.model_copy(update={"focal_gamma": 0.5})))(
            bundle.model, batch
        )
    weights = {"ce": section.class_weight, "bbox": section.bbox_weight, "giou": section.giou_weight}
    expected = sum(weights[name.removesuffix("_enc")] * float(value) for name, value in terms.items() if name != "loss")
    assert set(terms) >= {"ce", "bbox", "giou", "ce_enc"}
    assert float(terms["loss"]) == pytest.approx(expected, rel=1e-5)
    # class_weight 0: the classification term leaves the total (the matching changes too, so use its own terms)
    boxes_only = sum(
        weights[name.removesuffix("_enc")] * float(no_class[name]) for name in ("bbox", "giou", "bbox_enc", "giou_enc")
    )
    assert float(no_class["ce"]) > 0
    assert float(no_class["loss"]) == pytest.approx(boxes_only, rel=1e-5)
    assert float(other_gamma["ce"]) != pytest.approx(float(terms["ce"]), rel=1e-3)

    bundle.model.train()
    optimizer = torch.optim.AdamW([p for p in bundle.model.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(8):
        loss = compute(bundle.model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_training_items_are_augmented_when_the_config_asks(world: dict[str, Path]) -> None:
    from distillkit.teachers.grounding_dino.data import GroundingDinoDataset, detection_samples, locate_images
    from distillkit.teachers.grounding_dino.train import _augmenter

    assert _augmenter(make_config(world), 0) is None  # intensity none: no pipeline
    augmented_config = make_config(
        world,
        **{
            "augmentation.intensity": "high",
            "augmentation.environment.lighting": "poor",
            "augmentation.environment.camera": "shaky",
        },
    )
    augment = _augmenter(augmented_config, 0)
    assert augment is not None
    train = load_valid_dataset(world["train"])
    samples = detection_samples(
        train.dataset, train.info.class_mapping, locate_images(train.dataset, world["train"], None)
    )
    plain, augmented = GroundingDinoDataset(samples), GroundingDinoDataset(samples, augment)
    changed = False
    for index in range(len(samples)):
        item = augmented[index]
        boxes, labels = item["labels"]["boxes"], item["labels"]["class_labels"]
        assert boxes.shape == (len(labels), 4) and bool(((boxes >= 0) & (boxes <= 1)).all())
        changed |= not np.array_equal(item["image"], plain[index]["image"])
    assert changed


def test_prompt_too_long_for_the_model_is_a_usage_error(world: dict[str, Path]) -> None:
    from distillkit.teachers.grounding_dino.train import prepare_model

    with pytest.raises(UsageError, match=r"prompt for 3 classes is .* tokens but the model takes 4"):
        prepare_model(make_config(world, **{"teacher_grounding_dino_lora.max_text_len": 4}))


# ------------------------------------------------------------------------------------------------
# training, adapters, merge


def _finite_logits(output: Any) -> torch.Tensor:
    logits = output.logits
    return logits[torch.isfinite(logits)]


def test_training_writes_adapter_metrics_and_checkpoints(trained: Any) -> None:
    folder = trained.adapter_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "metrics.csv", "distillkit_teacher.json"):
        assert (folder / name).is_file(), name
    assert (folder / "checkpoints" / "last.pt").is_file()
    assert any((folder / "tensorboard").iterdir())
    assert (folder / "merged" / "model.safetensors").is_file()
    assert len(trained.history) == 2 and "val/map50" in trained.history[0]
    assert 0 < trained.trainable_share < 0.1
    record = json.loads((folder / "distillkit_teacher.json").read_text())
    assert record["prompt"] == "red . green . blue ." and record["class_names"] == ["red", "green", "blue"]
    header = (folder / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header and "val/map50" in header


def test_adapter_reloads_exactly_and_merged_equals_unmerged(world: dict[str, Path], trained: Any) -> None:
    from transformers import GroundingDinoForObjectDetection

    from distillkit.teachers.grounding_dino.model import load_adapter

    loaded = load_adapter(trained.adapter_dir)
    images = [np.full((64, 64, 3), 90, dtype=np.uint8), np.full((48, 64, 3), 200, dtype=np.uint8)]
    inputs = loaded.processor(images=images, text=["red . green . blue ."] * 2, return_tensors="pt")
    with torch.no_grad():
        adapter_out = loaded.model(**inputs)
        again = load_adapter(trained.adapter_dir).model(**inputs)
        merged = GroundingDinoForObjectDetection.from_pretrained(trained.adapter_dir / "merged").eval()(**inputs)
        base = GroundingDinoForObjectDetection.from_pretrained(world["weights"]).eval()(**inputs)
    assert torch.equal(_finite_logits(adapter_out), _finite_logits(again))
    assert torch.allclose(_finite_logits(adapter_out), _finite_logits(merged), atol=1e-4)
    assert torch.allclose(adapter_out.pred_boxes, merged.pred_boxes, atol=1e-4)
    assert not torch.allclose(_finite_logits(adapter_out), _finite_logits(base), atol=1e-4)  # training changed it


def test_predict_scores_every_class_in_one_pass(trained: Any) -> None:
    from distillkit.teachers.grounding_dino.model import load_adapter
    from distillkit.teachers.grounding_dino.predict import predict_boxes

    loaded = load_adapter(trained.adapter_dir)
    calls = []
    handle = loaded.model.get_base_model().register_forward_hook(lambda *args: calls.append(1))
    images = [np.full((64, 64, 3), 128, dtype=np.uint8)] * 3
    results = predict_boxes(
        loaded.model, loaded.processor, "red . green . blue .", 3, images, torch.device("cpu"), 0.0, 0.0, 10
    )
    handle.remove()
    assert len(calls) == 1  # one forward for three images and three classes
    assert [len(r.scores) for r in results] == [10, 10, 10]
    first = results[0]
    assert first.class_scores.shape == (10, 3)
    assert np.allclose(first.scores, first.class_scores.max(1))
    assert np.all(first.boxes[:, 2] >= first.boxes[:, 0]) and first.boxes.max() <= 64


def test_resume_equals_an_uninterrupted_run(world: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    from distillkit.teachers.grounding_dino import train_grounding_dino

    root = world["root"]
    straight = train_grounding_dino(
        world["train"], world["val"], make_config(world, **{"teacher_grounding_dino_lora.epochs": 2}), root / "a"
    )
    train_grounding_dino(
        world["train"], world["val"], make_config(world, **{"teacher_grounding_dino_lora.epochs": 1}), root / "b"
    )
    resumed = train_grounding_dino(
        world["train"],
        world["val"],
        make_config(world, **{"teacher_grounding_dino_lora.epochs": 2}),
        root / "b",
        resume=True,
    )
    assert resumed.epochs_run == 2
    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [row["train/loss"] for row in straight.history] == pytest.approx(
        [row["train/loss"] for row in resumed.history]
    )


def test_checkpoint_retention_and_early_stopping(world: dict[str, Path]) -> None:
    from distillkit.teachers.grounding_dino import train_grounding_dino

    config = make_config(
        world,
        **{
            "teacher_grounding_dino_lora.epochs": 5,
            "teacher_grounding_dino_lora.lr": 1e-7,  # nothing improves, so patience runs out
            "training_dynamics.early_stopping_patience": 2,
            "checkpointing.save_every_n_epochs": 1,
            "checkpointing.keep_last_n": 2,
        },
    )
    result = train_grounding_dino(world["train"], world["val"], config, world["root"] / "stop")
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    snapshots = sorted(p.name for p in (result.checkpoint_dir).glob("epoch_*.pt"))
    assert snapshots == ["epoch_2.pt", "epoch_3.pt"]
