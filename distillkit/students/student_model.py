"""Which ultralytics model file a student name means, without ever downloading one.

``--student`` takes any ultralytics model name (``yolov8s``, ``yolo11n-seg``), a ``.yaml``
architecture or a ``.pt`` checkpoint. A ``.pt`` found locally (the path itself, the working folder,
``$DISTILLKIT_WEIGHTS``, ultralytics' weights folder) starts from those weights; otherwise the
architecture is built from its yaml with random weights and the caller is told so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillkit.errors import UsageError


@dataclass(frozen=True)
class StudentSpec:
    name: str  # what the user (or the data) asked for
    source: str  # what ultralytics loads: a local .pt path or a .yaml name/path
    pretrained: bool  # True when ``source`` holds trained weights
    notice: str | None = None  # said to the user when the choice deserves it


def resolve_student(name: str, pretrained: bool = True) -> StudentSpec:
    text = name.strip()
    path = Path(text).expanduser()
    if text.endswith(".pt"):
        if path.is_file():
            return StudentSpec(name, str(path.resolve()), True)
        found = _find_local_weights(path.name)
        if found is not None:
            return StudentSpec(name, str(found), True)
        raise UsageError(
            f"student checkpoint {text} not found (distillkit never downloads weights)",
            "give the path of a local .pt file, or a model name such as yolov8s to start from scratch",
        )
    if text.endswith((".yaml", ".yml")):
        return StudentSpec(name, str(path.resolve()) if path.is_file() else text, False)
    stem = text
    if pretrained:
        found = _find_local_weights(f"{stem}.pt")
        if found is not None:
            return StudentSpec(name, str(found), True)
    return StudentSpec(
        name,
        f"{stem}.yaml",
        False,
        notice=(
            f"no local {stem}.pt found: training {stem} from scratch (put the weights in the working folder "
            "or $DISTILLKIT_WEIGHTS, or pass --student PATH.pt, to start from pretrained weights)"
            if pretrained
            else None
        ),
    )


def load_student_model(source: str, name: str) -> Any:
    """``ultralytics.YOLO(source)``, or a one-line UsageError naming ``name`` (``--student yolov8n``).

    Ultralytics raises FileNotFoundError for an unknown architecture name and TypeError for a file
    that is not a YOLO checkpoint (a classifier, a truncated file); neither is a distillkit bug.
    """
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics import YOLO

    try:
        return YOLO(source)
    except (FileNotFoundError, TypeError, ValueError, RuntimeError, KeyError, AttributeError) as exc:
        # ultralytics' first sentence says what is wrong; its advice (an official hub model) does not apply
        reason = " ".join(str(exc).replace("ERROR ❌️", "").split()).split(". ")[0]
        raise UsageError(
            f"{name} cannot be loaded as an ultralytics model ({reason})",
            "pass an ultralytics model name such as yolov8n or yolov8s-seg, a model .yaml, or a detection/"
            "segmentation .pt written by YOLO (train-student's best.pt)",
        ) from exc


def local_weight_folders() -> list[Path]:
    """Where a ``--student NAME``'s ``NAME.pt`` is looked for, in order (duplicates removed)."""
    folders = [Path.cwd()]
    if os.environ.get("DISTILLKIT_WEIGHTS"):
        folders.append(Path(os.environ["DISTILLKIT_WEIGHTS"]))
    try:
        from distillkit.ultralytics_env import import_ultralytics

        import_ultralytics()
        from ultralytics.utils import SETTINGS

        folders.append(Path(SETTINGS["weights_dir"]))
    except (ImportError, KeyError):
        pass
    unique: list[Path] = []
    for folder in folders:
        folder = folder.expanduser().absolute()
        if folder not in unique:
            unique.append(folder)
    return unique


def _find_local_weights(file_name: str) -> Path | None:
    for folder in local_weight_folders():
        candidate = folder / file_name
        if candidate.is_file():
            return candidate.resolve()
    return None
