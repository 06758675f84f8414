"""Small file helpers: atomic writes, fast JSON, content hashes.

Every file distillkit produces goes through ``atomic_write_*``: the content is written to a
temporary file in the destination folder and renamed over the target, so an interrupted run never
leaves a half-written file and a reader never sees one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson
import yaml

from distillkit.errors import DataError, UsageError


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp creates the file owner-only (0600); give it the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any, indent: bool = False) -> bytes:
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    if indent:
        option |= orjson.OPT_INDENT_2
    return orjson.dumps(obj, option=option)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: bool = True) -> None:
    atomic_write_bytes(path, dumps_json(obj, indent=indent) + b"\n")


def atomic_write_yaml(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a missing file is a usage error, unparsable content a data error."""
    file = Path(path)
    if not file.exists():
        raise UsageError(f"file not found: {file}", "check the path")
    if file.is_dir():
        raise UsageError(f"{file} is a folder, not a JSON file", "pass the annotation file itself")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from exc
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        loaded = _loads_with_non_finite_numbers(data)
        if loaded is None:
            raise DataError(f"{file} is not valid JSON ({exc})", "fix or re-export the file") from exc
        return loaded


def _loads_with_non_finite_numbers(data: bytes) -> Any | None:
    """The document parsed as Python's ``json`` does when orjson refused it only for ``NaN``/``Infinity``; else None.

    Python's ``json.dump`` writes these literals by default (and pycocotools loads such files), so a COCO
    file can hold them; they arrive as float NaN/inf and the checks that read numbers report each one
    where it sits (a bbox with NaN is that annotation's invalid bbox). Anything else orjson rejects stays
    "not valid JSON".
    """
    if not any(token in data for token in (b"NaN", b"Infinity")):
        return None
    constants: list[str] = []

    def constant(name: str) -> float:
        constants.append(name)
        return float(name)

    try:
        loaded = json.loads(data.decode("utf-8"), parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return loaded if constants else None


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
