"""The one text prompt that names every class, and the map from its tokens back to classes.

Grounding DINO scores each query against every prompt token. All class phrases go into a single
prompt (``"scratch . dent . ear of bag ."``) so one forward pass scores every class; the phrase
index is the class index. The model itself splits the prompt at its delimiter tokens ([CLS],
[SEP], ``.``, ``?``, [PAD]), so a phrase must not contain ``.`` or ``?``: they are replaced by spaces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from distillkit.errors import UsageError

_DELIMITERS = re.compile(r"[.?]")


@dataclass(frozen=True)
class ClassPrompt:
    """The prompt text and the phrase of each class (phrase i describes class i)."""

    class_names: tuple[str, ...]
    phrases: tuple[str, ...]

    @property
    def text(self) -> str:
        return " . ".join(self.phrases) + " ."

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "phrases": dict(zip(self.class_names, self.phrases, strict=True))}


def _clean(phrase: str) -> str:
    return " ".join(_DELIMITERS.sub(" ", phrase).replace("_", " ").split())


def build_prompt(class_names: Sequence[str], prompts: Mapping[str, str] | None = None) -> ClassPrompt:
    """One phrase per class: ``prompts[name]`` when given, else the class name (``_`` read as a space)."""
    prompts = prompts or {}
    phrases = []
    for name in class_names:
        phrase = _clean(prompts.get(name, name))
        if not phrase:
            raise UsageError(
                f"class '{name}' gives an empty Grounding DINO prompt phrase",
                f"set --set teacher_grounding_dino_lora.prompts='{{{name}: words describing it}}'",
            )
        phrases.append(phrase)
    return ClassPrompt(tuple(class_names), tuple(phrases))


def check_prompt_length(num_tokens: int, budget: int, num_classes: int) -> None:
    """The prompt must fit the model's text length, or classes past the end would never be scored."""
    if num_tokens > budget:
        raise UsageError(
            f"the Grounding DINO prompt for {num_classes} classes is {num_tokens} tokens but the model takes {budget}",
            "shorten the phrases with --set teacher_grounding_dino_lora.prompts='{name: short phrase}'",
        )


def phrase_token_maps(input_ids: torch.Tensor, text_len: int, num_classes: int) -> torch.Tensor:
    """(B, num_classes, text_len) float maps: 1 on the tokens of each class phrase, 0 elsewhere.

    The same segmentation the model's loss uses (``build_label_maps``), so the class of a phrase at
    training time is the class read back at prediction time.
    """
    from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps

    dummy = input_ids.new_zeros((input_ids.shape[0], 1, text_len), dtype=torch.float32)
    maps = build_label_maps(dummy, input_ids)
    for item in maps:
        if item.shape[0] != num_classes:
            raise UsageError(
                f"the prompt splits into {item.shape[0]} phrases for {num_classes} classes",
                "check teacher_grounding_dino_lora.prompts for phrases the tokenizer drops",
            )
    return torch.stack([item.to(torch.float32) for item in maps])
