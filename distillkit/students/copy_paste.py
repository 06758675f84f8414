"""Copy-paste that favours rare classes (``augmentation.copy_paste_rare_classes``).

Ultralytics' ``CopyPaste`` in ``mixup`` mode pastes the objects of a *donor* image, drawn uniformly
from the training set, onto the current one. With ``copy_paste_rare_classes`` the donor is instead
drawn with probability proportional to the rarity of its rarest class (1 / that class's instance
count), so images holding under-represented classes donate their objects far more often and those
classes are seen pasted into many more backgrounds; images without polygons (nothing to paste)
never donate. The sampler replaces ``get_indexes`` on the training dataset's ``CopyPaste``
transform, the one place ultralytics picks the donor, so everything else (overlap rules, the paste
fraction ``copy_paste``, close-mosaic turning it off) stays ultralytics' own.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any


class RareClassDonors:
    """A picklable ``get_indexes``: a donor image index drawn with weight 1 / count(rarest class)."""

    def __init__(self, labels: Sequence[Mapping[str, Any]]) -> None:
        classes = [
            [int(c) for c in label["cls"].reshape(-1)] if len(label.get("segments", [])) else [] for label in labels
        ]
        counts = Counter(c for image in classes for c in image)
        self.weights = [max((1.0 / counts[c] for c in image), default=0.0) for image in classes]
        self.indexes = list(range(len(labels)))

    def __call__(self) -> int:
        if not any(self.weights):  # no image has anything to paste: ultralytics' own uniform choice
            return random.randint(0, len(self.indexes) - 1)
        # the ``random`` module: ultralytics seeds it in every data-loader worker
        return random.choices(self.indexes, weights=self.weights)[0]


def copy_paste_transforms(transform: Any) -> list[Any]:
    """Every ultralytics ``CopyPaste`` inside a (nested) ``Compose``."""
    from ultralytics.data.augment import CopyPaste

    found = []
    stack = [transform]
    while stack:
        item = stack.pop()
        if isinstance(item, CopyPaste):
            found.append(item)
        stack.extend(getattr(item, "transforms", None) or [])
        if getattr(item, "pre_transform", None) is not None:
            stack.append(item.pre_transform)
    return found


def install_rare_class_paste(dataset: Any) -> int:
    """Make the dataset's mixup-mode ``CopyPaste`` steps draw rare-class donors; returns how many."""
    pastes = [paste for paste in copy_paste_transforms(dataset.transforms) if paste.mode == "mixup"]
    if pastes:
        donors = RareClassDonors(dataset.labels)
        for paste in pastes:
            paste.get_indexes = donors
    return len(pastes)


def with_rare_class_paste(base: type) -> type:
    """``base`` (an ultralytics trainer class) whose training dataset pastes rare-class donors."""

    class RareClassPasteTrainer(base):  # type: ignore[misc, valid-type]
        def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
            dataset = super().build_dataset(img_path, mode, batch)
            if mode == "train":
                install_rare_class_paste(dataset)
            return dataset

    return RareClassPasteTrainer
