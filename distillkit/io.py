"""Small file helpers: atomic writes, fast JSON, content hashes.

Every file distillkit produces goes through ``atomic_write_*``: the content is written to a
temporary file in the destination folder and renamed over the target, so an interrupted run never
leaves a half-written file and a reader never sees one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
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
    try:
        return orjson.dumps(obj, option=option)
    except orjson.JSONEncodeError:
        return _dumps_with_python_json(obj, indent)


# Nesting orjson reads (1024) but does not write (254), with room for the containers around it.
_WRITE_DEPTH = 1100


def _dumps_with_python_json(obj: Any, indent: bool) -> bytes:
    """What orjson refuses to write but a file it or Python's ``json`` read can hold: nesting deeper than
    254, integers beyond 64 bits, strings with lone surrogates (written as ``\\ud800`` escapes). Written by
    Python's ``json`` as standard JSON (NaN/Infinity as null, as orjson writes them)."""

    def plain(value: Any) -> Any:
        if hasattr(value, "tolist"):  # numpy arrays and scalars
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * _WRITE_DEPTH))
    try:
        text = json.dumps(_finite(obj, _WRITE_DEPTH), indent=2 if indent else None, default=plain)
    except RecursionError as exc:
        raise DataError(
            f"cannot write JSON nested more than {_WRITE_DEPTH} levels deep", "remove the deeply nested values"
        ) from exc
    finally:
        sys.setrecursionlimit(limit)
    return text.encode("ascii")


def _finite(value: Any, depth: int) -> Any:
    """``value`` with NaN/Infinity floats as None (standard JSON has no such numbers)."""
    if depth < 0:
        raise RecursionError
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is list or kind is tuple:
        return [_finite(item, depth - 1) for item in value]
    if kind is dict:
        return {key: _finite(item, depth - 1) for key, item in value.items()}
    return value


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
        if "memory" in str(exc).lower():  # orjson says so in its message, as a decode error
            raise DataError(
                f"not enough memory to read {file} ({len(data) / 2**20:.0f} MB)", "free memory and try again"
            ) from exc
        loaded = _loads_with_python_json(data)
        if loaded is None:
            raise DataError(f"{file} is not valid JSON ({exc})", "fix or re-export the file") from exc
        return loaded


def _loads_with_python_json(data: bytes) -> Any | None:
    """The document as Python's ``json`` reads it, for what orjson refuses but Python (and pycocotools,
    which loads with it) reads; None when Python's ``json`` refuses it too.

    That is ``NaN``/``Infinity`` literals (``json.dump`` writes them by default: they arrive as float
    NaN/inf and the checks that read numbers report each one where it sits, e.g. a bbox with NaN is that
    annotation's invalid bbox), integers beyond 64 bits, lone surrogate escapes, a UTF-8 byte-order mark
    and UTF-16/32 text.
    """
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError):
        return None


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
