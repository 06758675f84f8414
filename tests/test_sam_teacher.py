"""The SAM mask teacher on a tiny random-weight SAM and generated images: offline, CPU, seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distillkit.config import build_config
from distillkit.config.build import ExperimentConfig
from distillkit.data.synthetic import generate_inspection_dataset
from distillkit.errors import DataError, UsageError
from distillkit.io import atomic_write_json, read_json
from distillkit.teachers.sam import (
    SamEvaluationResult,
    SamTrainResult,
    cache_decision,
    evaluate_sam,
    load_sam_teacher,
    predict_masks,
    train_sam,
)
from distillkit.teachers.sam.data import SamImageRecord, decode_rles, load_split, mask_records, read_rgb
from distillkit.teachers.sam.dataset import AugmentedSamDataset, PreparedSamDataset, collate_sam
from distillkit.teachers.sam.embeddings import EmbeddingCache, encode_into, preprocess_images
from distillkit.teachers.sam.geometry import SamGeometry, tight_boxes
from distillkit.teachers.sam.model import build_lora_sam, load_adapters, load_base_sam, load_sam_processor, sam_core
from distillkit.teachers.sam.predict import decode_prompts
from distillkit.teachers.sam.train import SamTrainingLoss
from distillkit.training import Trainer
from distillkit.training.lora import save_adapter, save_merged
from tests.tiny_sam import IMAGE_SIZE, write_tiny_sam

SECTIONS = ["preprocessing", "augmentation", "training_dynamics", "checkpointing", "teacher_sam_lora"]
FAST = [
    "teacher_sam_lora.epochs=2",
    "teacher_sam_lora.batch_size=2",
    "teacher_sam_lora.lr=0.003",
    "training_dynamics.device=cpu",
    "training_dynamics.num_workers=0",
    "training_dynamics.warmup_epochs=0",
]
TRAIN_IMAGES, VAL_IMAGES = 4, 2


def sam_config(*extra: str) -> ExperimentConfig:
    return build_config(SECTIONS, overrides=[*FAST, *extra])


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sam(tmp_path_factory.mktemp("sam_weights"))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sam_data")
    train = generate_inspection_dataset(
        root / "train", num_images=TRAIN_IMAGES, seed=0, image_size=(96, 64), empty_fraction=0
    )
    val = generate_inspection_dataset(
        root / "val", num_images=VAL_IMAGES, seed=1, image_size=(96, 64), empty_fraction=0
    )
    return train, val


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, weights_dir: Path, datasets: tuple[Path, Path]) -> dict[str, Any]:
    """One 2-epoch run with merge=True, counting the images the image encoder sees."""
    from transformers.models.sam import modeling_sam

    encoded: list[int] = []
    original = modeling_sam.SamVisionEncoder.forward

    def counting(self: Any, pixel_values: torch.Tensor | None = None, **kwargs: Any) -> Any:
        assert pixel_values is not None
        encoded.append(int(pixel_values.shape[0]))
        return original(self, pixel_values, **kwargs)

    out = tmp_path_factory.mktemp("sam_exp") / "teachers"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modeling_sam.SamVisionEncoder, "forward", counting)
        result = train_sam(datasets[0], datasets[1], sam_config(), out, weights=str(weights_dir), merge=True)
    return {"result": result, "encoded_images": sum(encoded), "out": out}


def perturbed_lora_model(weights_dir: Path) -> Any:
    """A LoRA SAM whose adapters and IoU head moved away from their initial values (B starts at 0)."""
    config = sam_config()
    model, _ = build_lora_sam(weights_dir, config.teacher_sam_lora, config.preprocessing)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.eval()


def decoder_outputs(model: Any, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(2, 32, 8, 8, generator=generator)
    boxes = torch.tensor(
        [[[4.0, 6.0, 40.0, 30.0], [10.0, 10.0, 60.0, 50.0]], [[0.0, 0.0, 20.0, 20.0], [30, 5, 63, 40]]]
    )
    with torch.no_grad():
        out = model(image_embeddings=embeddings, input_boxes=boxes, multimask_output=True)
    return out.pred_masks, out.iou_scores


# ----------------------------------------------------------------------------------------------
# model, LoRA, preprocessing


def test_only_lora_and_iou_head_train(weights_dir: Path) -> None:
    config = sam_config()
    model, _ = build_lora_sam(weights_dir, config.teacher_sam_lora, config.preprocessing)
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable
    assert all("lora_" in name or "iou_prediction_head.modules_to_save" in name for name in trainable), trainable
    assert any("iou_prediction_head" in name for name in trainable)
    core = sam_core(model)
    assert not any(param.requires_grad for param in core.vision_encoder.parameters())
    assert not any(param.requires_grad for param in core.prompt_encoder.parameters())
    # 2 two-way layers x 3 attentions x 4 projections + the final attention's 4.
    wrapped = {name.rsplit(".lora_A", 1)[0] for name in trainable if ".lora_A." in name}
    assert len(wrapped) == 2 * 3 * 4 + 4
    assert all(name.rsplit(".", 1)[-1] in {"q_proj", "k_proj", "v_proj", "out_proj"} for name in wrapped)
    share = sum(p.numel() for p in model.parameters() if p.requires_grad) / sum(p.numel() for p in model.parameters())
    assert 0 < share < 0.25

    no_head = sam_config("teacher_sam_lora.train_iou_head=false")
    bare, _ = build_lora_sam(weights_dir, no_head.teacher_sam_lora, no_head.preprocessing)
    assert not any("iou_prediction_head" in name for name, p in bare.named_parameters() if p.requires_grad)
    # An encoder left unfrozen trains in full, as a copy peft saves inside the adapter file.
    open_prompt = sam_config("teacher_sam_lora.freeze_prompt_encoder=false")
    wider, _ = build_lora_sam(weights_dir, open_prompt.teacher_sam_lora, open_prompt.preprocessing)
    assert any("prompt_encoder.modules_to_save" in name for name, p in wider.named_parameters() if p.requires_grad)


def test_target_regex_matching_nothing_is_a_usage_error(weights_dir: Path) -> None:
    config = sam_config("teacher_sam_lora.lora.target_modules=.*no_such_layer")
    with pytest.raises(UsageError, match="target_modules matches no linear layer"):
        build_lora_sam(weights_dir, config.teacher_sam_lora, config.preprocessing)


def test_processor_from_weights_or_from_defaults(tmp_path: Path, weights_dir: Path) -> None:
    custom = sam_config("preprocessing.mean=[0.5,0.5,0.5]", "preprocessing.interpolation=bicubic").preprocessing
    model_config = load_base_sam(weights_dir).config
    # Stored with the weights: honoured as stored (ImageNet mean), the defaults do not apply.
    stored = load_sam_processor(weights_dir, model_config, custom)
    assert list(stored.image_processor.image_mean) == pytest.approx([0.485, 0.456, 0.406])
    # None stored: sizes from the model, mean and interpolation from defaults/preprocessing.yaml.
    bare = write_tiny_sam(tmp_path / "bare", save_processor=False)
    built = load_sam_processor(bare, model_config, custom)
    assert list(built.image_processor.image_mean) == pytest.approx([0.5, 0.5, 0.5])
    assert int(built.image_processor.resample) == 3
    geometry = SamGeometry.from_processor(built, model_config)
    assert geometry == SamGeometry(longest_edge=IMAGE_SIZE, pad=IMAGE_SIZE, low=32)


def test_geometry_matches_processor_and_round_trips(weights_dir: Path) -> None:
    config = sam_config()
    model_config = load_base_sam(weights_dir).config
    processor = load_sam_processor(weights_dir, model_config, config.preprocessing)
    geometry = SamGeometry.from_processor(processor, model_config)
    image = np.zeros((64, 96, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 5.0, 50.0, 40.0], [0.0, 0.0, 96.0, 64.0]], dtype=np.float32)
    expected = processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt")
    assert np.allclose(geometry.boxes_to_input(boxes, 64, 96), expected["input_boxes"][0].numpy(), atol=1e-4)
    assert tuple(expected["reshaped_input_sizes"][0].tolist()) == geometry.resized_shape(64, 96)

    mask = np.zeros((1, 64, 96), dtype=np.uint8)
    mask[0, 12:50, 20:70] = 1
    low = geometry.masks_to_low(mask)
    assert low.shape == (1, 32, 32)
    back = geometry.low_to_image(low * 2.0 - 1.0, 64, 96) > 0  # a logit map that is > 0 on the target
    iou = (back[0].numpy() & mask[0].astype(bool)).sum() / (back[0].numpy() | mask[0].astype(bool)).sum()
    assert iou > 0.9
    assert tight_boxes(mask).tolist() == [[20.0, 12.0, 70.0, 50.0]]
    # An annotation without a box is prompted with its mask's tight box; one with a box keeps it.
    polygon = [[20.0, 12.0, 70.0, 12.0, 70.0, 50.0, 20.0, 50.0]]
    annotations = [{"segmentation": polygon}, {"segmentation": polygon, "bbox": [1, 2, 30, 40]}]
    record = SamImageRecord(1, "a.png", Path("a.png"), 96, 64, annotations)
    expected = tight_boxes(record.masks())
    assert record.prompt_boxes()[0].tolist() == expected[0].tolist()
    assert record.prompt_boxes()[1].tolist() == [1.0, 2.0, 31.0, 42.0]


# ----------------------------------------------------------------------------------------------
# weights


def test_missing_weights_name_the_flag(
    tmp_path: Path, datasets: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UsageError, match="--sam-weights"):
        train_sam(datasets[0], datasets[1], sam_config(), tmp_path / "t", weights=str(tmp_path / "missing"))
    # The default hub id, offline with an empty cache: one line naming the flag, no download attempt.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(UsageError, match=r"offline.*--sam-weights") as caught:
        train_sam(datasets[0], datasets[1], sam_config(), tmp_path / "t")
    assert "\n" not in str(caught.value)


def test_box_only_data_is_not_sam_data(tmp_path: Path, datasets: tuple[Path, Path], weights_dir: Path) -> None:
    coco = read_json(datasets[0])
    for ann in coco["annotations"]:
        ann.pop("segmentation")
    boxes_only = tmp_path / "boxes.json"
    atomic_write_json(boxes_only, coco)
    with pytest.raises(DataError, match="no mask annotations"):
        train_sam(
            boxes_only,
            datasets[1],
            sam_config(),
            tmp_path / "t",
            weights=str(weights_dir),
            images_dir=datasets[0].parent,
        )


# ----------------------------------------------------------------------------------------------
# loss, data, embedding cache


def test_loss_falls_on_a_small_set(weights_dir: Path, datasets: tuple[Path, Path]) -> None:
    config = sam_config("teacher_sam_lora.box_prompt_jitter=0.0", "teacher_sam_lora.lora.dropout=0.0")
    sam = config.teacher_sam_lora
    torch.manual_seed(0)
    model, processor = build_lora_sam(weights_dir, sam, config.preprocessing)
    geometry = SamGeometry.from_processor(processor, sam_core(model).config)
    data, roots = load_split(datasets[0])
    records = mask_records(data, roots)
    cache = EmbeddingCache()
    encode_into(
        cache,
        model,
        processor,
        [(k, r.path, r.width, r.height) for k, r in enumerate(records)],
        torch.device("cpu"),
        4,
        read_rgb,
    )
    batch = collate_sam([PreparedSamDataset.from_records(records, geometry)[i] for i in range(len(records))])
    loss_fn = SamTrainingLoss(sam, geometry, cache)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(16):
        terms = loss_fn(model, batch)
        assert set(terms) >= {"loss", "dice", "bce", "iou"}
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    assert np.mean(losses[-3:]) < 0.96 * losses[0], losses


def test_cache_rule() -> None:
    plain = sam_config()
    assert cache_decision(plain.teacher_sam_lora, plain.augmentation).train  # defaults plan no transform
    augmented = sam_config("augmentation.characteristics=[changes_shape]", "augmentation.intensity=high")
    decision = cache_decision(augmented.teacher_sam_lora, augmented.augmentation)
    assert not decision.train and decision.val and "recomputed" in decision.reason
    none = sam_config("augmentation.characteristics=[changes_shape]", "augmentation.intensity=none")
    assert cache_decision(none.teacher_sam_lora, none.augmentation).train
    off = sam_config("teacher_sam_lora.cache_image_embeddings=false")
    assert not cache_decision(off.teacher_sam_lora, off.augmentation).val
    trained_encoder = sam_config(
        "teacher_sam_lora.cache_image_embeddings=false", "teacher_sam_lora.freeze_image_encoder=false"
    )
    assert not cache_decision(trained_encoder.teacher_sam_lora, trained_encoder.augmentation).train


def test_augmented_samples_run_the_encoder(weights_dir: Path, datasets: tuple[Path, Path]) -> None:
    from distillkit.augmentation import pipeline_from_config

    config = sam_config("augmentation.characteristics=[changes_shape]", "augmentation.intensity=high")
    sam = config.teacher_sam_lora
    model, processor = build_lora_sam(weights_dir, sam, config.preprocessing)
    geometry = SamGeometry.from_processor(processor, sam_core(model).config)
    data, roots = load_split(datasets[0])
    dataset = AugmentedSamDataset(
        mask_records(data, roots), processor, geometry, pipeline_from_config(config.augmentation)
    )
    samples = [dataset[i] for i in range(len(dataset))]
    for sample in samples:
        assert sample["pixel_values"].shape == (3, IMAGE_SIZE, IMAGE_SIZE)
        assert sample["targets"].shape[1:] == (32, 32) and len(sample["targets"]) == len(sample["boxes"])
        assert bool((sample["boxes"] >= 0).all()) and bool((sample["boxes"] <= IMAGE_SIZE).all())
    terms = SamTrainingLoss(sam, geometry, cache=None)(model, collate_sam(samples))
    assert terms["loss"].requires_grad and torch.isfinite(terms["loss"])


def test_training_encodes_each_image_once(trained: dict[str, Any]) -> None:
    result: SamTrainResult = trained["result"]
    assert result.embeddings_cached
    assert result.epochs_run == 2
    # Two epochs of training and two validations, yet every image went through the encoder once.
    assert trained["encoded_images"] == TRAIN_IMAGES + VAL_IMAGES


# ----------------------------------------------------------------------------------------------
# training outputs, adapters, merge, resume


def test_training_writes_the_teacher(trained: dict[str, Any]) -> None:
    result: SamTrainResult = trained["result"]
    folder = result.adapter_dir
    assert folder == trained["out"] / "sam_lora"
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "processor_config.json",
        "sam_teacher.json",
        "metrics.csv",
    ):
        assert (folder / name).is_file(), name
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert (folder / "checkpoints" / "last.pt").is_file() and (folder / "checkpoints" / "best.pt").is_file()
    assert (folder / "merged" / "model.safetensors").is_file() and result.merged_dir == folder / "merged"
    description = json.loads((folder / "sam_teacher.json").read_text())
    assert description["class_names"] == ["scratch", "stain", "dent", "hole"]
    assert description["best_epoch"] == result.best_epoch
    rows = (folder / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and "val/mask_iou" in rows[0] and "train/dice" in rows[0]
    assert result.monitor == "val/mask_iou" and result.best_mask_iou is not None
    assert 0.0 <= result.best_mask_iou <= 1.0
    assert result.best_mask_iou == max(row["val/mask_iou"] for row in result.history)
    assert 0 < result.trainable_share < 0.25
    assert result.to_dict()["embeddings_cached"] is True


def test_adapters_reload_exactly_and_merge_agrees(tmp_path: Path, weights_dir: Path) -> None:
    model = perturbed_lora_model(weights_dir)
    reference = decoder_outputs(model)
    save_adapter(model, tmp_path / "adapters")
    save_merged(model, tmp_path / "merged")
    reloaded = load_adapters(load_base_sam(weights_dir), tmp_path / "adapters").eval()
    # The saved adapter weights come back bit for bit; the forward pass is compared with a tolerance,
    # since multi-threaded kernels may sum in another order from one call to the next (seen: 3e-7).
    saved = {name: p for name, p in model.named_parameters() if "lora_" in name}
    loaded = {name: p for name, p in reloaded.named_parameters() if "lora_" in name}
    assert saved and saved.keys() == loaded.keys()
    assert all(torch.equal(loaded[name], saved[name]) for name in saved)
    for got, want in zip(decoder_outputs(reloaded), reference, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    merged = load_base_sam(tmp_path / "merged").eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    for got, want in zip(decoder_outputs(merged), reference, strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    # The untouched base model gives different outputs: the comparison above could fail.
    base_masks, _ = decoder_outputs(load_base_sam(weights_dir).eval())
    assert not torch.allclose(base_masks, reference[0], atol=1e-3)


def test_trained_teacher_merged_and_unmerged_agree(trained: dict[str, Any], datasets: tuple[Path, Path]) -> None:
    folder = trained["result"].adapter_dir
    merged = load_sam_teacher(folder, "cpu")
    adapters = load_sam_teacher(folder, "cpu", prefer_merged=False)
    assert merged.merged and not adapters.merged
    image = read_rgb(datasets[1].parent / "images" / "0000.png")
    boxes = torch.tensor([[4.0, 4.0, 40.0, 30.0], [20.0, 10.0, 60.0, 40.0]])
    results = []
    for loaded in (merged, adapters):
        embedding = sam_core(loaded.model).get_image_embeddings(preprocess_images(loaded.processor, [image]))
        results.append(decode_prompts(loaded.model, embedding, boxes, multimask_output=False))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)


def test_resume_equals_an_uninterrupted_run(
    tmp_path: Path,
    trained: dict[str, Any],
    weights_dir: Path,
    datasets: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "teachers"
    original = Trainer._save_epoch

    def stop_after_first_epoch(self: Trainer, epoch: int, *args: Any) -> None:
        original(self, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_epoch", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_sam(datasets[0], datasets[1], sam_config(), out, weights=str(weights_dir))
    monkeypatch.undo()
    resumed = train_sam(datasets[0], datasets[1], sam_config(), out, weights=str(weights_dir), resume=True)

    uninterrupted: SamTrainResult = trained["result"]
    assert resumed.epochs_run == 2
    strip = lambda rows: [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]  # noqa: E731
    assert strip(resumed.history) == strip(uninterrupted.history)
    got = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    want = load_file(uninterrupted.adapter_dir / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    assert all(torch.equal(got[key], want[key]) for key in want)


# ----------------------------------------------------------------------------------------------
# inference and evaluation


def test_predict_masks_returns_rle_of_the_image_size(trained: dict[str, Any], datasets: tuple[Path, Path]) -> None:
    loaded = load_sam_teacher(trained["result"].adapter_dir, "cpu")
    assert loaded.class_names == ["scratch", "stain", "dent", "hole"] and len(loaded.identity) == 16
    image = read_rgb(datasets[1].parent / "images" / "0001.png")
    boxes = np.array([[2.0, 3.0, 50.0, 40.0], [30.0, 10.0, 95.0, 63.0], [0.0, 0.0, 96.0, 64.0]], dtype=np.float32)
    rles, scores = predict_masks(loaded, image, boxes)
    assert len(rles) == 3 and scores.shape == (3,) and scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    for rle in rles:
        assert rle["size"] == [64, 96] and isinstance(rle["counts"], str)
        decoded = decode_rles([{"size": rle["size"], "counts": rle["counts"].encode()}])
        assert decoded.shape == (64, 96, 1)
    json.dumps(rles)  # JSON-ready as the labelling cache stores it
    empty_rles, empty_scores = predict_masks(loaded, image, np.zeros((0, 4)))
    assert empty_rles == [] and empty_scores.shape == (0,)


def test_evaluate_sam_scores_ground_truth_prompts(trained: dict[str, Any], datasets: tuple[Path, Path]) -> None:
    loaded = load_sam_teacher(trained["result"].adapter_dir, "cpu")
    result = evaluate_sam(loaded, datasets[1])
    assert isinstance(result, SamEvaluationResult)
    instances = len(read_json(datasets[1])["annotations"])
    assert result.prompted_instances == instances == result.num_detections
    assert set(result.metrics) == {"segm"}
    assert 0.0 <= result.prompted_mask_iou <= 1.0
    # The val IoU the training loop measured for the saved (best) weights is the same measurement.
    assert result.prompted_mask_iou == pytest.approx(trained["result"].best_mask_iou, abs=1e-3)
    assert result.to_dict()["sam"]["prompted_instances"] == instances


def test_teacher_folder_without_description_is_a_usage_error(tmp_path: Path, trained: dict[str, Any]) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / name).write_bytes((trained["result"].adapter_dir / name).read_bytes())
    with pytest.raises(UsageError, match=r"sam_teacher\.json"):
        load_sam_teacher(folder, "cpu")
