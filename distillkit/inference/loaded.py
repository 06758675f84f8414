"""A detection or segmentation model opened for `infer` and `evaluate`, whatever file it came from.

Its own module so the loaders of checkpoints (``predictor.load_model``) and of exported files
(``exported.load_exported_model``) both build one without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class LoadedModel:
    path: Path
    model: Any  # ultralytics.YOLO
    task: str
    names: dict[int, str]
    category_ids: dict[int, int]  # class index -> COCO category id
    parameter_count: int | None = None  # exported models: counted from the file or stored in its metadata

    @property
    def parameters(self) -> int:
        if self.parameter_count is not None:
            return self.parameter_count
        return int(sum(p.numel() for p in self.model.model.parameters()))

    @property
    def size_mb(self) -> float:
        if self.path.is_dir():  # an OpenVINO folder: its .xml, .bin and metadata together
            return sum(item.stat().st_size for item in self.path.iterdir() if item.is_file()) / 1e6
        return self.path.stat().st_size / 1e6
