"""Ultralytics checkpoints that survive a kill at any instant (ground floor: part of the ultralytics guard).

Ultralytics writes ``weights/last.pt`` and ``best.pt`` in place (``Path.write_bytes`` in
``BaseTrainer.save_model``, ``torch.save`` in ``strip_optimizer`` at the end): a kill during the
write leaves a truncated file that no resume can read. ``install_atomic_checkpoints`` (called by
``import_ultralytics``) lets ``save_model`` write into ``weights/.saving/`` and then moves each file
over its target with fsync + ``os.replace``, and ``strip_optimizer`` write a temporary file beside
its target: at any instant every checkpoint is either the previous complete file or the new one.
Whatever else a trainer saves with a checkpoint (``checkpoint_hooks``, e.g. the students' exact
resume state) is written into the same staging folder and published first.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillkit.interrupts import ignore_in_worker

STAGING_DIR = ".saving"  # save_model's files are complete here before they replace the real ones
RESUME_STATE_PREFIX = "resume_state_"
_PUBLISH_FIRST = ("resume_state_", "last.pt", "best.pt")  # a last.pt never lands before its resume state


def install_atomic_checkpoints() -> None:
    """Patch ultralytics' trainer: atomic checkpoint writes, loader workers that leave Ctrl-C to the main process."""
    from ultralytics.data import build
    from ultralytics.engine import trainer as engine

    base = engine.BaseTrainer
    if getattr(base.save_model, "_distillkit_atomic", False):
        return
    save_model = base.save_model

    def atomic_save_model(self: Any) -> Any:
        final_dir = Path(self.wdir)
        staging = final_dir / STAGING_DIR
        shutil.rmtree(staging, ignore_errors=True)  # what a killed run left half-written
        places = (self.wdir, self.last, self.best)
        self.wdir, self.last, self.best = staging, staging / self.last.name, staging / self.best.name
        try:
            saved = save_model(self)
            for hook in getattr(self, "checkpoint_hooks", ()):
                hook(self, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            self.wdir, self.last, self.best = places
        _publish(staging, final_dir)
        return saved

    atomic_save_model._distillkit_atomic = True  # type: ignore[attr-defined]
    base.save_model = atomic_save_model
    engine.strip_optimizer = _atomic_strip_optimizer(engine.strip_optimizer)

    build._distillkit_seed_worker = build.seed_worker
    build.seed_worker = quiet_seed_worker


def quiet_seed_worker(worker_id: int) -> None:
    """Ultralytics' loader ``worker_init_fn``, leaving Ctrl-C to the main process first.

    Module level, so a worker started by ``spawn`` (macOS) can unpickle it; there the patch was never
    installed and ``seed_worker`` is still ultralytics' own.
    """
    from ultralytics.data import build

    ignore_in_worker()
    getattr(build, "_distillkit_seed_worker", build.seed_worker)(worker_id)


def _publish(staging: Path, final_dir: Path) -> None:
    """Move every file of ``staging`` over its namesake in ``final_dir``, durably, resume state first."""
    files = sorted(
        (p for p in staging.iterdir() if p.is_file()),
        key=lambda p: next((i for i, prefix in enumerate(_PUBLISH_FIRST) if p.name.startswith(prefix)), 99),
    )
    for file in files:
        _fsync(file)
        os.replace(file, final_dir / file.name)
    _fsync_folder(final_dir)
    shutil.rmtree(staging, ignore_errors=True)
    published = {file.name for file in files}
    if any(name.startswith(RESUME_STATE_PREFIX) for name in published):  # only the state matching last.pt is kept
        for old in final_dir.glob(f"{RESUME_STATE_PREFIX}*.pt"):
            if old.name not in published:
                old.unlink(missing_ok=True)


def _atomic_strip_optimizer(strip: Callable[..., Any]) -> Callable[..., Any]:
    def atomic_strip(f: str | Path = "best.pt", s: str = "", updates: dict[str, Any] | None = None) -> Any:
        target = Path(s or f)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            result = strip(f, str(temporary), updates)
            if temporary.is_file():
                _fsync(temporary)
                os.replace(temporary, target)
                _fsync_folder(target.parent)
        finally:
            temporary.unlink(missing_ok=True)
        return result

    return atomic_strip


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
