"""Fine-tuning Grounding DINO with LoRA on a COCO box dataset, through the shared training loop.

Everything of the run lands in one folder, ``<teachers_dir>/grounding_dino_lora/``: the adapter
(``adapter_config.json`` + ``adapter_model.safetensors``), the processor it was trained with, a
``distillkit_teacher.json`` (classes, prompt, thresholds, base weights), ``metrics.csv`` and
``tensorboard/`` (one row / event per epoch), ``checkpoints/{last,best}.pt`` (full training state
for ``--resume``) and, with ``merge``, ``merged/`` (a plain transformers model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distillkit.config.build import ExperimentConfig
from distillkit.data.validate import ValidationResult, load_valid_dataset
from distillkit.errors import UsageError
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.teachers.grounding_dino.data import (
    Augment,
    GroundingDinoCollator,
    GroundingDinoDataset,
    detection_samples,
    locate_images,
)
from distillkit.teachers.grounding_dino.evaluate import box_metrics, evaluate_boxes
from distillkit.teachers.grounding_dino.loss import GroundingDinoLoss
from distillkit.teachers.grounding_dino.model import (
    FOLDER_NAME,
    TEACHER_NAME,
    GroundingDinoBundle,
    load_base,
    wrap_with_lora,
    write_teacher_file,
)
from distillkit.teachers.grounding_dino.prompt import ClassPrompt, build_prompt, check_prompt_length
from distillkit.teachers.results import TeacherTrainResult
from distillkit.training.lora import count_parameters, save_adapter, save_merged

MONITOR = "val/map50"
# DETR-family detectors are trained with a max gradient norm of 0.1 (Deformable DETR, Grounding DINO);
# used unless training_dynamics.grad_clip_norm is set on the command line.
LORA_GRAD_CLIP = 0.1


@dataclass
class DinoData:
    """A validated split with its images located."""

    result: ValidationResult
    annotation_file: Path | None

    @property
    def dataset(self) -> dict[str, Any]:
        assert self.result.dataset is not None
        return self.result.dataset


def as_dino_data(source: ValidationResult | str | Path, progress: Progress = NULL_PROGRESS) -> DinoData:
    if isinstance(source, ValidationResult):
        origin = source.report.source
        return DinoData(source, Path(origin) if origin else None)
    return DinoData(load_valid_dataset(source, progress=progress), Path(source))


def _augmenter(config: ExperimentConfig, seed: int) -> Augment | None:
    if "augmentation" not in config or config.augmentation.intensity == "none":
        return None
    from distillkit.augmentation import pipeline_from_config

    return pipeline_from_config(config.augmentation, seed)


def teacher_dynamics(config: ExperimentConfig, epochs: int, batch_size: int, lr: float, weight_decay: float) -> Any:
    """training_dynamics with the teacher section's own epochs / batch / lr / weight decay."""
    update: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay}
    if not any(text.startswith("training_dynamics.grad_clip_norm=") for text in config.overrides):
        update["grad_clip_norm"] = LORA_GRAD_CLIP
    return config.training_dynamics.model_copy(update=update)


def prompt_token_count(processor: Any, prompt: ClassPrompt) -> int:
    return len(processor.tokenizer(prompt.text)["input_ids"])


def prepare_model(config: ExperimentConfig) -> tuple[GroundingDinoBundle, ClassPrompt]:
    """Base model + LoRA, the prompt of every class, checked against the model's text budget."""
    section = config.teacher_grounding_dino_lora
    prompt = build_prompt(config.data.class_names, section.prompts)
    bundle = wrap_with_lora(load_base(section, config.preprocessing), section)
    budget = min(section.max_text_len, bundle.text_budget)
    check_prompt_length(prompt_token_count(bundle.processor, prompt), budget, len(prompt.class_names))
    return bundle, prompt


