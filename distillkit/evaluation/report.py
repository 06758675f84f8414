"""Writing an evaluation to a folder: metrics.json, per_class.csv and the plots."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from distillkit.evaluation.coco_metrics import EvaluationResult
from distillkit.evaluation.plots import plot_confusion_matrix, plot_pr_curves
from distillkit.io import atomic_write_json, atomic_write_text

PER_CLASS_COLUMNS = (
    "iou_type",
    "class_id",
    "class_name",
    "gt_instances",
    "detections",
    "AP",
    "AP50",
    "AP75",
    "precision",
    "recall",
    "f1",
)


def write_evaluation(result: EvaluationResult, output_dir: str | Path) -> dict[str, Path]:
    """Write every artefact of ``result`` into ``output_dir``; return name -> path."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    atomic_write_json(folder / "metrics.json", result.to_dict())
    written["metrics"] = folder / "metrics.json"

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(PER_CLASS_COLUMNS)
    for iou_type, metrics in result.metrics.items():
        for c in metrics.per_class:
            writer.writerow(
                [
                    iou_type,
                    c.id,
                    c.name,
                    c.gt_instances,
                    c.detections,
                    f"{c.AP:.6f}",
                    f"{c.AP50:.6f}",
                    f"{c.AP75:.6f}",
                    f"{c.precision:.6f}",
                    f"{c.recall:.6f}",
                    f"{c.f1:.6f}",
                ]
            )
    atomic_write_text(folder / "per_class.csv", buffer.getvalue())
    written["per_class"] = folder / "per_class.csv"

    for iou_type, metrics in result.metrics.items():
        written[f"pr_curve_{iou_type}"] = plot_pr_curves(
            metrics, result.class_names, folder / f"pr_curve_{iou_type}.png"
        )
        written[f"confusion_matrix_{iou_type}"] = plot_confusion_matrix(
            metrics, result.class_names, folder / f"confusion_matrix_{iou_type}.png"
        )
    return written
