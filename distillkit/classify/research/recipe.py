"""The three-phase recipe, each phase one ``train_classifier`` run in its own folder under ``output``:

1. ``1_supcon``: supervised-contrastive warm start of the teacher (``classifier.supcon=true``; the
   head is trained alongside as a linear probe on the detached features).
2. ``2_finetune``: fine-tune from phase 1's ``best.pt`` with a margin head, EMA, a mixing strategy and
   the OneCycle schedule.
3. ``3_distill``: distil phase 2's model into a smaller student: KL on softened logits
   (``kd_alpha``, ``kd_temperature``), feature MSE (``feature_weight``) and a focal or evidential
   hard loss.

Common overrides go to every phase; ``teacher_overrides`` only to phases 1-2 (e.g. the hybrid
backbone), ``student_overrides`` only to phase 3. The same sequence as three CLI commands is in the
README (``#### Research techniques``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillkit.config import ConfigOverrides, as_overrides, typed_override
from distillkit.progress import NULL_PROGRESS, Progress

PathLike = str | os.PathLike[str]

SUPCON_DEFAULTS = {"classifier.supcon": True, "classifier.calibrate": False}
FINETUNE_DEFAULTS = {
    "classifier.head": "arcface",
    "classifier.mixing": "mixup",
    "classifier.mixing_alpha": 0.2,
    "training_dynamics.ema.enabled": True,
    "training_dynamics.scheduler": "onecycle",
}
DISTILL_DEFAULTS = {"classifier.loss": "focal", "classifier.feature_weight": 1.0, "classifier.kd_alpha": 0.7}


@dataclass
class RecipeResult:
    supcon: Any  # ClassifierTrainingResult of each phase
    finetune: Any
    distill: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "supcon": self.supcon.to_dict(),
            "finetune": self.finetune.to_dict(),
            "distill": self.distill.to_dict(),
        }


def run_three_phase_recipe(
    data: PathLike,
    output: PathLike,
    student_model: str,
    val: PathLike | None = None,
    overrides: ConfigOverrides = (),
    teacher_overrides: ConfigOverrides = (),
    student_overrides: ConfigOverrides = (),
    images_dir: PathLike | None = None,
    progress: Progress = NULL_PROGRESS,
) -> RecipeResult:
    """SupCon warm start -> margin-head fine-tune -> distillation; see the module docstring.

    Later settings win, so any default of a phase can be overridden through the override lists.
    """
    from distillkit.classify.train import train_classifier

    root = Path(output)
    common = dict(val=val, images_dir=images_dir, progress=progress)
    shared, teacher_only, student_only = (as_overrides(o) for o in (overrides, teacher_overrides, student_overrides))
    supcon = train_classifier(
        data, root / "1_supcon", overrides=[*as_overrides(SUPCON_DEFAULTS), *shared, *teacher_only], **common
    )
    start = typed_override("classifier.model", supcon.best.as_posix())
    finetune = train_classifier(
        data, root / "2_finetune", overrides=[*as_overrides(FINETUNE_DEFAULTS), *shared, *teacher_only, start], **common
    )
    student = typed_override("classifier.model", student_model)
    distill = train_classifier(
        data,
        root / "3_distill",
        teacher=finetune.best,
        overrides=[*as_overrides(DISTILL_DEFAULTS), *shared, student, *student_only],
        **common,
    )
    return RecipeResult(supcon, finetune, distill)
