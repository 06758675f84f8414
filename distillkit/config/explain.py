"""Human wording for the schema: type descriptions, key suggestions, one-line validation errors.

pydantic reports problems as a multi-line list with its own locations (including union-member tags
such as ``float`` or ``literal['dynamic']``). Users get one line instead, naming the full dotted key,
the bad value and what was expected, or the nearest valid key for a typo.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import orjson
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from distillkit.errors import ConfigError

_SCALAR_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {"an integer": "integers", "a number": "numbers", "a string": "strings", "true or false": "booleans"}


# --------------------------------------------------------------------------------------------------
# describing types


def _flatten(metadata: Sequence[Any]) -> list[Any]:
    # Inside unions and lists, `Annotated[int, Field(ge=1)]` keeps a FieldInfo holding the rules.
    flat: list[Any] = []
    for item in metadata:
        flat.extend(_flatten(item.metadata) if isinstance(item, FieldInfo) else [item])
    return flat


def _constraints(metadata: Sequence[Any]) -> str:
    """Range and length rules in words: 'in [0, 1)', '>= 1', '(at least 1 item)'."""
    parts = [_range(metadata).strip()]
    for item in _flatten(metadata):
        if isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            parts.append(f"(at least {item.min_length} item{'s' if item.min_length > 1 else ''})")
        elif isinstance(item, annotated_types.MaxLen):
            parts.append(f"(at most {item.max_length} items)")
    return " ".join(part for part in parts if part)


def show_value(value: Any, limit: int = 80, quote_strings: bool = True) -> str:
    """A compact YAML-like rendering of a config value for messages and tables.

    With ``quote_strings=False`` a string is shown bare unless YAML would read it as something
    else (``'true'``, ``'16'``, ``''``), so tables stay readable and unambiguous.
    """
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value if not quote_strings and _reads_back(value) else repr(value)
    else:
        try:
            text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reads_back(text: str) -> bool:
    try:
        return bool(text) and yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


def describe_type(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """Describe a (possibly Annotated/Union/Literal) type in words, e.g. 'an integer >= 1'."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is type(None):
        text = "null"
    elif origin is not None and getattr(origin, "__name__", "") == "Annotated":
        return describe_type(args[0], [*args[1:], *metadata])
    elif origin in (Union, types.UnionType):
        return " or ".join(describe_type(arg) for arg in args)
    elif origin is Literal:
        shown = [show_value(arg) for arg in args]
        text = shown[0] if len(shown) == 1 else "one of " + ", ".join(shown)
    elif origin in (list, tuple, Sequence):
        item = describe_type(args[0]) if args else "values"
        text = f"a list of values, each {item}" if item.startswith("one of") else f"a list of {_plural(item)}"
    elif origin is dict:
        key, value = (describe_type(a) for a in args) if args else ("keys", "values")
        text = f"a mapping of {_plural(key)} to {_plural(value)}"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = f"a group of settings ({', '.join(annotation.model_fields)})"
    else:
        text = _SCALAR_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    rules = _constraints(metadata)
    return f"{text} {rules}" if rules else text


def _plural(description: str) -> str:
    for singular, plural in _PLURALS.items():
        if description.startswith(singular):
            return plural + description[len(singular) :]
    return description


def describe_field(field: FieldInfo) -> str:
    """Describe a model field's expected value, constraints included."""
    return describe_type(field.annotation, field.metadata)


def short_type(field: FieldInfo) -> str:
    """A compact type label for tables: ``int >= 1``, ``float in [0, 1]``, ``a|b``, ``str | null``..."""
    return _short(field.annotation, field.metadata)


def _range(metadata: Sequence[Any]) -> str:
    low = high = None
    for item in _flatten(metadata):
        if isinstance(item, annotated_types.Gt):
            low = f"({item.gt}"
        elif isinstance(item, annotated_types.Ge):
            low = f"[{item.ge}"
        elif isinstance(item, annotated_types.Lt):
            high = f"{item.lt})"
        elif isinstance(item, annotated_types.Le):
            high = f"{item.le}]"
    if low and high:
        return f" in {low}, {high}"
    if low:
        return f" {'>' if low[0] == '(' else '>='} {low[1:]}"
    if high:
        return f" {'<' if high[-1] == ')' else '<='} {high[:-1]}"
    return ""


