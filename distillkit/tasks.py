"""What kind of model a file is, and which family's code handles each kind: the task registry.

``model_task(path)`` is the one answer to "what kind of model is this file": the task recorded in the
file itself, read without running anything: a ``.pt`` through ``distillkit.safe_load`` (data only), the
distillkit metadata of an ONNX file, an OpenVINO folder's ``metadata.yaml``, a ``.tflite``'s appended
entry, an engine's sidecar ``class_mapping.yaml``.

The shared services (``export/``, ``inference/``, ``evaluation/``, ``labelling/``) never import a family
(``classify/``, ``students/``, ``teachers/``). Each family says what it brings in a registration module of
its own, listed in ``FAMILY_MODULES`` (the one place, like Python entry points): ``register(role, key, obj)``
for a role such as ``"export.source"`` and a key that is a task (``"classify"``) or a teacher kind. A
service asks ``lookup(role, key)`` (or ``find``, None when the service's own default applies); the first
lookup imports the registration modules by name, which import nothing heavy (their functions import the
family's code when called). The roles:

* ``export.source`` (task): open a ``.pt`` for `optimize` as an ``export.onnx_export.SourceModel``;
  a checkpoint recording no task is an ultralytics one, opened by the ``detect`` entry;
* ``export.onnx`` (task): the ONNX exporter, where a family has its own (else ultralytics');
* ``export.tflite`` (task): the LiteRT exporter, where a family has its own (else ultralytics');
* ``export.accuracy`` (task): the evaluator behind `optimize --val-data` (else COCO mAP);
* ``export.preprocess`` (task): an image as the network input, for non-letterbox preprocessing;
* ``labelling.teacher`` (kind ``teacher-dir`` | ``ultralytics`` | ``zero-shot``): the teacher `label` uses;
* ``labelling.teacher-dir-loader`` (``teacher-dir``): the teachers family's ``load_teacher``.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any, TypeVar

from distillkit.errors import UsageError

#: The family registration modules, imported by name on the first lookup (the single list to extend).
FAMILY_MODULES = (
    "distillkit.classify.services",
    "distillkit.students.services",
    "distillkit.teachers.services",
)

#: What ``model_task`` returns for each task a file can record.
TASKS = ("detect", "segment", "classify")
#: Torch checkpoint suffixes a distillkit header may be read from.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# the ``distillkit.kind`` header of a torch checkpoint -> the task it holds
_CHECKPOINT_KINDS = {"classifier": "classify"}

_T = TypeVar("_T")
_registry: dict[tuple[str, str], Any] = {}
_failed: dict[str, str] = {}  # registration module -> why it could not be imported
_loaded = False
_lock = threading.RLock()


def register(role: str, key: str, implementation: _T) -> _T:
    """Make ``implementation`` the ``role`` of ``key`` (a task or a kind); a second one for the same pair is a bug."""
    with _lock:
        previous = _registry.get((role, key))
        if previous is not None and previous is not implementation:
            raise RuntimeError(f"{role} for {key!r} is registered twice ({previous!r}, {implementation!r})")
        _registry[(role, key)] = implementation
    return implementation


def _load_families() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        for name in FAMILY_MODULES:
            try:
                importlib.import_module(name)
            except ImportError as exc:  # an optional family whose requirements are missing: its keys stay absent
                _failed[name] = f"{type(exc).__name__}: {exc}"


def lookup(role: str, key: str) -> Any:
    """The ``role`` registered for ``key``; a one-line UsageError when no family brings it."""
    found = find(role, key)
    if found is None:
        missing = f" ({'; '.join(f'{k}: {v}' for k, v in _failed.items())})" if _failed else ""
        raise UsageError(f"no {role} is registered for {key!r}{missing}", "check that distillkit is fully installed")
    return found


def find(role: str, key: str) -> Any | None:
    """The ``role`` registered for ``key``, or None."""
    _load_families()
    return _registry.get((role, key))


def registered(role: str) -> dict[str, Any]:
    """Every key registered for ``role`` and its implementation."""
    _load_families()
    return {key: value for (name, key), value in _registry.items() if name == role}


# --------------------------------------------------------------------------------------------- model_task


def model_task(path: str | Path) -> str | None:
    """The task a model file records (``detect``, ``segment``, ``classify``); None when it records none.

    None means a file without distillkit's record: an ultralytics checkpoint or export, whose runtime works
    out detect or segment itself, or a path that is no model at all (the loaders then say why). A ``.pt``
    naming a global outside ``distillkit.safe_load``'s allowlist raises its one-line refusal.
    """
    from distillkit.model_metadata import (
        is_openvino_model,
        read_onnx_metadata,
        read_openvino_metadata,
        read_sidecar,
        read_tflite_metadata,
    )
    from distillkit.safe_load import UnsafeModelFileError

    candidate = Path(path)
    suffix = candidate.suffix.lower()
    try:
        if is_openvino_model(candidate):
            folder = candidate.parent if suffix == ".xml" else candidate
            metadata = read_openvino_metadata(folder) if folder.is_dir() else None
            return metadata.task if metadata is not None else None
        if not candidate.is_file():
            return None
        if suffix in CHECKPOINT_SUFFIXES:
            return _checkpoint_task(candidate)
        if suffix == ".onnx":
            metadata = read_onnx_metadata(candidate)
        elif suffix == ".tflite":
            metadata = read_tflite_metadata(candidate)
        elif suffix == ".engine":
            task = (read_sidecar(candidate.parent) or {}).get("task")
            return str(task) if task in TASKS else None
        else:
            return None
    except UnsafeModelFileError:
        raise
    except Exception:  # an unreadable, foreign or broken file records no task: its loader says what is wrong
        return None
    return metadata.task if metadata is not None else None


def _checkpoint_task(path: Path) -> str | None:
    """The task of a torch file's ``distillkit`` header (train-classifier writes one), read as data only.

    The probe reads with torch's own allowlist (tensors and containers), so an ultralytics checkpoint fails
    fast; such a file is then scanned against ``distillkit.safe_load``'s allowlist, which refuses one that
    names anything else (``posix.system``...) in one line.
    """
    import torch

    from distillkit.safe_load import check_model_file

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a pickled ultralytics model, a damaged or foreign file: not one of ours
        check_model_file(path)
        return None
    header = loaded.get("distillkit") if isinstance(loaded, dict) else None
    kind = header.get("kind") if isinstance(header, dict) else None
    return _CHECKPOINT_KINDS.get(kind) if isinstance(kind, str) else None


__all__ = [
    "CHECKPOINT_SUFFIXES",
    "FAMILY_MODULES",
    "TASKS",
    "find",
    "lookup",
    "model_task",
    "register",
    "registered",
]
