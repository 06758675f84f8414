"""`evaluate` for classifiers: one or several models (an ensemble) scored on a labelled source.

Each model runs at its own input size and normalisation, with optional test-time augmentation; an
ensemble averages the models' calibrated probabilities. Reported: accuracy, top-k, ECE (with the
reliability diagram; also before temperature scaling when the checkpoint has a temperature),
per-class precision/recall/F1, macro and micro averages, and for multi-label data hamming loss,
subset accuracy and the per-class thresholds that would maximise F1. Multi-label decisions use the
first model's per-class thresholds (the tuned ones when its checkpoint stores them) unless one
``threshold`` is given for every class; ``decision_thresholds`` in the document says which.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.classify.metrics import ClassificationMetrics, classification_metrics
from distillkit.classify.predict import ModelPredictions, check_compatible, check_tta, predict_paths
from distillkit.classify.research.uncertainty import uncertainty_report
from distillkit.classify.runtime import open_classifier
from distillkit.classify.sources import load_classification_data
from distillkit.classify.thresholds import DecisionThresholds
from distillkit.errors import UsageError
from distillkit.io import atomic_write_json, atomic_write_text
from distillkit.progress import NULL_PROGRESS, Progress

PathLike = str | os.PathLike[str]


@dataclass
class ModelSummary:
    """One model of the evaluation, alone."""

    model: str
    kind: str  # torch | onnx | openvino | tflite
    accuracy: float
    macro_f1: float
    ece: float
    ece_uncalibrated: float
    temperature: float
    median_latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ClassifierEvaluation:
    """The result of ``evaluate_classifiers``: ensemble (or single-model) metrics plus each model's."""

    data: Path
    class_names: list[str]
    multi_label: bool
    metrics: ClassificationMetrics
    models: list[ModelSummary]
    tta: list[str]
    ece_uncalibrated: float
    paths: list[Path] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    targets: np.ndarray | None = None
    uncertainty: dict[str, Any] | None = None  # evidential models: u = K / S against errors (classify/research)
    thresholds: DecisionThresholds | None = None  # multi-label: the per-class cuts applied and their source
    notices: list[str] = field(default_factory=list)  # e.g. an evidential ONNX exported before its flag was stored

    def to_dict(self) -> dict[str, Any]:
        document = self.metrics.to_dict()
        if self.uncertainty is not None:
            document["uncertainty"] = self.uncertainty
        document.update(
            data=str(self.data),
            class_names=self.class_names,
            ensemble=len(self.models) > 1,
            tta=self.tta,
            ece_uncalibrated=self.ece_uncalibrated,
            models=[m.to_dict() for m in self.models],
        )
        if self.thresholds is not None:
            document["decision_thresholds"] = self.thresholds.to_dict(self.class_names)
        if self.notices:
            document["notices"] = list(self.notices)
        return document


def evaluate_classifiers(
    models: Sequence[PathLike],
    data: PathLike,
    images_dir: PathLike | None = None,
    batch_size: int = 32,
    device: str | None = None,
    tta: Sequence[str] = (),
    topk: Sequence[int] | None = None,
    threshold: float | None = None,
    progress: Progress = NULL_PROGRESS,
) -> ClassifierEvaluation:
    """Score ``models`` (classifier .pt files or their ONNX / OpenVINO / .tflite exports) on ``data`` (any source)."""
    if not models:
        raise UsageError("no model to evaluate", "pass --model best.pt (repeatable for an ensemble)")
    transforms = check_tta(tta)
    runtimes = [open_classifier(path, device) for path in models]
    check_compatible(runtimes)
    reference = runtimes[0]
    labelled = load_classification_data(data, images_dir).aligned_to(reference.class_names)
    # Multi-label: the first model's per-class thresholds (tuned when stored), or --threshold for every class.
    decision = reference.decision(threshold)
    cut = decision.values
    if topk is None:
        topk = _default_topk()
    outputs: list[ModelPredictions] = [
        predict_paths(runtime, labelled.paths, batch_size=batch_size, tta=transforms, progress=progress)
        for runtime in runtimes
    ]
    names, multi = reference.class_names, reference.multi_label
    summaries = []
    for output in outputs:
        alone = classification_metrics(output.probabilities, labelled.targets, names, multi, topk, cut)
        raw = classification_metrics(output.uncalibrated, labelled.targets, names, multi, topk, cut)
        summaries.append(
            ModelSummary(
                model=str(output.runtime.path),
                kind=output.runtime.kind,
                accuracy=alone.accuracy,
                macro_f1=alone.macro_f1,
                ece=alone.ece,
                ece_uncalibrated=raw.ece,
                temperature=output.runtime.temperature,
                median_latency_ms=output.median_latency_ms,
            )
        )
    probabilities = np.mean([o.probabilities for o in outputs], axis=0)
    uncalibrated = np.mean([o.uncalibrated for o in outputs], axis=0)
    metrics = classification_metrics(probabilities, labelled.targets, names, multi, topk, cut)
    before = classification_metrics(uncalibrated, labelled.targets, names, multi, topk, cut).ece
    return ClassifierEvaluation(
        data=Path(data),
        class_names=list(names),
        multi_label=multi,
        metrics=metrics,
        models=summaries,
        tta=transforms,
        ece_uncalibrated=before,
        paths=list(labelled.paths),
        probabilities=probabilities,
        targets=labelled.targets,
        uncertainty=None if multi else uncertainty_report(outputs, probabilities, labelled.targets),
        thresholds=decision if multi else None,
        notices=[note for runtime in runtimes for note in runtime.notes],
    )


