"""Building the SAM teacher: base weights + processor, frozen encoders, LoRA on the mask decoder.

``build_lora_sam`` loads ``SamModel`` from a local weights folder (``resolve_weights`` turns a hub id
into one), freezes what the config says, and wraps it with peft: LoRA on the attention projections
the config's ``target_modules`` regex selects, and the IoU head as a fully trained module that peft
saves inside the adapter file (``modules_to_save``), so ``adapter_model.safetensors`` is all a
reload needs on top of the base weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillkit.config.schema import PreprocessingConfig, SamLoraConfig
from distillkit.errors import UsageError
from distillkit.teachers.sam.geometry import SamGeometry
from distillkit.teachers.weights import load_processor, stored_preprocessing
from distillkit.training.lora import peft_lora_config

SAM_WEIGHTS_FLAG = "--sam-weights"
#: The IoU head, as peft's ``modules_to_save`` names it (a suffix of the module's qualified name).
IOU_HEAD = "mask_decoder.iou_prediction_head"


def sam_core(model: nn.Module) -> Any:
    """The ``SamModel`` inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def load_base_sam(folder: str | os.PathLike[str], device: torch.device | str = "cpu") -> Any:
    """``SamModel`` from a local folder written by ``save_pretrained`` (never the network)."""
    from transformers import SamModel

    try:
        model = SamModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise UsageError(
            f"cannot load SAM weights from {folder} ({reason})",
            f"pass {SAM_WEIGHTS_FLAG} DIR (a SamModel folder written by save_pretrained)",
        ) from exc
    return model.to(device)


def load_sam_processor(folder: str | os.PathLike[str], model_config: Any, preprocessing: PreprocessingConfig) -> Any:
    """The ``SamProcessor`` for ``folder``: the stored preprocessing, else ``preprocessing`` defaults.

    SAM's input side is fixed by the model (its position embeddings cover exactly
    ``vision_config.image_size`` pixels), so without stored preprocessing the sizes come from the
    model config and only mean, std and interpolation come from ``defaults/preprocessing.yaml``.
    """
    from transformers import SamProcessor

    if stored_preprocessing(folder) is not None:
        processor = load_processor(SamProcessor, folder, preprocessing)
    else:
        side = int(model_config.vision_config.image_size)
        low = 4 * int(model_config.prompt_encoder_config.image_embedding_size)
        processor = load_processor(
            SamProcessor,
            folder,
            preprocessing,
            size={"longest_edge": side},
            pad_size={"height": side, "width": side},
            mask_size={"longest_edge": low},
            mask_pad_size={"height": low, "width": low},
        )
    SamGeometry.from_processor(processor, model_config)  # raises when the stored sizes do not fit the model
    return processor


def _check_targets(model: nn.Module, config: SamLoraConfig) -> None:
    targets = config.lora.target_modules
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if isinstance(targets, str):
        matched = [name for name in names if re.fullmatch(targets, name)]
    else:
        matched = [name for name in names if any(name == t or name.endswith("." + t) for t in targets)]
    if not matched:
        raise UsageError(
            "teacher_sam_lora.lora.target_modules matches no linear layer of the SAM model",
            r"target e.g. '.*mask_decoder\.transformer\..*\.(q_proj|k_proj|v_proj|out_proj)'",
        )


def modules_trained_in_full(config: SamLoraConfig) -> list[str]:
    """Modules trained as a whole next to the adapters; peft saves them inside the adapter file."""
    names = [IOU_HEAD] if config.train_iou_head else []
    if not config.freeze_image_encoder:
        names.append("vision_encoder")
    if not config.freeze_prompt_encoder:
        names.append("prompt_encoder")
    return names


def apply_lora(model: nn.Module, config: SamLoraConfig) -> Any:
    """Wrap a ``SamModel`` with LoRA adapters (and the trained IoU head) as the config describes.

    peft freezes every base parameter; what the config trains in full (the IoU head, an encoder
    left unfrozen) becomes a trainable copy saved inside ``adapter_model.safetensors``, so the
    adapter folder alone (plus the base weights) rebuilds the trained teacher.
    """
    from peft import get_peft_model

    _check_targets(model, config)
    return get_peft_model(model, peft_lora_config(config.lora, modules_trained_in_full(config)))


def build_lora_sam(
    folder: str | os.PathLike[str],
    config: SamLoraConfig,
    preprocessing: PreprocessingConfig,
    device: torch.device | str = "cpu",
) -> tuple[Any, Any]:
    """(peft-wrapped SamModel, SamProcessor) for the weights in ``folder``."""
    base = load_base_sam(folder, device)
    processor = load_sam_processor(folder, base.config, preprocessing)
    return apply_lora(base, config), processor


def load_adapters(base: nn.Module, adapter_dir: str | os.PathLike[str]) -> Any:
    """The base model with saved adapters (and IoU head) loaded, ready for inference."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    except (OSError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise UsageError(
            f"cannot load the SAM adapters in {adapter_dir} ({reason})",
            "pass the sam_lora folder train-teacher wrote",
        ) from exc


def adapter_files_present(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
