"""Command-line overrides: ``--set section.key=value`` (repeatable, nested keys allowed).

Values are parsed as YAML, so they arrive typed: ``16`` → int, ``0.5`` and ``1e-4`` → float,
``true`` → bool, ``null`` → None, ``[3,4]`` → list, ``{a: 1}`` → dict, anything else → str. Quote a
value to keep it a string (``--set student.model="'1'"``). Parsing only checks the syntax; whether
the key exists and the value fits is decided by the schema when the configuration is built.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from distillkit.errors import ConfigError, UsageError

_KEY_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
# YAML 1.1 (PyYAML) reads `1e-4` and `5e3` as strings; a config value written that way is a number.
_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")

_FORMAT_HINT = "write SECTION.KEY=VALUE, e.g. --set student.batch=32 or --set teacher_sam_lora.lora.r=8"


@dataclass(frozen=True)
class Override:
    """One parsed ``--set`` item."""

    key: str  #: full dotted key, e.g. ``teacher_sam_lora.lora.r``
    value: Any  #: the YAML-parsed value
    text: str  #: the original ``key=value`` text, for messages and metadata

    @property
    def path(self) -> tuple[str, ...]:
        """The key split on dots: ``("teacher_sam_lora", "lora", "r")``."""
        return tuple(self.key.split("."))

    @property
    def section(self) -> str:
        return self.path[0]


def parse_value(text: str) -> Any:
    """Parse one override value as YAML, with the few fixes a command line needs."""
    if text.strip() == "":
        return ""  # `key=` means the empty string, not null (write `null` for that)
    if _SCIENTIFIC.match(text.strip()):
        return float(text)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "syntax error"
        raise UsageError(
            f"cannot parse the value {text!r} ({problem})",
            "quote it to pass a plain string, e.g. --set key=\"'text'\"",
        ) from None
    return _normalise(value, text)


def _normalise(value: Any, text: str) -> Any:
    # YAML turns `2024-01-01` into a date; configs only hold JSON-like data, so keep the text.
    if isinstance(value, (_dt.date, _dt.datetime)):
        return text.strip()
    if isinstance(value, str) and _SCIENTIFIC.match(value):
        return float(value)
    if isinstance(value, list):
        return [_normalise(item, str(item)) for item in value]
    if isinstance(value, dict):
        return {
            str(k) if isinstance(k, (_dt.date, _dt.datetime)) else k: _normalise(v, str(v)) for k, v in value.items()
        }
    return value


def _check_key(key: str, text: str) -> None:
    if not key:
        raise UsageError(f"override {text!r} has an empty key", _FORMAT_HINT)
    parts = key.split(".")
    if len(parts) < 2:
        raise UsageError(f"override {text!r} does not name a section", _FORMAT_HINT)
    for part in parts:
        if not part:
            raise UsageError(f"override {text!r} has an empty part in the key {key!r}", _FORMAT_HINT)
        if not _KEY_PART.match(part):
            raise UsageError(f"override {text!r}: {part!r} is not a valid key name", _FORMAT_HINT)


def parse_override(text: str) -> Override:
    """Parse ``section.key=value`` (nested: ``section.a.b=value``); raise UsageError when malformed."""
    if "=" not in text:
        raise UsageError(f"override {text!r} has no '='", _FORMAT_HINT)
    raw_key, raw_value = text.split("=", 1)
    key = raw_key.strip()
    _check_key(key, text)
    try:
        value = parse_value(raw_value)
    except UsageError as exc:
        raise UsageError(f"override {text!r}: {exc.message}", exc.hint) from None
    return Override(key=key, value=value, text=text)


def parse_overrides(texts: Iterable[str]) -> list[Override]:
    """Parse every ``--set`` item, in order (a later item wins over an earlier one for the same key)."""
    return [parse_override(text) for text in texts]


def value_text(value: Any) -> str:
    """``value`` as ``--set`` would read it back (YAML flow style), for messages and metadata."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def typed_override(key: str, value: Any) -> Override:
    """An override from a key and an already typed value: nothing is parsed from text."""
    text = f"{key}={value_text(value)}"
    _check_key(key, text)
    return Override(key=key, value=value, text=text)


#: What the library's entry points take as overrides: typed values by dotted key
#: (``{"student.epochs": 50}``), or already parsed ``Override`` objects. ``--set`` text is parsed
#: once, by the command line (``parse_overrides``); a plain string is accepted as that same
#: ``section.key=value`` text for use from Python.
ConfigOverrides = Mapping[str, Any] | Sequence["Override | str"]


def as_overrides(overrides: ConfigOverrides | str | None) -> list[Override]:
    """The overrides as ``Override`` objects, in order."""
    if overrides is None:
        return []
    if isinstance(overrides, str):  # a lone item, not a sequence of characters
        overrides = [overrides]
    if isinstance(overrides, Mapping):
        return [typed_override(str(key), value) for key, value in overrides.items()]
    return [item if isinstance(item, Override) else parse_override(item) for item in overrides]


def section_overrides(sections: Mapping[str, Mapping[str, Any]], names: Iterable[str]) -> list[Override]:
    """Overrides that restore the named sections of a saved configuration, key by key, typed."""
    return [
        typed_override(f"{name}.{key}", value) for name in names for key, value in (sections.get(name) or {}).items()
    ]


def apply_override(tree: dict[str, Any], override: Override) -> None:
    """Set ``override`` into the nested dict ``tree`` (keyed by section), in place.

    A dict value set onto an existing group of settings is merged key by key, so
    ``--set augmentation.environment="{lighting: variable}"`` keeps the other environment keys.
    """
    node: Any = tree
    path = override.path
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None and part not in node:
            child = node[part] = {}  # unknown key: the schema will reject it with a suggestion
        if not isinstance(child, dict):
            here = ".".join(path[: depth + 1])
            raise ConfigError(
                f"config key '{here}' is a single value, not a group of settings, so '{override.key}' cannot be set",
                f"set it directly: --set {here}=VALUE",
            )
        node = child
    leaf = path[-1]
    if isinstance(override.value, dict) and isinstance(node.get(leaf), dict):
        node[leaf] = _deep_merge(node[leaf], override.value)
    else:
        node[leaf] = override.value


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
