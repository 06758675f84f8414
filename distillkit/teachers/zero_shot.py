"""Base Grounding DINO (+ SAM) weights used as a teacher with no adapters: zero-shot labelling.

The classes are named on the command line (``label --classes "scratch,dent"``). The Grounding DINO
prompt is built from them exactly as ``train-teacher`` builds it (``build_prompt``: one phrase per
class, all in one prompt, one forward pass per batch), and SAM, when its weights are given, turns
each box into a mask. Everything else is the experiment teacher's code path (``DistilledTeacher``):
only the identity differs, which hashes the base weights' content instead of adapter files, so the
content-keyed cache never mixes labels of two different weight sets.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillkit.config.build import section_defaults
from distillkit.config.schema import GroundingDinoLoraConfig, PreprocessingConfig, SamLoraConfig
from distillkit.errors import UsageError
from distillkit.io import sha256_file
from distillkit.teachers.grounding_dino.model import GroundingDinoBundle, load_base_model
from distillkit.teachers.grounding_dino.prompt import ClassPrompt, build_prompt, check_prompt_length
from distillkit.teachers.labeller import DistilledTeacher
from distillkit.teachers.weights import PREPROCESSOR_FILES, load_processor, quiet_transformers, resolve_weights

_FINGERPRINT_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    *PREPROCESSOR_FILES,
)


def weights_fingerprint(folder: str | os.PathLike[str]) -> str:
    """A content hash of a weights folder (config, weights, stored preprocessing).

    Files of a Hugging Face cache snapshot are links to ``blobs/<sha256>``: the blob name is their
    content hash already, so the gigabytes are read only for plain folders (and sharded weights are
    covered through their index plus every ``*.safetensors`` shard).
    """
    root = Path(folder)
    names = sorted({*_FINGERPRINT_FILES, *(p.name for p in root.glob("*.safetensors"))})
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        if not path.is_file():
            continue
        real = Path(os.path.realpath(path))
        content = real.name if real.parent.name == "blobs" else sha256_file(real)
        digest.update(f"{name}={content}\n".encode())
    return digest.hexdigest()


class ZeroShotTeacher(DistilledTeacher):
    """Base Grounding DINO (+ base SAM) prompted with class names; see the module docstring."""

    def __init__(self, *args: Any, dino_fingerprint: str, **kwargs: Any) -> None:
        self.dino_fingerprint = dino_fingerprint
        super().__init__(*args, **kwargs)

    def _compute_identity(self) -> str:
        digest = hashlib.sha256()
        parts = [
            "zero-shot",
            f"classes={self._class_names!r}",
            f"max_det={self.max_detections}",
            f"dino={self.dino_fingerprint}",
            f"prompt={self.dino_record.get('prompt')}",
            f"box_threshold={self.box_threshold}",
            f"text_threshold={self.text_threshold}",
            f"sam={self._sam.key if self._sam is not None else None}",
        ]
        for part in parts:
            digest.update(part.encode("utf-8") + b"\n")
        return digest.hexdigest()


def parse_class_names(text: str | Sequence[str]) -> list[str]:
    """``"scratch, dent"`` (or a list of such strings) as class names; empty or repeated names are errors."""
    items = [text] if isinstance(text, str) else list(text)
    names = [name.strip() for item in items for name in item.split(",")]
    names = [name for name in names if name]
    if not names:
        raise UsageError("--classes names no class", 'pass --classes "scratch,dent" (comma-separated)')
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"--classes names {repeated} more than once", "name each class once")
    return names


def _load_base_dino(source: str, preprocessing: PreprocessingConfig) -> GroundingDinoBundle:
    from transformers import GroundingDinoProcessor

    model, folder = load_base_model(source)
    # The preprocessing stored with the weights is the one the model was trained with: kept as is.
    processor = load_processor(GroundingDinoProcessor, folder, preprocessing)
    model.eval()
    return GroundingDinoBundle(model, processor, source, folder)


def _load_base_sam(source: str, device: Any, class_names: list[str], preprocessing: PreprocessingConfig) -> Any:
    from distillkit.teachers.sam.geometry import SamGeometry
    from distillkit.teachers.sam.model import SAM_WEIGHTS_FLAG, load_base_sam, load_sam_processor
    from distillkit.teachers.sam.predict import LoadedSam

    section = section_defaults("teacher_sam_lora")
    assert isinstance(section, SamLoraConfig)
    folder = resolve_weights(source, flag=SAM_WEIGHTS_FLAG)
    quiet_transformers()
    model = load_base_sam(folder, device)
    model.eval()
    processor = load_sam_processor(folder, model.config, preprocessing)
    settings = f"mask_threshold={section.mask_threshold};multimask={section.multimask_output}"
    identity = hashlib.sha256(f"base-sam;{weights_fingerprint(folder)};{settings}".encode()).hexdigest()[:16]
    return LoadedSam(
        model=model,
        processor=processor,
        geometry=SamGeometry.from_processor(processor, model.config),
        device=device,
        class_names=list(class_names),
        mask_threshold=float(section.mask_threshold),
        multimask_output=bool(section.multimask_output),
        adapter_dir=Path(folder),
        merged=False,
        identity=identity,
        metadata={"base_weights": source},
    )


def load_zero_shot_teacher(
    class_names: Sequence[str],
    *,
    dino_weights: str | None = None,
    sam_weights: str | None = None,
    device: str | Any | None = None,
    batch_size: int = 8,
    box_threshold: float | None = None,
    text_threshold: float | None = None,
    prompts: dict[str, str] | None = None,
) -> ZeroShotTeacher:
    """Base Grounding DINO (``dino_weights``, default the shipped ``teacher_grounding_dino_lora.weights``)
    prompted with ``class_names``, plus base SAM for masks when ``sam_weights`` is given.

    Weights resolve through ``resolve_weights`` (local folder, Hugging Face cache, download only when
    online); a missing one is a one-line UsageError naming ``--dino-weights`` / ``--sam-weights``.
    Thresholds default to ``teacher_grounding_dino_lora.box_threshold`` / ``text_threshold``.
    """
    from distillkit.training import resolve_device

    names = list(class_names)
    if not names:
        raise UsageError("zero-shot labelling needs class names", 'pass --classes "scratch,dent"')
    section = section_defaults("teacher_grounding_dino_lora")
    preprocessing = section_defaults("preprocessing")
    assert isinstance(section, GroundingDinoLoraConfig) and isinstance(preprocessing, PreprocessingConfig)
    target = resolve_device(device if device is not None else "auto")
    bundle = _load_base_dino(dino_weights or section.weights, preprocessing)
    prompt: ClassPrompt = build_prompt(names, prompts if prompts is not None else section.prompts)
    tokens = len(bundle.processor.tokenizer(prompt.text)["input_ids"])
    check_prompt_length(tokens, min(section.max_text_len, bundle.text_budget), len(names))
    bundle.model.to(target)
    sam = _load_base_sam(sam_weights, target, names, preprocessing) if sam_weights else None
    record = {"prompt": prompt.text, "phrases": list(prompt.phrases), "weights": bundle.weights_source}
    return ZeroShotTeacher(
        class_names=names,
        dino=bundle,
        dino_record=record,
        sam=sam,
        device=target,
        batch_size=batch_size,
        box_threshold=section.box_threshold if box_threshold is None else box_threshold,
        text_threshold=section.text_threshold if text_threshold is None else text_threshold,
        ground_truth=None,
        dino_fingerprint=weights_fingerprint(bundle.weights_dir),
    )
