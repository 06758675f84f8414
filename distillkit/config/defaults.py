"""Finding and reading the shipped default YAML files (one per configuration section).

An installed wheel carries them as ``distillkit/defaults/`` next to the code; a source or editable
checkout has them at the top of the repository (``defaults/``). Both layouts are searched, in that
order, so the same code works in either.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

import distillkit
from distillkit.errors import ConfigError


def _candidates() -> list[Path]:
    package_dir = Path(distillkit.__file__).resolve().parent
    return [package_dir / "defaults", package_dir.parent / "defaults"]


def defaults_dir() -> Path:
    """Folder holding the shipped ``<section>.yaml`` files.

    Raises ConfigError when neither the installed nor the source-checkout location exists, which
    means a broken installation rather than a user mistake.
    """
    for candidate in _candidates():
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    searched = ", ".join(str(c) for c in _candidates())
    raise ConfigError(
        f"the shipped configuration defaults were not found (searched {searched})",
        "reinstall distillkit; a source checkout needs its top-level defaults/ folder",
    )


def available_default_sections() -> list[str]:
    """Section names that have a defaults file, sorted."""
    return sorted(path.stem for path in defaults_dir().glob("*.yaml"))


@cache
def _load_cached(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read shipped defaults {path}: {exc.strerror or exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"shipped defaults {path} are not valid YAML ({exc})", "reinstall distillkit") from exc


def load_defaults(section: str) -> dict[str, Any]:
    """The shipped default values of one section, as a fresh (mutable) dict."""
    path = defaults_dir() / f"{section}.yaml"
    if not path.is_file():
        raise ConfigError(f"no shipped defaults for config section '{section}' ({path} is missing)")
    data = _load_cached(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"shipped defaults {path} must hold a mapping of keys, not {type(data).__name__}")
    return _deep_copy(data)


def _deep_copy(value: Any) -> Any:
    # YAML data is only dicts, lists and scalars; this is faster and simpler than copy.deepcopy.
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value
