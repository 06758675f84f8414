"""The vocabulary of characteristic-based augmentation: names users may write, and their meaning.

This module is the single source of the valid names: the config schema types its fields with the
``Literal`` aliases below, and the planner resolves user input against the tuples. It imports no
image library, so the config layer can use it without paying for albumentations' import.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Literal, get_args

Characteristic = Literal[
    "changes_shape",
    "changes_size",
    "reflective_surface",
    "low_contrast",
    "moves_or_vibrates",
    "semi_transparent",
    "similar_to_background",
    "multiple_objects",
    "partially_hidden",
]
Lighting = Literal["stable", "variable", "poor"]
Camera = Literal["fixed", "moving", "shaky"]
Background = Literal["clean", "busy", "changing"]
Distance = Literal["fixed", "variable", "close"]
Intensity = Literal["none", "low", "medium", "high"]

CHARACTERISTICS: tuple[str, ...] = get_args(Characteristic)
ENVIRONMENT_OPTIONS: dict[str, tuple[str, ...]] = {
    "lighting": get_args(Lighting),
    "camera": get_args(Camera),
    "background": get_args(Background),
    "distance": get_args(Distance),
}
#: The option of each environment factor that asks for nothing (a controlled setting).
NEUTRAL_ENVIRONMENT: dict[str, str] = {
    "lighting": "stable",
    "camera": "fixed",
    "background": "clean",
    "distance": "fixed",
}
INTENSITIES: tuple[str, ...] = get_args(Intensity)

CHARACTERISTIC_DESCRIPTIONS: dict[str, str] = {
    "changes_shape": "parts bend, sag or deform (bags, cables, rubber, food)",
    "changes_size": "the same kind of part comes in several sizes",
    "reflective_surface": "shiny metal, glass or plastic: glare and highlights",
    "low_contrast": "objects barely stand out in brightness from their surroundings",
    "moves_or_vibrates": "parts move on a belt or vibrate while the picture is taken",
    "semi_transparent": "see-through or translucent parts that take the colour behind them",
    "similar_to_background": "objects share colour or texture with the background",
    "multiple_objects": "several objects per image, anywhere in the frame",
    "partially_hidden": "objects are often partly covered by others, hands or fixtures",
}
ENVIRONMENT_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "lighting": {
        "stable": "controlled, constant light",
        "variable": "daylight, shifts or several lamps: brightness and colour temperature change",
        "poor": "dim light: dark, noisy images",
    },
    "camera": {
        "fixed": "mounted camera, fixed viewpoint",
        "moving": "the camera moves (robot arm, handheld): small viewpoint changes and motion blur",
        "shaky": "vibration or unsteady hands: strong blur and tilt",
    },
    "background": {
        "clean": "plain, constant background",
        "busy": "cluttered background with other things in view",
        "changing": "the background changes colour, texture or shadows between images",
    },
    "distance": {
        "fixed": "constant camera-to-object distance",
        "variable": "objects appear nearer or farther: scale changes",
        "close": "macro / close-up: objects large, shallow depth of field, lens distortion",
    },
}
INTENSITY_DESCRIPTIONS: dict[str, str] = {
    "none": "no augmentation from this section",
    "low": "narrow ranges, applied rarely",
    "medium": "moderate ranges and probabilities",
    "high": "wide ranges, applied often",
}


def unknown_name_message(kind: str, name: object, valid: Sequence[str]) -> str:
    """'unknown lighting 'por' — did you mean 'poor'? Valid: stable, variable, poor'."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5) if isinstance(name, str) else []
    hint = f" — did you mean '{close[0]}'?" if close else "."
    return f"unknown {kind} {name!r}{hint} Valid: {', '.join(valid)}"
