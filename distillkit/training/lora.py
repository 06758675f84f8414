"""LoRA helpers shared by the teachers and the classifiers: peft configs, count what trains, save.

Adapters and merged models are first written into a temporary sibling folder; adapter files are
then renamed into the teacher folder one by one (it also holds the run's checkpoints and metrics,
which stay), a merged model folder is renamed into place whole. An interrupted save never leaves
a half-written file behind.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from distillkit.config.schema import LoraConfig as LoraSection


def peft_lora_config(section: LoraSection, modules_to_save: Sequence[str] = ()) -> Any:
    """peft's LoraConfig from a ``lora`` section: a teacher config's or a classifier's (research/lora.py)."""
    from peft import LoraConfig

    return LoraConfig(
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        bias=section.bias,
        target_modules=section.target_modules,
        modules_to_save=list(modules_to_save) or None,
    )


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


def _replace_folder(target: Path, write: Callable[[Path], None]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(staging)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def save_adapter(peft_model: Any, folder: Path, extras: Sequence[Callable[[Path], None]] = ()) -> Path:
    """``adapter_config.json`` + ``adapter_model.safetensors`` (+ whatever ``extras`` write) into ``folder``.

    Other files already in ``folder`` (checkpoints, metrics) are left alone.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".adapter.", dir=folder.parent))
    try:
        peft_model.save_pretrained(str(staging), safe_serialization=True)
        for extra in extras:
            extra(staging)
        for item in sorted(staging.iterdir()):
            if item.is_file():
                os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def save_merged(peft_model: Any, folder: Path, extras: Sequence[Callable[[Path], None]] = ()) -> Path:
    """The adapters merged into a copy of the base model, saved as a plain transformers model.

    A copy is merged so the caller's adapter model stays usable (and unmerged) afterwards.
    """

    def write(staging: Path) -> None:
        merged = copy.deepcopy(peft_model).merge_and_unload()
        merged.save_pretrained(str(staging), safe_serialization=True)
        for extra in extras:
            extra(staging)

    return _replace_folder(Path(folder), write)