def make_compute_loss(loss: GroundingDinoLoss) -> Any:
    def compute_loss(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        inputs = {key: batch[key] for key in ("pixel_values", "pixel_mask", "input_ids", "attention_mask")}
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = batch["token_type_ids"]
        outputs = model(**inputs)
        return loss(outputs, batch["input_ids"], batch["attention_mask"], batch["labels"])

    return compute_loss


def teacher_record(config: ExperimentConfig, prompt: ClassPrompt, bundle: GroundingDinoBundle) -> dict[str, Any]:
    section = config.teacher_grounding_dino_lora
    return {
        "teacher": TEACHER_NAME,
        "weights": bundle.weights_source,
        "class_names": list(prompt.class_names),
        "class_mapping": {str(k): v for k, v in config.data.class_mapping.items()},
        "prompt": prompt.text,
        "phrases": list(prompt.phrases),
        "box_threshold": section.box_threshold,
        "text_threshold": section.text_threshold,
    }


def train_grounding_dino(
    train: ValidationResult | str | Path,
    val: ValidationResult | str | Path,
    config: ExperimentConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    merge: bool = False,
    device: str | torch.device | None = None,
    images_dir: Path | None = None,
    val_images_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> TeacherTrainResult:
    """Train the Grounding DINO LoRA teacher; ``output_dir`` is the experiment's ``teachers/`` folder."""
    from distillkit.training import Trainer, is_main_process, resolve_device

    section = config.teacher_grounding_dino_lora
    folder = Path(output_dir) / FOLDER_NAME
    train_data, val_data = as_dino_data(train, progress), as_dino_data(val, progress)
    mapping = config.data.class_mapping
    category_ids = [cid for cid, _ in sorted(mapping.items(), key=lambda item: item[1])]
    train_samples = detection_samples(
        train_data.dataset, mapping, locate_images(train_data.dataset, train_data.annotation_file, images_dir)
    )
    val_samples = detection_samples(
        val_data.dataset,
        mapping,
        locate_images(val_data.dataset, val_data.annotation_file, val_images_dir or images_dir),
    )
    if not any(sample.boxes for sample in train_samples):
        raise UsageError("the training set has no boxes for Grounding DINO", "check --data, or pass --only sam")

    dynamics = teacher_dynamics(config, section.epochs, section.batch_size, section.lr, section.weight_decay)
    torch.manual_seed(dynamics.seed)  # the LoRA initialisation: the same seed gives the same run
    bundle, prompt = prepare_model(config)
    trainable, total = count_parameters(bundle.model)
    run_device = resolve_device(device if device is not None else dynamics.device)
    eval_batch = max(1, section.batch_size)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        result = evaluate_boxes(
            model, bundle.processor, prompt.text, val_samples, val_data.result, category_ids, run_device, eval_batch
        )
        return box_metrics(result)

    monitor = MONITOR if config.checkpointing.monitor == "auto" else config.checkpointing.monitor
    trainer = Trainer(
        bundle.model,
        make_compute_loss(GroundingDinoLoss(section.loss)),
        GroundingDinoDataset(train_samples, _augmenter(config, dynamics.seed)),
        collate_fn=GroundingDinoCollator(bundle.processor, prompt.text),
        evaluate=evaluate,
        dynamics=dynamics,
        checkpointing=config.checkpointing,
        output_dir=folder,
        monitor=monitor,
        device=run_device,
        progress=progress,
        extra_state={"teacher": TEACHER_NAME, "prompt": prompt.text},
    )
    fit = trainer.fit(resume=resume)

    merged_dir = None
    if is_main_process():
        record = teacher_record(config, prompt, bundle)
        record.update(best_epoch=fit.best_epoch, best_value=fit.best_value, monitor=fit.monitor)
        save_adapter(
            bundle.model,
            folder,
            extras=[bundle.processor.save_pretrained, lambda staging: write_teacher_file(staging, record)],
        )
        if merge:
            merged_dir = save_merged(bundle.model, folder / "merged", extras=[bundle.processor.save_pretrained])
    return TeacherTrainResult(
        name=TEACHER_NAME,
        adapter_dir=folder,
        trainable_params=trainable,
        total_params=total,
        **TeacherTrainResult.fit_fields(fit),
        tensorboard_dir=folder / "tensorboard",
        checkpoint_dir=trainer.checkpoint_dir,
        merged_dir=merged_dir,
        weights=bundle.weights_dir,
        extra={"prompt": prompt.text},
    )