def _short(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is not None and getattr(origin, "__name__", "") == "Annotated":
        return _short(args[0], [*args[1:], *metadata])
    if origin in (Union, types.UnionType):
        return " | ".join(_short(arg) for arg in args)
    if origin is Literal:
        return "|".join(arg if isinstance(arg, str) else show_value(arg) for arg in args)
    if origin in (list, tuple):
        return f"list[{_short(args[0])}]" if args else "list"
    if origin is dict:
        return f"dict[{_short(args[0])}, {_short(args[1])}]" if args else "dict"
    return getattr(annotation, "__name__", str(annotation)) + _range(metadata)


# --------------------------------------------------------------------------------------------------
# walking the schema


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside ``annotation`` (plain or Optional), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        models = [m for m in (_model_in(a) for a in get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    return None


def iter_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf field of ``model`` as (dotted key relative to the model, FieldInfo), in order."""
    for name, field in model.model_fields.items():
        nested = _model_in(field.annotation)
        if nested is not None:
            yield from iter_fields(nested, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def all_keys(schemas: dict[str, type[BaseModel]]) -> list[str]:
    """Every dotted key (groups and leaves) of every section, e.g. ``teacher_sam_lora.lora.r``."""
    keys: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            keys.append(f"{prefix}{name}")
            nested = _model_in(field.annotation)
            if nested is not None:
                walk(nested, f"{prefix}{name}.")

    for section, model in schemas.items():
        walk(model, f"{section}.")
    return keys


def suggest(word: str, choices: Sequence[str], cutoff: float = 0.6) -> str | None:
    """The closest valid choice to ``word`` (difflib), or None."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def unknown_key_error(
    key: str, siblings: Sequence[str], schemas: dict[str, type[BaseModel]], suffix: str = ""
) -> ConfigError:
    """ConfigError for an unknown dotted ``key``, suggesting the nearest valid key.

    ``siblings`` are the valid names at the same level. Misspellings are matched against them;
    failing that, a key that exists under the same name in another section is suggested (a common
    slip: ``student.lr`` for ``training_dynamics.lr``); failing that, the valid names are listed.
    """
    parent, _, leaf = key.rpartition(".")
    close = suggest(leaf, siblings)
    if close is not None:
        return ConfigError(f"unknown config key '{key}' — did you mean '{parent}.{close}'?{suffix}")
    elsewhere = [k for k in all_keys(schemas) if k.rpartition(".")[2] == leaf and k != key]
    if elsewhere:
        return ConfigError(f"unknown config key '{key}' — did you mean '{elsewhere[0]}'?{suffix}")
    listed = ", ".join(siblings)
    return ConfigError(f"unknown config key '{key}'{suffix}", f"valid keys in '{parent}': {listed}")


def unknown_section_error(section: str, valid: Sequence[str], what: str = "config section") -> ConfigError:
    """ConfigError for an unknown section name, with the nearest valid one."""
    close = suggest(section, valid)
    if close is not None:
        return ConfigError(f"unknown {what} '{section}' — did you mean '{close}'?")
    return ConfigError(f"unknown {what} '{section}'", f"valid sections: {', '.join(valid)}")


# --------------------------------------------------------------------------------------------------
# ValidationError → one line


def _resolve(model: type[BaseModel], loc: Sequence[Any]) -> tuple[list[str], type[BaseModel], FieldInfo | None]:
    """Follow ``loc`` through nested models.

    Returns the key parts that name real fields, the model owning the last of them and its
    FieldInfo (None when ``loc`` is empty: an error about the model as a whole).
    """
    parts: list[str] = []
    owner = model
    field: FieldInfo | None = None
    current: type[BaseModel] | None = model
    for item in loc:
        if current is None or not isinstance(item, str) or item not in current.model_fields:
            break
        owner = current
        field = current.model_fields[item]
        parts.append(item)
        current = _model_in(field.annotation)
    return parts, owner, field


def _lookup(data: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _clean_message(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def validation_error_to_config_error(
    exc: ValidationError,
    section: str,
    model: type[BaseModel],
    data: Any,
    schemas: dict[str, type[BaseModel]],
) -> ConfigError:
    """Turn a section's ValidationError into one ConfigError line.

    Unknown keys are reported first (a typo also leaves the intended key at its default, so it is
    the root cause); otherwise the first problem in schema order. ``data`` is the dict that was
    validated, used to show the offending value.
    """
    errors = exc.errors(include_url=False)
    errors.sort(key=lambda e: 0 if e["type"] == "extra_forbidden" else 1)
    first = errors[0]
    # Count distinct keys, not errors: each member of a union type reports its own error.
    more = len({_error_key(model, e) for e in errors}) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''} in '{section}')" if more > 0 else ""

    loc = list(first["loc"])
    parts, _, field = _resolve(model, loc)
    key = ".".join([section, *parts])

    if first["type"] == "extra_forbidden":
        bad = ".".join([section, *parts, str(loc[len(parts)])])
        return unknown_key_error(bad, list(owner_for(model, parts).model_fields), schemas, suffix)
    if first["type"] == "missing" and field is not None and len(parts) == len(loc):
        return ConfigError(
            f"config key '{key}' is missing{suffix}",
            "the shipped defaults lack it: reinstall distillkit or set it with --set",
        )
    if field is None:  # a model-level check (several keys together)
        return ConfigError(f"invalid configuration in '{section}': {_clean_message(first['msg'])}{suffix}")

    value = _lookup(data, parts)
    if first["type"] in ("value_error", "assertion_error"):
        reason = _clean_message(first["msg"])
    else:
        reason = f"expected {describe_field(field)}"
    return ConfigError(f"invalid value for '{key}': {show_value(value)} ({reason}){suffix}")


def _error_key(model: type[BaseModel], error: Any) -> tuple[str, ...]:
    loc = list(error["loc"])
    parts, _, _ = _resolve(model, loc)
    if error["type"] == "extra_forbidden" and len(loc) > len(parts):
        return (*parts, str(loc[len(parts)]))
    return tuple(parts)


def owner_for(model: type[BaseModel], parts: Sequence[str]) -> type[BaseModel]:
    """The (nested) model that holds the keys under ``parts``."""
    current = model
    for part in parts:
        nested = _model_in(current.model_fields[part].annotation)
        if nested is None:
            break
        current = nested
    return current
