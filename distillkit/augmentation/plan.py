"""Turn characteristics + environment + intensity into a concrete, merged list of transforms.

``describe_pipeline`` is pure bookkeeping (no image library): it resolves the names, collects the
requests of every recipe, merges requests for the same transform into one step and scales it to the
intensity. Merging keeps the widest wish: ranges become their envelope, probabilities and scalar
magnitudes their maximum, and parameters asked by only one source are kept; fixed settings (border
mode, fill) agree across recipes by construction, and the first one wins otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from distillkit.augmentation.names import (
    CHARACTERISTICS,
    ENVIRONMENT_OPTIONS,
    INTENSITIES,
    NEUTRAL_ENVIRONMENT,
    unknown_name_message,
)
from distillkit.augmentation.registry import (
    CHARACTERISTIC_RECIPES,
    ENVIRONMENT_RECIPES,
    INTENSITY_POSITION,
    TRANSFORM_ORDER,
    Request,
    Span,
)
from distillkit.errors import ConfigError


@dataclass(frozen=True)
class TransformStep:
    """One albumentations transform of the pipeline, with the sources that asked for it."""

    name: str
    p: float
    params: dict[str, Any]
    sources: tuple[str, ...]
    group: str | None  # steps sharing a group are alternatives: one of them per image

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "p": self.p,
            "params": {key: list(value) if isinstance(value, tuple) else value for key, value in self.params.items()},
            "sources": list(self.sources),
            "group": self.group,
        }


@dataclass(frozen=True)
class PipelinePlan:
    """What a pipeline applies, in order; empty for intensity ``none`` or nothing requested."""

    characteristics: tuple[str, ...]
    environment: dict[str, str]
    intensity: str
    steps: tuple[TransformStep, ...]

    @property
    def is_empty(self) -> bool:
        return not self.steps

    def step(self, name: str) -> TransformStep | None:
        return next((step for step in self.steps if step.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "characteristics": list(self.characteristics),
            "environment": dict(self.environment),
            "intensity": self.intensity,
            "steps": [step.to_dict() for step in self.steps],
        }


def resolve_characteristics(characteristics: Iterable[str]) -> tuple[str, ...]:
    """Validated names in registry order, each once; ConfigError naming the nearest valid one."""
    if isinstance(characteristics, str):  # a lone name, not a sequence of letters
        characteristics = [characteristics]
    wanted: set[str] = set()
    for name in characteristics:
        if name not in CHARACTERISTICS:
            raise ConfigError(unknown_name_message("characteristic", name, CHARACTERISTICS))
        wanted.add(name)
    return tuple(name for name in CHARACTERISTICS if name in wanted)


def resolve_environment(environment: Mapping[str, str] | Any | None) -> dict[str, str]:
    """Every factor with its option; factors left out are neutral (stable, fixed, clean, fixed)."""
    if environment is None:
        given: Mapping[str, Any] = {}
    elif isinstance(environment, Mapping):
        given = environment
    elif hasattr(environment, "model_dump"):  # the config's EnvironmentConfig
        given = environment.model_dump()
    else:
        kind = type(environment).__name__
        raise ConfigError(f"environment must be a mapping like {{'lighting': 'poor'}}, got {kind}")
    resolved = dict(NEUTRAL_ENVIRONMENT)
    for factor, option in given.items():
        if factor not in ENVIRONMENT_OPTIONS:
            raise ConfigError(unknown_name_message("environment factor", factor, list(ENVIRONMENT_OPTIONS)))
        if option not in ENVIRONMENT_OPTIONS[factor]:
            raise ConfigError(unknown_name_message(factor, option, ENVIRONMENT_OPTIONS[factor]))
        resolved[factor] = option
    return resolved


def resolve_intensity(intensity: str) -> str:
    if intensity not in INTENSITIES:
        raise ConfigError(unknown_name_message("intensity", intensity, INTENSITIES))
    return intensity


def describe_pipeline(
    characteristics: Iterable[str] = (),
    environment: Mapping[str, str] | Any | None = None,
    intensity: str = "medium",
) -> PipelinePlan:
    """The transforms (types, probabilities, parameters) ``build_pipeline`` would apply, without building them."""
    names = resolve_characteristics(characteristics)
    conditions = resolve_environment(environment)
    level = resolve_intensity(intensity)
    if level == "none":
        return PipelinePlan(names, conditions, level, ())

    requests: list[tuple[str, Request]] = [
        (name, request) for name in names for request in CHARACTERISTIC_RECIPES[name].requests
    ]
    for factor, option in conditions.items():
        requests += [(f"{factor}={option}", request) for request in ENVIRONMENT_RECIPES[factor][option].requests]

    position = INTENSITY_POSITION[level]
    by_transform: dict[str, list[tuple[str, Request]]] = {}
    for source, request in requests:
        by_transform.setdefault(request.transform, []).append((source, request))
    steps = [_merge(name, wanted, position) for name, wanted in by_transform.items()]
    steps.sort(key=lambda step: (TRANSFORM_ORDER[step.name].stage, step.name))
    return PipelinePlan(names, conditions, level, tuple(steps))


def _merge(name: str, wanted: list[tuple[str, Request]], position: float) -> TransformStep:
    p = max(float(_scaled(request.p, position)) for _, request in wanted)
    params: dict[str, Any] = {}
    for _, request in wanted:
        for key, raw in request.params.items():
            value = _scaled(raw, position)
            params[key] = _widest(params[key], value) if key in params else value
    sources = tuple(dict.fromkeys(source for source, _ in wanted))
    return TransformStep(name, round(p, 4), params, sources, TRANSFORM_ORDER[name].group)


def _scaled(value: Any, position: float) -> Any:
    return value.at(position) if isinstance(value, Span) else value


def _is_range(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value)


def _widest(current: Any, new: Any) -> Any:
    """The merge of two wishes for one parameter: range envelope, larger scalar, else the first."""
    if _is_range(current) and _is_range(new):
        return (min(current[0], new[0]), max(current[1], new[1]))
    numeric = (int, float)
    if isinstance(current, numeric) and isinstance(new, numeric) and not isinstance(current, bool):
        return max(current, new)
    return current
