"""Per-epoch metrics on disk: ``metrics.csv`` (rewritten atomically each epoch) and TensorBoard."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillkit.io import atomic_write_text

METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"


def write_metrics_csv(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """All rows, columns in order of first appearance; a key a row lacks is an empty cell."""
    columns: list[str] = []
    for row in history:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({key: _cell(value) for key, value in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return value


class TensorBoardLog:
    """Scalars per epoch into ``<output_dir>/tensorboard``; on resume, events past the restart are purged."""

    def __init__(self, folder: Path, resume_epoch: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported late: tensorboard is slow to import

        folder.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(
            log_dir=str(folder), purge_step=resume_epoch + 1 if resume_epoch is not None else None
        )

    def log_row(self, row: dict[str, Any], epoch: int) -> None:
        for key, value in row.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(float(value)):
                self._writer.add_scalar(key, float(value), global_step=epoch)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
