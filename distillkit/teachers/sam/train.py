"""``train_sam``: fine-tune SAM's mask decoder with LoRA on a dataset's masks.

Layout under ``output_dir`` (``EXP/teachers``)::

    sam_lora/adapter_config.json, adapter_model.safetensors   LoRA adapters + the trained IoU head
    sam_lora/processor_config.json                            the preprocessing used
    sam_lora/sam_teacher.json                                 base weights, classes, mask settings
    sam_lora/metrics.csv, sam_lora/tensorboard/               per-epoch metrics
    sam_lora/merged/                                          with merge=True: a plain SamModel
    sam_lora/checkpoints/last.pt, best.pt                     training state (resume), best by val mask IoU

The loop is ``distillkit.training.Trainer``; this module supplies the model, the data, the loss
and the validation metric.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distillkit.config.build import ExperimentConfig
from distillkit.config.schema import CheckpointingConfig, SamLoraConfig
from distillkit.data.validate import ValidationResult
from distillkit.io import atomic_write_json
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.teachers.results import TeacherTrainResult
from distillkit.teachers.sam.data import SamImageRecord, load_split, mask_records, read_rgb
from distillkit.teachers.sam.dataset import AugmentedSamDataset, PreparedSamDataset, collate_sam
from distillkit.teachers.sam.embeddings import (
    CacheDecision,
    EmbeddingCache,
    cache_decision,
    encode_into,
    image_embeddings,
    model_dtype,
)
from distillkit.teachers.sam.evaluate import ValidationScorer
from distillkit.teachers.sam.geometry import SamGeometry, jitter_boxes
from distillkit.teachers.sam.loss import sam_loss
from distillkit.teachers.sam.model import SAM_WEIGHTS_FLAG, build_lora_sam, sam_core
from distillkit.teachers.sam.predict import MERGED_DIR, TEACHER_FILE, TEACHER_FORMAT
from distillkit.teachers.weights import resolve_weights
from distillkit.training import FitResult, Trainer, barrier, is_main_process, resolve_device, unwrap_model
from distillkit.training.lora import count_parameters, save_adapter, save_merged
from distillkit.training.metrics_log import TENSORBOARD_DIR
from distillkit.training.rng import seed_everything
from distillkit.training.trainer import CHECKPOINT_DIR

SAM_DIR = "sam_lora"
MONITOR = "val/mask_iou"
#: Metrics this teacher reports; a ``checkpointing.monitor`` naming another (e.g. the student's
#: ``val/map50_95``, from a shared config) is not meant for it, and the mask IoU is used instead.
SAM_METRICS = frozenset({"val/mask_iou", "val/mask_iou50", "train/loss", "train/mask_iou"})
# Prompts per image in one training step; objects beyond it are sampled, a different subset each step.
MAX_PROMPTS_PER_IMAGE = 32


@dataclass
class SamTrainResult(TeacherTrainResult):
    """``TeacherTrainResult`` of the SAM teacher, plus how its image embeddings were handled."""

    embeddings_cached: bool = False
    cache_reason: str = ""
    train_images: int = 0
    val_images: int = 0

    @property
    def best_mask_iou(self) -> float | None:
        return self.best_value if self.monitor == MONITOR else None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(
            best_mask_iou=self.best_mask_iou,
            embeddings_cached=self.embeddings_cached,
            cache_reason=self.cache_reason,
            train_images=self.train_images,
            val_images=self.val_images,
        )
        return out


class SamTrainingLoss:
    """``compute_loss(model, batch)`` for the Trainer: embeddings (cached or computed), prompts, loss."""

    def __init__(
        self,
        config: SamLoraConfig,
        geometry: SamGeometry,
        cache: EmbeddingCache | None,
        max_prompts: int = MAX_PROMPTS_PER_IMAGE,
    ) -> None:
        self.config = config
        self.geometry = geometry
        self.cache = cache
        self.max_prompts = max_prompts

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inner = unwrap_model(model)
        boxes, targets, valid = self._limit_prompts(batch["boxes"], batch["targets"], batch["valid"])
        if "pixel_values" in batch:
            pixels = batch["pixel_values"].to(model_dtype(inner))
            embeddings = image_embeddings(inner, pixels, trainable=not self.config.freeze_image_encoder)
        else:
            assert self.cache is not None, "a batch without pixel_values needs the embedding cache"
            embeddings = self.cache.get(batch["keys"], boxes.device, model_dtype(inner))
        boxes = jitter_boxes(boxes, self.config.box_prompt_jitter, float(self.geometry.pad))
        out = model(image_embeddings=embeddings, input_boxes=boxes, multimask_output=self.config.multimask_output)
        return sam_loss(out.pred_masks, out.iou_scores, targets.float() / 255.0, valid, self.config)

    def _limit_prompts(
        self, boxes: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """At most ``max_prompts`` per image: a random subset of the real ones (padding sorts last)."""
        if boxes.shape[1] <= self.max_prompts:
            return boxes, targets, valid
        priority = torch.rand(valid.shape, device=valid.device) + valid.float()
        chosen = priority.topk(self.max_prompts, dim=1).indices
        low = targets.shape[-1]
        return (
            boxes.gather(1, chosen[..., None].expand(-1, -1, 4)),
            targets.gather(1, chosen[..., None, None].expand(-1, -1, low, low)),
            valid.gather(1, chosen),
        )


def _monitor_settings(checkpointing: CheckpointingConfig) -> CheckpointingConfig:
    if checkpointing.monitor in SAM_METRICS:
        return checkpointing
    return checkpointing.model_copy(update={"monitor": MONITOR, "mode": "max"})


def _encode_items(records: Sequence[SamImageRecord]) -> list[tuple[int, Path, int, int]]:
    return [(key, record.path, record.width, record.height) for key, record in enumerate(records)]


def _training_dataset(
    records: list[SamImageRecord],
    processor: Any,
    geometry: SamGeometry,
    config: ExperimentConfig,
    decision: CacheDecision,
) -> PreparedSamDataset | AugmentedSamDataset:
    if decision.train:
        return PreparedSamDataset.from_records(records, geometry)
    from distillkit.augmentation import pipeline_from_config

    pipeline = pipeline_from_config(config.augmentation)
    return AugmentedSamDataset(records, processor, geometry, None if pipeline.plan.is_empty else pipeline)


def _teacher_description(
    source: str, class_names: list[str], sam: SamLoraConfig, fit: FitResult, merged: bool
) -> dict[str, Any]:
    return {
        "format": TEACHER_FORMAT,
        "teacher": "sam",
        "base_weights": source,
        "class_names": class_names,
        "mask_threshold": sam.mask_threshold,
        "multimask_output": sam.multimask_output,
        "train_iou_head": sam.train_iou_head,
        "lora": sam.lora.model_dump(mode="json"),
        "monitor": fit.monitor,
        "best_value": fit.best_value,
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "weights_in_adapters": fit.final_weights,
        "merged": MERGED_DIR if merged else None,
    }


def train_sam(
    train: ValidationResult | str | os.PathLike[str],
    val: ValidationResult | str | os.PathLike[str],
    config: ExperimentConfig,
    output_dir: str | os.PathLike[str],
    *,
    weights: str | None = None,
    resume: bool | str | os.PathLike[str] = False,
    merge: bool = False,
    device: str | torch.device | None = None,
    progress: Progress = NULL_PROGRESS,
    images_dir: str | os.PathLike[str] | None = None,
    val_images_dir: str | os.PathLike[str] | None = None,
) -> SamTrainResult:
    """Fine-tune the SAM mask teacher on ``train``'s masks, pick the epoch with the best val mask IoU.

    ``weights`` (the ``--sam-weights`` value) overrides ``teacher_sam_lora.weights``: a local
    folder, a cached hub id, or a hub id downloaded when online. ``resume`` continues from
    ``sam_lora/checkpoints/last.pt`` (True) or a given checkpoint. ``merge`` also writes the adapters
    merged into a plain ``SamModel`` under ``sam_lora/merged``.
    """
    sam = config.teacher_sam_lora
    train_data, train_roots = load_split(train, images_dir)
    val_data, val_roots = load_split(val, val_images_dir if val_images_dir is not None else images_dir)
    train_records = mask_records(train_data, train_roots, name=str(train_data.report.source or "the training set"))
    val_records = mask_records(val_data, val_roots, name=str(val_data.report.source or "the validation set"))
    class_names = train_data.info.class_names

    source = weights or sam.weights
    folder = resolve_weights(source, flag=SAM_WEIGHTS_FLAG)
    target = resolve_device(device if device is not None else config.training_dynamics.device)
    # LoRA's A matrices are drawn at random: seeding first makes a run reproducible (and a resumed
    # run comparable with an uninterrupted one, which restores its state from the checkpoint anyway).
    seed_everything(config.training_dynamics.seed)
    model, processor = build_lora_sam(folder, sam, config.preprocessing, device=target)
    geometry = SamGeometry.from_processor(processor, sam_core(model).config)
    trainable, total = count_parameters(model)

    decision = cache_decision(sam, config.augmentation)
    train_cache = EmbeddingCache() if decision.train else None
    val_cache = EmbeddingCache() if decision.val else None
    if train_cache is not None:
        encode_into(
            train_cache,
            model,
            processor,
            _encode_items(train_records),
            target,
            sam.batch_size,
            read_rgb,
            progress,
            "SAM: encoding training images (once)",
        )
    if val_cache is not None:
        encode_into(
            val_cache,
            model,
            processor,
            _encode_items(val_records),
            target,
            sam.batch_size,
            read_rgb,
            progress,
            "SAM: encoding validation images (once)",
        )
    dataset = _training_dataset(train_records, processor, geometry, config, decision)
    scorer = ValidationScorer(val_records, processor, geometry, sam.mask_threshold, sam.multimask_output, val_cache)

    dynamics = config.training_dynamics.model_copy(
        update={
            "epochs": sam.epochs,
            "batch_size": sam.batch_size,
            "lr": sam.lr,
            "weight_decay": sam.weight_decay,
            # Cached samples are small in-memory tensors: worker processes would only copy them.
            "num_workers": 0 if decision.train else config.training_dynamics.num_workers,
        }
    )
    output = Path(output_dir)
    adapter_dir = output / SAM_DIR
    trainer = Trainer(
        model,
        SamTrainingLoss(sam, geometry, train_cache),
        dataset,
        collate_fn=collate_sam,
        evaluate=scorer,
        dynamics=dynamics,
        checkpointing=_monitor_settings(config.checkpointing),
        output_dir=adapter_dir,
        monitor=MONITOR,
        device=target,
        progress=progress,
        extra_state={"teacher": "sam", "class_names": list(class_names), "base_weights": str(source)},
    )
    fit = trainer.fit(resume=resume if resume else None)

    # The model now holds the best epoch's weights (the Trainer restores them): those are saved.
    description = _teacher_description(str(source), list(class_names), sam, fit, merge)

    def write_extras(folder: Path) -> None:
        processor.save_pretrained(str(folder))
        atomic_write_json(folder / TEACHER_FILE, description)

    merged_dir = adapter_dir / MERGED_DIR if merge else None
    if is_main_process():  # under torchrun every rank holds the same weights; one writes them
        save_adapter(model, adapter_dir, extras=[write_extras])
        if merge:
            save_merged(model, adapter_dir / MERGED_DIR, extras=[lambda folder: processor.save_pretrained(str(folder))])
        elif (adapter_dir / MERGED_DIR).exists():
            # A merged model from an earlier run no longer matches these adapters, and loading prefers it.
            shutil.rmtree(adapter_dir / MERGED_DIR)
    barrier()
    tensorboard = adapter_dir / TENSORBOARD_DIR
    return SamTrainResult(
        name="sam",
        adapter_dir=adapter_dir,
        trainable_params=trainable,
        total_params=total,
        **TeacherTrainResult.fit_fields(fit),
        tensorboard_dir=tensorboard if tensorboard.is_dir() else None,
        checkpoint_dir=adapter_dir / CHECKPOINT_DIR,
        merged_dir=merged_dir,
        weights=folder,
        embeddings_cached=decision.train,
        cache_reason=decision.reason,
        train_images=len(train_records),
        val_images=len(val_records),
    )
