"""What each characteristic and environment condition asks of the augmentation pipeline.

Every entry is a list of ``Request``s: an albumentations transform name, the probability and the
parameters it wants, each given at the ``low`` and at the ``high`` intensity as a ``Span`` (``medium``
lies half-way). Ranges at ``low`` sit inside those at ``high`` and probabilities grow with intensity,
so a stronger setting never narrows anything. Parameters that are not a ``Span`` are fixed.

Ranges are relative to the image (fractions, percent, factors) wherever albumentations allows it, so
the same request suits a 64 px test image and a 4k inspection photo. The planner merges requests
for the same transform; ``TRANSFORM_ORDER`` fixes where each transform sits in the pipeline and
which ones are alternatives of each other (one blur at a time, not three stacked).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Number = float | int
Value = Number | tuple[Number, Number]

#: Position of each intensity between the ``low`` and ``high`` ends of a Span.
INTENSITY_POSITION: dict[str, float] = {"low": 0.0, "medium": 0.5, "high": 1.0}


@dataclass(frozen=True)
class Span:
    """A value (number or (min, max) range) that grows from ``low`` to ``high`` with intensity."""

    low: Value
    high: Value
    kind: Literal["float", "int", "odd"] = "float"  # odd: blur kernel sizes

    def at(self, position: float) -> Value:
        if isinstance(self.low, tuple) and isinstance(self.high, tuple):
            low_end = self._number(self.low[0] + position * (self.high[0] - self.low[0]))
            high_end = self._number(self.low[1] + position * (self.high[1] - self.low[1]))
            return (low_end, high_end)
        assert not isinstance(self.low, tuple) and not isinstance(self.high, tuple), "two numbers or two ranges"
        return self._number(self.low + position * (self.high - self.low))

    def _number(self, value: float) -> Number:
        if self.kind == "int":
            return round(value)
        if self.kind == "odd":  # round to the nearest odd integer, monotonic in value
            return 2 * math.floor(value / 2) + 1
        return round(float(value), 4)


@dataclass(frozen=True)
class Request:
    """One transform wanted by one characteristic or condition."""

    transform: str
    p: Span
    params: Mapping[str, Span | Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    description: str
    requests: tuple[Request, ...]


@dataclass(frozen=True)
class Placement:
    stage: int  # pipeline order: geometry, occlusion, light and colour, blur, noise
    group: str | None = None  # transforms of one group become a OneOf: at most one of them per image


TRANSFORM_ORDER: dict[str, Placement] = {
    "Affine": Placement(0),
    "Perspective": Placement(1),
    "ElasticTransform": Placement(2, "deformation"),
    "GridDistortion": Placement(2, "deformation"),
    "OpticalDistortion": Placement(2, "deformation"),
    "CoarseDropout": Placement(3),
    "RandomBrightnessContrast": Placement(4),
    "RandomGamma": Placement(5),
    "CLAHE": Placement(6),
    "HueSaturationValue": Placement(7),
    "PlanckianJitter": Placement(8),
    "RandomShadow": Placement(9),
    "RandomSunFlare": Placement(10),
    "MotionBlur": Placement(11, "blur"),
    "GaussianBlur": Placement(11, "blur"),
    "Defocus": Placement(11, "blur"),
    "GaussNoise": Placement(12, "noise"),
    "ISONoise": Placement(12, "noise"),
}


def _affine(p: Span, **params: Span) -> Request:
    # Constant black border, nearest-neighbour masks: a mirrored border would show unlabelled copies.
    return Request("Affine", p, {**params, "border_mode": 0, "fill": 0, "fill_mask": 0})


CHARACTERISTIC_RECIPES: dict[str, Recipe] = {
    "changes_shape": Recipe(
        "elastic and grid warps, shear",
        (
            Request("ElasticTransform", Span(0.15, 0.4), {"alpha": Span(60.0, 240.0), "sigma": 10.0}),
            Request("GridDistortion", Span(0.15, 0.4), {"distort_limit": Span((-0.1, 0.1), (-0.3, 0.3))}),
            _affine(Span(0.2, 0.5), shear=Span((-4.0, 4.0), (-12.0, 12.0))),
        ),
    ),
    "changes_size": Recipe(
        "scale jitter",
        (_affine(Span(0.3, 0.7), scale=Span((0.85, 1.15), (0.6, 1.5))),),
    ),
    "reflective_surface": Recipe(
        "brightness and gamma swings, sun-flare highlights, tone curves",
        (
            Request(
                "RandomBrightnessContrast",
                Span(0.2, 0.5),
                {"brightness_limit": Span((-0.1, 0.15), (-0.2, 0.4)), "contrast_limit": Span((-0.1, 0.1), (-0.2, 0.3))},
            ),
            Request("RandomGamma", Span(0.15, 0.4), {"gamma_limit": Span((85.0, 115.0), (65.0, 150.0))}),
            Request(
                "RandomSunFlare",
                Span(0.05, 0.2),
                {
                    "flare_roi": (0.0, 0.0, 1.0, 1.0),
                    "src_radius": 60,
                    "num_flare_circles_range": Span((1, 3), (1, 6), "int"),
                },
            ),
        ),
    ),
    "low_contrast": Recipe(
        "contrast changes, local histogram equalisation",
        (
            Request("RandomBrightnessContrast", Span(0.2, 0.5), {"contrast_limit": Span((-0.15, 0.15), (-0.35, 0.35))}),
            Request("CLAHE", Span(0.1, 0.35), {"clip_limit": Span((1.0, 2.0), (1.0, 4.0))}),
        ),
    ),
    "moves_or_vibrates": Recipe(
        "motion blur, small shifts",
        (
            Request("MotionBlur", Span(0.15, 0.45), {"blur_limit": Span((3, 5), (3, 11), "odd")}),
            _affine(Span(0.2, 0.5), translate_percent=Span((-0.03, 0.03), (-0.1, 0.1))),
        ),
    ),
    "semi_transparent": Recipe(
        "hue/saturation shifts, slight blur",
        (
            Request(
                "HueSaturationValue",
                Span(0.2, 0.5),
                {
                    "hue_shift_limit": Span((-5.0, 5.0), (-15.0, 15.0)),
                    "sat_shift_limit": Span((-10.0, 10.0), (-30.0, 30.0)),
                    "val_shift_limit": Span((-10.0, 10.0), (-20.0, 20.0)),
                },
            ),
            Request("GaussianBlur", Span(0.1, 0.3), {"sigma_limit": Span((0.3, 0.8), (0.3, 1.5))}),
        ),
    ),
    "similar_to_background": Recipe(
        "colour and contrast jitter, sensor noise",
        (
            Request(
                "HueSaturationValue",
                Span(0.2, 0.5),
                {
                    "hue_shift_limit": Span((-8.0, 8.0), (-20.0, 20.0)),
                    "sat_shift_limit": Span((-15.0, 15.0), (-35.0, 35.0)),
                },
            ),
            Request("RandomBrightnessContrast", Span(0.2, 0.5), {"contrast_limit": Span((-0.1, 0.1), (-0.3, 0.3))}),
            Request("GaussNoise", Span(0.1, 0.35), {"std_range": Span((0.01, 0.03), (0.02, 0.08))}),
        ),
    ),
    "multiple_objects": Recipe(
        "objects shifted anywhere in the frame",
        (_affine(Span(0.3, 0.6), translate_percent=Span((-0.05, 0.05), (-0.2, 0.2))),),
    ),
    "partially_hidden": Recipe(
        "random occluding patches (masks lose the hidden part)",
        (
            Request(
                "CoarseDropout",
                Span(0.2, 0.5),
                {
                    "num_holes_range": Span((1, 2), (1, 6), "int"),
                    "hole_height_range": Span((0.05, 0.12), (0.05, 0.25)),
                    "hole_width_range": Span((0.05, 0.12), (0.05, 0.25)),
                    "fill": "random_uniform",
                    "fill_mask": 0,
                },
            ),
        ),
    ),
}

ENVIRONMENT_RECIPES: dict[str, dict[str, Recipe]] = {
    "lighting": {
        "stable": Recipe("nothing", ()),
        "variable": Recipe(
            "brightness, contrast, gamma, colour temperature, shadows",
            (
                Request(
                    "RandomBrightnessContrast",
                    Span(0.3, 0.6),
                    {
                        "brightness_limit": Span((-0.1, 0.1), (-0.3, 0.3)),
                        "contrast_limit": Span((-0.1, 0.1), (-0.2, 0.2)),
                    },
                ),
                Request("RandomGamma", Span(0.2, 0.4), {"gamma_limit": Span((90.0, 110.0), (70.0, 140.0))}),
                Request("PlanckianJitter", Span(0.1, 0.3), {"mode": "blackbody"}),
                Request(
                    "RandomShadow",
                    Span(0.05, 0.25),
                    {"shadow_roi": (0.0, 0.0, 1.0, 1.0), "shadow_intensity_range": Span((0.2, 0.35), (0.2, 0.6))},
                ),
            ),
        ),
        "poor": Recipe(
            "darker images, gamma, sensor noise, local equalisation",
            (
                Request(
                    "RandomBrightnessContrast",
                    Span(0.3, 0.6),
                    {
                        "brightness_limit": Span((-0.2, 0.05), (-0.45, 0.1)),
                        "contrast_limit": Span((-0.2, 0.05), (-0.4, 0.1)),
                    },
                ),
                Request("RandomGamma", Span(0.2, 0.4), {"gamma_limit": Span((100.0, 130.0), (90.0, 180.0))}),
                Request("ISONoise", Span(0.15, 0.4), {"intensity": Span((0.05, 0.2), (0.1, 0.5))}),
                Request("GaussNoise", Span(0.15, 0.4), {"std_range": Span((0.01, 0.04), (0.02, 0.1))}),
                Request("CLAHE", Span(0.05, 0.2), {"clip_limit": Span((1.0, 2.0), (1.0, 4.0))}),
            ),
        ),
    },
    "camera": {
        "fixed": Recipe("nothing", ()),
        "moving": Recipe(
            "small shifts and rotations, perspective, motion blur",
            (
                _affine(
                    Span(0.3, 0.6),
                    translate_percent=Span((-0.03, 0.03), (-0.1, 0.1)),
                    rotate=Span((-3.0, 3.0), (-10.0, 10.0)),
                ),
                Request("Perspective", Span(0.1, 0.3), {"scale": Span((0.01, 0.03), (0.02, 0.08))}),
                Request("MotionBlur", Span(0.15, 0.4), {"blur_limit": Span((3, 5), (3, 9), "odd")}),
            ),
        ),
        "shaky": Recipe(
            "rotations and shifts, strong motion blur, defocus",
            (
                _affine(
                    Span(0.3, 0.6),
                    translate_percent=Span((-0.05, 0.05), (-0.12, 0.12)),
                    rotate=Span((-5.0, 5.0), (-15.0, 15.0)),
                ),
                Request("MotionBlur", Span(0.2, 0.5), {"blur_limit": Span((3, 7), (3, 15), "odd")}),
                Request("Defocus", Span(0.05, 0.2), {"radius": Span((1, 2), (1, 4), "int"), "alias_blur": (0.1, 0.3)}),
            ),
        ),
    },
    "background": {
        "clean": Recipe("nothing", ()),
        "busy": Recipe(
            "clutter-like patches, shadows, texture noise",
            (
                Request(
                    "CoarseDropout",
                    Span(0.1, 0.3),
                    {
                        "num_holes_range": Span((1, 3), (2, 8), "int"),
                        "hole_height_range": Span((0.03, 0.08), (0.03, 0.12)),
                        "hole_width_range": Span((0.03, 0.08), (0.03, 0.12)),
                        "fill": "random_uniform",
                        "fill_mask": 0,
                    },
                ),
                Request(
                    "RandomShadow",
                    Span(0.1, 0.3),
                    {"shadow_roi": (0.0, 0.0, 1.0, 1.0), "shadow_intensity_range": Span((0.2, 0.35), (0.2, 0.6))},
                ),
                Request("GaussNoise", Span(0.1, 0.3), {"std_range": Span((0.01, 0.03), (0.02, 0.06))}),
            ),
        ),
        "changing": Recipe(
            "hue and colour-temperature shifts, shadows",
            (
                Request(
                    "HueSaturationValue",
                    Span(0.3, 0.6),
                    {
                        "hue_shift_limit": Span((-10.0, 10.0), (-25.0, 25.0)),
                        "sat_shift_limit": Span((-15.0, 15.0), (-40.0, 40.0)),
                        "val_shift_limit": Span((-10.0, 10.0), (-25.0, 25.0)),
                    },
                ),
                Request("PlanckianJitter", Span(0.1, 0.3), {"mode": "blackbody"}),
                Request(
                    "RandomShadow",
                    Span(0.1, 0.3),
                    {"shadow_roi": (0.0, 0.0, 1.0, 1.0), "shadow_intensity_range": Span((0.2, 0.35), (0.2, 0.6))},
                ),
            ),
        ),
    },
    "distance": {
        "fixed": Recipe("nothing", ()),
        "variable": Recipe("scale jitter", (_affine(Span(0.3, 0.7), scale=Span((0.85, 1.15), (0.6, 1.5))),)),
        "close": Recipe(
            "zoom-in, defocus, lens distortion",
            (
                _affine(Span(0.3, 0.6), scale=Span((1.0, 1.2), (1.0, 1.6))),
                Request("Defocus", Span(0.1, 0.3), {"radius": Span((1, 2), (1, 5), "int"), "alias_blur": (0.1, 0.3)}),
                Request("OpticalDistortion", Span(0.1, 0.3), {"distort_limit": Span((-0.05, 0.05), (-0.2, 0.2))}),
            ),
        ),
    },
}


def recipe_sources() -> dict[str, Recipe]:
    """Every recipe keyed by its source name: ``changes_shape``, ``lighting=poor``, ..."""
    sources: dict[str, Recipe] = dict(CHARACTERISTIC_RECIPES)
    for factor, options in ENVIRONMENT_RECIPES.items():
        for option, recipe in options.items():
            sources[f"{factor}={option}"] = recipe
    return sources
