"""Pickle payloads for the safe-loading tests and benchmark: each creates MARKER when unpickled by plain torch.load.

``malicious_checkpoint`` hides one inside a dict that otherwise looks like an ultralytics checkpoint.
"""

from __future__ import annotations

import os
import pathlib
from pathlib import Path
from typing import Any


class ShellCommand:
    """The classic: ``os.system`` (pickled as ``posix.system``) with a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch '{self.marker}'",))


class PathTouch:
    """``pathlib.Path.touch`` called on the marker (pickled as getattr of pathlib.Path)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (pathlib.Path.touch, (self.marker,))


class BoundTouch:
    """Only allowlisted globals (getattr, PosixPath): the bound method ``PosixPath(marker).touch`` is the attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (pathlib.PosixPath(self.marker).touch, ())


class ModelConstructor:
    """An allowlisted class *called* with a config whose activation string ultralytics would ``eval``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        from distillkit.ultralytics_env import import_ultralytics

        import_ultralytics()
        from ultralytics.nn.tasks import DetectionModel

        code = f"__import__('pathlib').Path({str(self.marker)!r}).touch()"
        return (DetectionModel, ({"activation": code, "backbone": [], "head": [], "nc": 1},))


class Exec:
    """``builtins.exec`` of a line that creates the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def malicious_checkpoint(path: Path, marker: Path, payload: type = ShellCommand) -> Path:
    """Looks like an ultralytics checkpoint (a model, train_args, a date); the date runs the payload."""
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.SiLU())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "train_args": {"imgsz": 64, "task": "detect"}, "date": payload(marker)}, path)
    return path
