"""Which teacher weights (Grounding DINO, SAM) and ultralytics ``.pt`` files this machine has.

The teacher lookup is the one `train-teacher` does (``distillkit.teachers.weights``): a folder given
with ``--dino-weights`` / ``--sam-weights``, else the shipped default hub id in the Hugging Face cache
(``HF_HUB_CACHE`` / ``HF_HOME``), with ``HF_HUB_OFFLINE`` deciding whether a missing one could still
be downloaded. Nothing is ever downloaded here; each folder found must load its ``config.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillkit.checks.model import FAIL, OK, UNAVAILABLE, WARN, Check
from distillkit.errors import DistillkitError
from distillkit.teachers.weights import (
    _HUB_ID,
    FLAG_MODEL_TYPES,
    FLAG_MODELS,
    _cached_snapshot,
    hub_cache_dir,
    hub_offline,
    quiet_transformers,
    resolve_weights,
)

#: Weights flag → the config section whose ``weights`` key is the default.
TEACHER_SECTIONS = {"--dino-weights": "teacher_grounding_dino_lora", "--sam-weights": "teacher_sam_lora"}
_MAX_LISTED = 8

# States of a teacher's weights, for the command readiness lines.
FOUND, DOWNLOAD, MISSING, BROKEN = "found", "download", "missing", "broken"


@dataclass(frozen=True)
class TeacherWeights:
    flag: str
    state: str  # found | download | missing | broken
    source: str  # the folder or hub id


def default_weights(flag: str) -> str:
    """The shipped default of a teacher's weights (a hub id such as IDEA-Research/grounding-dino-tiny)."""
    from distillkit.config import load_defaults

    return str(load_defaults(TEACHER_SECTIONS[flag])["weights"])


def _looks_like_hub_id(text: str) -> bool:
    # the same rule as resolve_weights: at most one "/", no leading "." "/" "~", hub-id characters
    path_like = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    return not path_like and bool(_HUB_ID.match(text)) and not Path(text).expanduser().exists()


def load_config(folder: str | os.PathLike[str]) -> str:
    """Load ``config.json`` of a weights folder through transformers; return its model_type."""
    quiet_transformers()
    from transformers import AutoConfig

    return str(AutoConfig.from_pretrained(str(folder), local_files_only=True).model_type)


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]


def _weights_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())


def cached_models(cache: Path | None = None) -> list[dict[str, str]]:
    """Models in the hub cache with their model_type: [{repo_id, folder, model_type}] (main snapshot first)."""
    cache = hub_cache_dir() if cache is None else cache
    found: list[dict[str, str]] = []
    if not cache.is_dir():
        return found
    for repo in sorted(cache.glob("models--*")):
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        candidates = []
        ref = repo / "refs" / "main"
        if ref.is_file():
            candidates.append(snapshots / ref.read_text().strip())
        candidates += sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: -p.stat().st_mtime)
        for snapshot in candidates:
            config = snapshot / "config.json"
            if not config.is_file():
                continue
            try:
                model_type = json.loads(config.read_text()).get("model_type")
            except (OSError, ValueError, AttributeError):
                model_type = None
            repo_id = repo.name[len("models--") :].replace("--", "/")
            found.append({"repo_id": repo_id, "folder": str(snapshot), "model_type": str(model_type)})
            break
    return found


def _check_folder(flag: str, name: str, folder: str, origin: str, required: bool) -> tuple[Check, TeacherWeights]:
    """A resolved weights folder must load its config as the right model type."""
    label = FLAG_MODELS[flag]
    data: dict[str, Any] = {"flag": flag, "folder": folder, "origin": origin}
    try:
        model_type = load_config(folder)
    except Exception as exc:  # garbage JSON, unknown model_type, unreadable file
        data["error"] = _reason(exc)
        detail = f"{folder}: config.json does not load ({data['error']})"
        fix = f"pass {flag} DIR, a {label} folder written by save_pretrained (config.json + model.safetensors)"
        return Check("weights", name, FAIL if required else WARN, detail, fix, required, data), TeacherWeights(
            flag, BROKEN, folder
        )
    data["model_type"] = model_type
    expected = FLAG_MODEL_TYPES[flag]
    if model_type != expected:
        detail = f"{folder} holds '{model_type}' weights, not {label} ('{expected}')"
        fix = f"pass {flag} DIR, a {label} folder written by save_pretrained"
        return Check("weights", name, FAIL if required else WARN, detail, fix, required, data), TeacherWeights(
            flag, BROKEN, folder
        )
    size = _weights_size(Path(folder))
    data["weights_bytes"] = size
    detail = f"{folder} ({origin}; config loads, {model_type}, {size / 1e6:.1f} MB of weights)"
    return Check("weights", name, OK, detail, required=required, data=data), TeacherWeights(flag, FOUND, folder)


