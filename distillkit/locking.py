"""One distillkit run per output: an OS lock on the experiment folder (or output file).

Two runs writing into one experiment folder would interleave checkpoints, configs and results and
leave a folder neither run can resume. Every command that writes a run takes ``output_lock`` first;
a second run into the same place is refused at once with a one-line error naming the holder's PID.

The lock is ``fcntl.flock`` on a small file (``.distillkit.lock`` inside the folder, or
``.<name>.lock`` beside an output file): the kernel releases it when the holder's process ends, by
any means, so a SIGKILLed or crashed run never leaves a stale lock behind. The file itself is
removed on a clean release; a waiting opener that locked a file removed meanwhile notices (the path
no longer names its inode) and tries again, so removing it is race-free.

Under ``torchrun`` only rank 0 takes the lock: the other ranks are the same run.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from distillkit.errors import UsageError

LOCK_NAME = ".distillkit.lock"


def lock_path_for(output: str | os.PathLike[str], kind: str = "folder") -> Path:
    """Where the lock of ``output`` lives: inside a folder, or beside an output file."""
    target = Path(output)
    return target / LOCK_NAME if kind == "folder" else target.parent / f".{target.name}.lock"


def lock_holder(lock_file: Path) -> int | None:
    """The PID written in ``lock_file`` by the run holding it (None when unreadable or not yet written)."""
    try:
        text = lock_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextmanager
def output_lock(output: str | os.PathLike[str], kind: str = "folder", option: str = "--output") -> Iterator[Path]:
    """Hold the lock of ``output`` (a run folder, created if absent; or an output file) for the block.

    Raises ``UsageError`` (exit 2) at once when another process holds it. A folder this call created
    and that holds nothing but the lock afterwards (the run failed before writing) is removed again.
    """
    if int(os.environ.get("RANK", "0") or 0) != 0:  # torchrun: rank 0 holds the lock for the whole run
        yield lock_path_for(output, kind)
        return
    target = Path(output)
    folder = target if kind == "folder" else target.parent
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = lock_path_for(output, kind)
    fd = _acquire(lock_file, target, option)
    try:
        yield lock_file
    finally:
        try:
            lock_file.unlink(missing_ok=True)  # still held: nobody else can be between lock and check
        finally:
            os.close(fd)
        if created:
            with suppress(OSError):
                folder.rmdir()  # only succeeds when the run wrote nothing


def _acquire(lock_file: Path, target: Path, option: str) -> int:
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = lock_holder(lock_file)
            holder = f" (PID {pid})" if pid else ""
            raise UsageError(
                f"{target} is in use by another distillkit run{holder}",
                f"wait for it to finish, or choose another {option}",
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_file).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed this file after we opened it: lock the current one
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
