"""Loading Grounding DINO (base weights, processor), wrapping it with LoRA, and reloading adapters."""

from __future__ import annotations

import json
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distillkit.config.schema import GroundingDinoLoraConfig, PreprocessingConfig
from distillkit.errors import DataError, UsageError
from distillkit.teachers.weights import load_processor, quiet_transformers, resolve_weights
from distillkit.training.lora import count_parameters, peft_lora_config

TEACHER_NAME = "grounding_dino"
#: The adapter's folder inside ``EXP/teachers``.
FOLDER_NAME = "grounding_dino_lora"
WEIGHTS_FLAG = "--dino-weights"
#: Written beside the adapter: what labelling needs to use it the way it was trained.
TEACHER_FILE = "distillkit_teacher.json"


@dataclass
class GroundingDinoBundle:
    """A Grounding DINO model (plain or LoRA-wrapped), its processor and where its base weights came from."""

    model: Any
    processor: Any
    weights_source: str  # what the user named (hub id or folder): recorded in the adapter for reloading
    weights_dir: str  # the resolved local folder

    @property
    def text_budget(self) -> int:
        return int(self.base_config.max_text_len)

    @property
    def base_config(self) -> Any:
        model = self.model
        return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def _delegate_input_embeddings(model: Any) -> None:
    # peft asks the model for its input embeddings (to handle embedding layers); GroundingDinoModel does
    # not implement get_input_embeddings, so point it at the BERT text backbone's, which it has.
    inner = model.model

    def get_input_embeddings(self: Any) -> torch.nn.Module:
        return self.text_backbone.get_input_embeddings()

    inner.get_input_embeddings = types.MethodType(get_input_embeddings, inner)
    model.get_input_embeddings = types.MethodType(lambda self: self.model.get_input_embeddings(), model)


def processor_size(section: GroundingDinoLoraConfig) -> dict[str, int]:
    return {"shortest_edge": section.shortest_edge, "longest_edge": section.longest_edge}


def load_base_model(source: str) -> tuple[Any, str]:
    """The Grounding DINO weights named by ``source`` (local folder, cache, or download) and their folder."""
    from transformers import GroundingDinoForObjectDetection

    folder = resolve_weights(source, flag=WEIGHTS_FLAG)
    quiet_transformers()
    try:
        model = GroundingDinoForObjectDetection.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot load Grounding DINO weights from {folder} ({' '.join(str(exc).split())[:160]})",
            f"pass {WEIGHTS_FLAG} DIR holding a GroundingDinoForObjectDetection saved with save_pretrained",
        ) from exc
    return model, folder


def load_base(section: GroundingDinoLoraConfig, preprocessing: PreprocessingConfig) -> GroundingDinoBundle:
    """The base model and processor named by ``section.weights`` (local folder, cache, or download)."""
    from transformers import GroundingDinoProcessor

    model, folder = load_base_model(section.weights)
    processor = load_processor(GroundingDinoProcessor, folder, preprocessing, size=processor_size(section))
    _delegate_input_embeddings(model)
    return GroundingDinoBundle(model, processor, section.weights, folder)


def modules_to_save(section: GroundingDinoLoraConfig) -> list[str]:
    """Backbones the config unfreezes are trained in full and saved with the adapter."""
    names = []
    if not section.freeze_image_backbone:
        names.append("model.backbone")
    if not section.freeze_text_backbone:
        names.append("model.text_backbone")
    return names


def wrap_with_lora(bundle: GroundingDinoBundle, section: GroundingDinoLoraConfig) -> GroundingDinoBundle:
    """LoRA on the encoder/decoder attention projections; everything else frozen unless unfrozen by config."""
    from peft import get_peft_model

    try:
        with warnings.catch_warnings():
            # peft probes a deprecated transformers attribute (is_gradient_checkpointing): not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(bundle.model, peft_lora_config(section.lora, modules_to_save(section)))
    except ValueError as exc:
        raise UsageError(
            f"teacher_grounding_dino_lora.lora.target_modules matches no layer of this model ({exc})",
            "fix the regex with --set teacher_grounding_dino_lora.lora.target_modules=...",
        ) from exc
    peft_model.peft_config["default"].base_model_name_or_path = bundle.weights_source
    trainable, _ = count_parameters(peft_model)
    if trainable == 0:
        raise UsageError("no Grounding DINO parameter is trainable", "check teacher_grounding_dino_lora.lora")
    return GroundingDinoBundle(peft_model, bundle.processor, bundle.weights_source, bundle.weights_dir)


def write_teacher_file(folder: Path, record: dict[str, Any]) -> None:
    (folder / TEACHER_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_teacher_file(adapter_dir: Path) -> dict[str, Any]:
    path = Path(adapter_dir) / TEACHER_FILE
    if not path.is_file():
        raise UsageError(f"{adapter_dir} is not a Grounding DINO adapter written by distillkit (no {TEACHER_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is unreadable ({exc})", "re-run train-teacher") from exc


def load_adapter(adapter_dir: Path, weights: str | None = None) -> GroundingDinoBundle:
    """Base weights + the trained adapter, ready for inference (eval mode, no gradients).

    ``weights`` overrides the base weights recorded in the adapter (e.g. the folder the base model
    was copied to on another machine); the processor saved with the adapter is used as trained.
    """
    from peft import PeftModel
    from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor

    adapter_dir = Path(adapter_dir)
    record = read_teacher_file(adapter_dir)
    source = weights or record["weights"]
    folder = resolve_weights(source, flag=WEIGHTS_FLAG)
    quiet_transformers()
    base = GroundingDinoForObjectDetection.from_pretrained(folder, local_files_only=True)
    _delegate_input_embeddings(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft probes a deprecated transformers attribute
        model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    model.eval()
    processor = GroundingDinoProcessor.from_pretrained(str(adapter_dir), local_files_only=True)
    return GroundingDinoBundle(model, processor, source, folder)
