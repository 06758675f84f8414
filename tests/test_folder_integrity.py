"""Trust in the experiment folder: one run per folder, atomic checkpoints, exact resume, a prompt Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillkit.errors import UsageError
from distillkit.locking import LOCK_NAME, lock_holder, output_lock
from tests.test_cli import run
from tests.test_train_student import make_shapes

REPO = Path(__file__).resolve().parents[1]


def hold_lock(target: Path, kind: str = "folder") -> subprocess.Popen[str]:
    """A child process holding the lock of ``target`` until killed."""
    code = (
        "import sys, time\n"
        "from distillkit.locking import output_lock\n"
        f"with output_lock({str(target)!r}, kind={kind!r}):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes(root / "train", 8, 0), make_shapes(root / "val", 4, 1)


def test_second_run_into_a_locked_folder_is_refused_naming_the_holder(
    shapes: tuple[Path, Path], tmp_path: Path
) -> None:
    train, val = shapes
    folder = tmp_path / "exp"
    holder = hold_lock(folder)
    try:
        commands = [
            ("train-student", "-d", str(train), "-v", str(val), "-o", str(folder)),
            ("train-teacher", "-d", str(train), "-v", str(val), "-o", str(folder)),
            ("train-classifier", "-d", str(train.parent / "images"), "-o", str(folder)),
        ]
        for command in commands:
            started = time.perf_counter()
            code, out, err = run(*command)
            assert code == 2, (command, err)
            assert f"is in use by another distillkit run (PID {holder.pid})" in err
            assert "choose another --output" in err and len(err.strip().splitlines()) == 1
            assert time.perf_counter() - started < 10  # at once, before any data is read
        with pytest.raises(UsageError, match=f"PID {holder.pid}"):
            with output_lock(folder):
                pass
        assert lock_holder(folder / LOCK_NAME) == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL released the kernel lock: the folder is free at once, nothing stale to clean up
    with output_lock(folder) as lock_file:
        assert lock_holder(lock_file) == os.getpid()
    assert not (folder / LOCK_NAME).exists()  # a clean release removes the lock file


def test_label_output_file_is_locked_too(tmp_path: Path) -> None:
    target = tmp_path / "labels.json"
    holder = hold_lock(target, kind="file")
    try:
        with pytest.raises(UsageError, match="labels.json is in use by another distillkit run"):
            with output_lock(target, kind="file"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with output_lock(target, kind="file"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_leaves_no_folder_behind(tmp_path: Path) -> None:
    folder = tmp_path / "new"
    with pytest.raises(RuntimeError), output_lock(folder):
        raise RuntimeError("failed before writing")
    assert not folder.exists()
