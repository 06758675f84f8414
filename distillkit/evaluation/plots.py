"""PR curves and confusion matrices as PNG files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distillkit.evaluation.coco_metrics import IouTypeMetrics
from distillkit.io import atomic_open


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(metrics: IouTypeMetrics, class_names: dict[int, str], path: Path) -> Path:
    """Precision against recall at IoU 0.5 per class (thin) and their mean (bold)."""
    plt = _pyplot()
    recall = np.linspace(0.0, 1.0, 101)
    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    valid_curves = []
    for class_id, curve in metrics.pr_curves.items():
        if (curve < 0).all():
            continue  # no ground truth of this class
        curve = np.where(curve < 0, 0.0, curve)
        valid_curves.append(curve)
        ap50 = next((c.AP50 for c in metrics.per_class if c.id == class_id), float("nan"))
        label = f"{class_names.get(class_id, class_id)} {ap50:.3f}" if len(metrics.pr_curves) <= 20 else None
        axes.plot(recall, curve, linewidth=1, alpha=0.7, label=label)
    if valid_curves:
        axes.plot(
            recall,
            np.mean(valid_curves, axis=0),
            color="black",
            linewidth=2.5,
            label=f"all classes {metrics.stats['AP50']:.3f} AP50",
        )
    axes.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"{metrics.iou_type}: precision-recall at IoU 0.5",
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=7)
    return _save(figure, plt, path)


def plot_confusion_matrix(metrics: IouTypeMetrics, class_names: dict[int, str], path: Path) -> Path:
    """Column-normalised confusion matrix (true class in columns), background last."""
    plt = _pyplot()
    matrix = metrics.confusion if metrics.confusion is not None else np.zeros((1, 1))
    labels = [*(class_names[c] for c in class_names), "background"]
    totals = matrix.sum(axis=0, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    size = max(5.0, 0.5 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size * 0.85), dpi=120)
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set(
        xlabel="true",
        ylabel="predicted",
        title=f"{metrics.iou_type}: confusion at box IoU 0.5, score ≥ {metrics.confidence:.3f}",
    )
    if len(labels) <= 30:
        for row in range(matrix.shape[0]):
            for col in range(matrix.shape[1]):
                if matrix[row, col]:
                    colour = "white" if normalised[row, col] > 0.5 else "black"
                    axes.text(col, row, str(matrix[row, col]), ha="center", va="center", fontsize=7, color=colour)
    return _save(figure, plt, path)


def _save(figure, plt, path: Path) -> Path:  # type: ignore[no-untyped-def]
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png")
    plt.close(figure)
    return path