def _default_topk() -> list[int]:
    from distillkit.config import section_defaults

    return list(section_defaults("classifier").topk)  # type: ignore[attr-defined]


def write_classifier_evaluation(evaluation: ClassifierEvaluation, output: PathLike) -> dict[str, Path]:
    """metrics.json, per_class.csv, confusion_matrix.csv/.png, reliability.png, predictions.csv in ``output``."""
    from distillkit.classify.plots import plot_confusion, plot_multilabel_confusion, plot_reliability

    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = evaluation.metrics
    written: dict[str, Path] = {}
    written["metrics"] = folder / "metrics.json"
    atomic_write_json(written["metrics"], evaluation.to_dict())
    written["per_class"] = folder / "per_class.csv"
    atomic_write_text(written["per_class"], _per_class_csv(metrics))
    written["confusion_csv"] = folder / "confusion_matrix.csv"
    atomic_write_text(written["confusion_csv"], _confusion_csv(metrics, evaluation.class_names))
    if metrics.multi_label:
        written["confusion_png"] = plot_multilabel_confusion(
            metrics.confusion, evaluation.class_names, folder / "confusion_matrix.png"
        )
    else:
        written["confusion_png"] = plot_confusion(
            metrics.confusion, evaluation.class_names, folder / "confusion_matrix.png"
        )
    written["reliability"] = plot_reliability(metrics.reliability, metrics.ece, folder / "reliability.png")
    if evaluation.probabilities is not None and evaluation.targets is not None:
        written["predictions"] = folder / "predictions.csv"
        atomic_write_text(written["predictions"], _predictions_csv(evaluation))
    return written


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _per_class_csv(metrics: ClassificationMetrics) -> str:
    header = ["class", "precision", "recall", "f1", "support", "predicted"]
    if metrics.multi_label:
        header += ["best_threshold", "best_f1"]
    rows: list[list[Any]] = [header]
    for c in metrics.per_class:
        row: list[Any] = [c.name, f"{c.precision:.6f}", f"{c.recall:.6f}", f"{c.f1:.6f}", c.support, c.predicted]
        if metrics.multi_label:
            row += [f"{c.best_threshold:.6f}", f"{c.best_f1:.6f}"]
        rows.append(row)
    return _csv_text(rows)


def _confusion_csv(metrics: ClassificationMetrics, names: list[str]) -> str:
    if metrics.multi_label:
        rows: list[list[Any]] = [["class", "tp", "fp", "fn", "tn"]]
        for name, m in zip(names, metrics.confusion, strict=True):
            rows.append([name, int(m[1, 1]), int(m[0, 1]), int(m[1, 0]), int(m[0, 0])])
        return _csv_text(rows)
    rows = [["true \\ predicted", *names]]
    rows += [[name, *(int(v) for v in row)] for name, row in zip(names, metrics.confusion, strict=True)]
    return _csv_text(rows)


def _predictions_csv(evaluation: ClassifierEvaluation) -> str:
    assert evaluation.probabilities is not None and evaluation.targets is not None
    names = evaluation.class_names
    rows: list[list[Any]] = [["file", "true", "predicted", *names]]
    cut = evaluation.metrics.thresholds or [0.5] * len(names)
    for path, probs, truth in zip(evaluation.paths, evaluation.probabilities, evaluation.targets, strict=True):
        if evaluation.multi_label:
            true = " ".join(n for n, t in zip(names, truth, strict=True) if t > 0)
            predicted = " ".join(n for n, p, c in zip(names, probs, cut, strict=True) if p >= c)
        else:
            true, predicted = names[int(np.argmax(truth))], names[int(np.argmax(probs))]
        rows.append([str(path), true, predicted, *(f"{p:.6f}" for p in probs)])
    return _csv_text(rows)