def _given_weights(flag: str, text: str) -> tuple[Check, TeacherWeights]:
    """Weights the user named with ``flag``: any problem is a required failure naming the folder."""
    label = FLAG_MODELS[flag]
    name = label
    if _looks_like_hub_id(text):
        cached = _cached_snapshot(text)
        if cached is not None:
            return _check_folder(flag, name, str(cached), f"Hugging Face cache {hub_cache_dir()}", True)
        data = {"flag": flag, "source": text, "cache": str(hub_cache_dir())}
        if hub_offline():
            detail = f"'{text}' is not in the Hugging Face cache {hub_cache_dir()} and HF_HUB_OFFLINE is set"
            fix = f"pass {flag} DIR (a folder written by save_pretrained) or set HF_HOME to a cache holding {text}"
            return Check("weights", name, FAIL, detail, fix, True, data), TeacherWeights(flag, MISSING, text)
        detail = f"'{text}' is not cached: train-teacher downloads it on first use (needs the network)"
        fix = f"to run offline: huggingface-cli download {text} on a connected machine, then copy the cache"
        return Check("weights", name, WARN, detail, fix, True, data), TeacherWeights(flag, DOWNLOAD, text)
    try:
        folder = resolve_weights(text, flag=flag)  # a path: local checks only, never the network
    except DistillkitError as exc:
        data = {"flag": flag, "source": text, "error": exc.message}
        return Check("weights", name, FAIL, exc.message, exc.hint, True, data), TeacherWeights(flag, BROKEN, text)
    return _check_folder(flag, name, str(Path(folder).expanduser().absolute()), "given folder", True)


def _default_weights(flag: str, cached: list[dict[str, str]]) -> tuple[Check, TeacherWeights]:
    """The shipped default hub id, looked up in the cache (not required: train-teacher may get a folder)."""
    label = FLAG_MODELS[flag]
    default = default_weights(flag)
    name = label
    snapshot = _cached_snapshot(default)
    if snapshot is not None:
        return _check_folder(flag, name, str(snapshot), f"Hugging Face cache {hub_cache_dir()}", False)
    others = [m["repo_id"] for m in cached if m["model_type"] == FLAG_MODEL_TYPES[flag] and m["repo_id"] != default]
    data: dict[str, Any] = {"flag": flag, "source": default, "cache": str(hub_cache_dir()), "other_cached": others}
    where = f"default {default} not in the Hugging Face cache {hub_cache_dir()}"
    also = f"; cached instead: {', '.join(others)} (pass {flag} {others[0]})" if others else ""
    fix = f"pass {flag} DIR or set HF_HOME to a cache holding {default}"
    if hub_offline():
        detail = f"{where} and HF_HUB_OFFLINE is set: train-teacher cannot get it{also}"
        return Check("weights", name, UNAVAILABLE, detail, fix, data=data), TeacherWeights(flag, MISSING, default)
    detail = f"{where}: train-teacher downloads it on first use (needs the network){also}"
    return Check("weights", name, WARN, detail, fix, data=data), TeacherWeights(flag, DOWNLOAD, default)


def teacher_weight_checks(given: dict[str, str | None]) -> tuple[list[Check], dict[str, TeacherWeights]]:
    """One check per teacher: the folder given for its flag, else its default in the hub cache."""
    checks: list[Check] = []
    states: dict[str, TeacherWeights] = {}
    cached: list[dict[str, str]] | None = None
    for flag in TEACHER_SECTIONS:
        text = given.get(flag)
        if text:
            check, state = _given_weights(flag, text)
        else:
            if cached is None:
                cached = cached_models()
            check, state = _default_weights(flag, cached)
        checks.append(check)
        states[flag] = state
    return checks, states


def ultralytics_weight_folders() -> list[Path]:
    """Where train-student looks for a ``--student NAME``'s ``NAME.pt`` (students/student_model.py's own list)."""
    from distillkit.students.student_model import local_weight_folders

    try:
        return local_weight_folders()
    except Exception:  # ultralytics broken (reported under packages): the folders that need no import
        return [Path.cwd().absolute()]


def ultralytics_weight_check() -> Check:
    folders = ultralytics_weight_folders()
    files: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            files += sorted(p for p in folder.glob("*.pt") if p.is_file())
    data = {"folders": [str(f) for f in folders], "files": [str(f) for f in files]}
    where = ", ".join(str(f) for f in folders)
    if not files:
        detail = f"no .pt in {where}: students train from scratch unless given --student PATH.pt"
        fix = "copy e.g. yolov8n.pt / yolov8n-seg.pt into the working folder or $DISTILLKIT_WEIGHTS"
        return Check("weights", "ultralytics .pt", WARN, detail, fix, data=data)
    names = ", ".join(f.name for f in files[:_MAX_LISTED]) + (
        f" +{len(files) - _MAX_LISTED} more" if len(files) > _MAX_LISTED else ""
    )
    return Check("weights", "ultralytics .pt", OK, f"{names} (in {where})", data=data)
