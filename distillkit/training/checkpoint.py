"""Checkpoint files: what they hold, writing them atomically, retention, loading them back.

A checkpoint is a ``torch.save`` dict with everything a resumed run needs to continue exactly where
it stopped (see ``CHECKPOINT_KEYS``). It holds only plain data and tensors, so ``torch.load`` with
``weights_only=True`` (torch's safe loader, via ``distillkit.safe_load``) reads it; the ``extra`` dict a
caller adds must obey the same rule (strings, numbers, lists, dicts, tensors).
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillkit.errors import DataError, UsageError
from distillkit.io import atomic_write_bytes
from distillkit.safe_load import safe_torch_load

CHECKPOINT_FORMAT = "distillkit.training/1"
CHECKPOINT_KEYS = (
    "format",  # CHECKPOINT_FORMAT
    "epoch",  # epochs completed (1-based count)
    "global_step",  # optimiser steps taken
    "model",  # tracked state dict (trainable params + buffers of trainable modules) or the full one
    "full_state_dict",  # whether "model" is the full state dict
    "ema",  # ModelEma.state_dict() or None
    "optimizer",
    "scheduler",
    "scaler",
    "best_value",
    "best_epoch",
    "bad_epochs",  # early-stopping counter
    "stopped_early",
    "monitor",
    "mode",
    "history",  # list of per-epoch metric rows
    "rng",  # per-rank RNG states (list indexed by rank)
    "extra",  # the caller's dict (class names, ...)
    "config",  # training_dynamics and checkpointing as used
)
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


def serialize_checkpoint(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def write_checkpoint(path: Path, data: bytes) -> Path:
    """Write serialised checkpoint bytes atomically: a reader (or a crash) never sees half a file."""
    atomic_write_bytes(path, data)
    return path


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch}.pt"


def prune_epoch_checkpoints(folder: Path, keep_last_n: int) -> list[Path]:
    """Delete all but the newest ``keep_last_n`` ``epoch_N.pt`` files; returns the deleted paths."""
    found = sorted(
        ((int(match.group(1)), path) for path in folder.glob("epoch_*.pt") if (match := _EPOCH_FILE.match(path.name))),
    )
    doomed = [path for _, path in found[: max(0, len(found) - keep_last_n)]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a distillkit training checkpoint with torch's safe loader; clear errors for bad files."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"checkpoint not found: {file}", "check the path, or train without resuming")
    try:  # under distillkit's allowlist: a replaced last.pt is refused (exit 2), never run
        state = safe_torch_load(file, map_location=map_location)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{file} is not a readable checkpoint ({first})", "delete it or pass another one") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(
            f"{file} is not a distillkit training checkpoint", "pass a last.pt / best.pt written by distillkit"
        )
    return state


def load_model_state(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``weights`` (a possibly partial state dict) into ``model``; unknown keys or shapes are an error."""
    own = model.state_dict()
    unknown = [key for key in weights if key not in own]
    if unknown:
        raise DataError(
            f"{source} does not match the model: it has {len(unknown)} unknown key(s) ({', '.join(unknown[:3])})",
            "load it into the model it was trained with",
        )
    mismatched = [key for key, value in weights.items() if tuple(value.shape) != tuple(own[key].shape)]
    if mismatched:
        key = mismatched[0]
        raise DataError(
            f"{source} does not match the model: {key} has shape {tuple(weights[key].shape)}, "
            f"the model {tuple(own[key].shape)}",
            "load it into the model it was trained with",
        )
    with torch.no_grad():
        for key, value in weights.items():
            own[key].copy_(value)


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    *,
    weights: str = "auto",
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint and (when ``model`` is given) load its weights into ``model``; returns the dict.

    ``weights``: ``"auto"`` loads the weights that were evaluated — the EMA average when the run kept
    one, else the trained weights; ``"ema"`` insists on the average; ``"model"`` loads the trained
    (non-averaged) weights. The checkpoint's ``model`` entry goes in first, so a full state dict also
    sets the frozen parts, then the EMA tensors overlay the tracked ones.
    """
    if weights not in ("auto", "ema", "model"):
        raise ValueError(f"weights must be 'auto', 'ema' or 'model', not {weights!r}")
    state = read_checkpoint(path, map_location=map_location)
    if model is not None:
        source = str(path)
        load_model_state(model, state["model"], source)
        ema = state.get("ema")
        if weights == "ema" and ema is None:
            raise DataError(f"{source} holds no EMA weights", "load it with weights='model'")
        if weights in ("auto", "ema") and ema is not None:
            load_model_state(model, ema["shadow"], source)
    return state
