"""`infer` for classifiers: per-image classes and probabilities (JSON), optional Grad-CAM++ overlays."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.classify.predict import check_compatible, image_records, predict_paths
from distillkit.classify.research.uncertainty import add_uncertainty
from distillkit.classify.runtime import open_classifier
from distillkit.classify.thresholds import DecisionThresholds
from distillkit.errors import UsageError
from distillkit.io import atomic_write_json
from distillkit.paths import check_output_apart_from_files
from distillkit.progress import NULL_PROGRESS, Progress

PathLike = str | os.PathLike[str]


@dataclass
class ClassifierInference:
    """Per-image results of one model or an ensemble."""

    models: list[str]
    class_names: list[str]
    multi_label: bool
    records: list[dict[str, Any]]
    median_latency_ms: float
    predictions: Path | None = None
    gradcam: list[Path] = field(default_factory=list)
    thresholds: DecisionThresholds | None = None  # multi-label: the per-class cuts applied
    notices: list[str] = field(default_factory=list)  # e.g. an evidential ONNX exported before its flag was stored

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {name: 0 for name in self.class_names}
        for record in self.records:
            for name in record["classes"]:
                counts[name] += 1
        notices = {"notices": list(self.notices)} if self.notices else {}
        return {
            "task": "classify",
            "models": self.models,
            "images": len(self.records),
            "multi_label": self.multi_label,
            "predicted_per_class": counts,
            "predictions": str(self.predictions) if self.predictions else None,
            "gradcam": [str(p) for p in self.gradcam],
            "median_latency_ms": round(self.median_latency_ms, 3),
            "thresholds": self.thresholds.to_dict(self.class_names) if self.thresholds is not None else None,
            **notices,
        }


def classify_images(
    models: Sequence[PathLike],
    images: Sequence[Path],
    output: PathLike | None = None,
    batch_size: int = 16,
    device: str | None = None,
    tta: Sequence[str] = (),
    topk: int = 5,
    threshold: float | None = None,
    gradcam_dir: PathLike | None = None,
    progress: Progress = NULL_PROGRESS,
) -> ClassifierInference:
    """Classify ``images``; with ``output`` write ``OUTPUT/predictions.json`` (a list of per-image records)."""
    runtimes = [open_classifier(path, device) for path in models]
    check_compatible(runtimes)
    if gradcam_dir is not None:  # checked before any work is done
        if runtimes[0].loaded is None:
            raise UsageError("Grad-CAM needs a torch checkpoint (.pt), not an ONNX file", "pass the best.pt as --model")
        check_output_apart_from_files(gradcam_dir, images, "--gradcam")
    outputs = [predict_paths(r, images, batch_size=batch_size, tta=tta, progress=progress) for r in runtimes]
    probabilities = np.mean([o.probabilities for o in outputs], axis=0)
    reference = runtimes[0]
    # Multi-label: the first model's per-class thresholds (tuned when stored), or --threshold for every class.
    decision = reference.decision(threshold)
    records = image_records(images, probabilities, reference.class_names, reference.multi_label, decision.values, topk)
    add_uncertainty(records, outputs)  # evidential models: u = K / S per image (classify/research)
    result = ClassifierInference(
        models=[str(r.path) for r in runtimes],
        class_names=list(reference.class_names),
        multi_label=reference.multi_label,
        records=records,
        median_latency_ms=float(np.median([o.median_latency_ms for o in outputs])),
        thresholds=decision if reference.multi_label else None,
        notices=[note for runtime in runtimes for note in runtime.notes],
    )
    if output is not None:
        result.predictions = Path(output) / "predictions.json"
        atomic_write_json(result.predictions, records)
    if gradcam_dir is not None and reference.loaded is not None:
        from distillkit.classify.gradcam import write_gradcam_overlays

        chosen = [int(np.argmax(row)) for row in probabilities]
        result.gradcam = [
            r.overlay
            for r in write_gradcam_overlays(reference.loaded, images, Path(gradcam_dir), chosen, progress=progress)
        ]
    return result
