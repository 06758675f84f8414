"""Classifier figures as PNG files (matplotlib, headless): training curves, confusion matrix, reliability."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.classify.metrics import ReliabilityBin
from distillkit.io import atomic_open


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, plt: Any, path: Path) -> Path:
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png")
    plt.close(figure)
    return path


def plot_training_curves(history: Sequence[dict[str, Any]], path: Path, monitor: str) -> Path:
    """Losses (left), the monitored and other validation scores (middle) and the learning rate (right)."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    figure, (losses, scores, rates) = plt.subplots(1, 3, figsize=(13, 4), dpi=110)
    keys = sorted({key for row in history for key in row})
    for key in keys:
        values = [row.get(key) for row in history]
        if any(v is None for v in values):
            continue
        if key.endswith("loss") or key in ("train/hard", "train/kd", "train/feature"):
            losses.plot(epochs, values, marker=".", label=key)
        elif key.startswith("val/") and key != "val/ece":
            scores.plot(epochs, values, marker=".", label=key, linewidth=2.5 if key == monitor else 1)
    rates.plot(epochs, [row.get("lr", 0.0) for row in history], marker=".")
    losses.set(title="losses", xlabel="epoch")
    scores.set(title=f"validation (best by {monitor})", xlabel="epoch", ylim=(0, 1.02))
    rates.set(title="learning rate", xlabel="epoch")
    for axes in (losses, scores):
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=7)
    rates.grid(alpha=0.3)
    return _save(figure, plt, path)


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (rows: true class) with the raw counts written in the cells."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    side = max(4.0, 0.45 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(side + 1, side), dpi=110)
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, labels=list(class_names), rotation=45, ha="right", fontsize=8)
    axes.set_yticks(ticks, labels=list(class_names), fontsize=8)
    if len(class_names) <= 30:
        for i in range(len(class_names)):
            for j in range(len(class_names)):
                if counts[i, j]:
                    colour = "white" if share[i, j] > 0.5 else "black"
                    axes.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7, color=colour)
    axes.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    return _save(figure, plt, path)


def plot_multilabel_confusion(matrices: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Per class: true/false positives and negatives as grouped bars."""
    plt = _pyplot()
    matrices = np.asarray(matrices)
    figure, axes = plt.subplots(figsize=(max(5.0, 0.8 * len(class_names) + 2), 4), dpi=110)
    x = np.arange(len(class_names))
    for offset, (label, (i, j)) in enumerate({"TP": (1, 1), "FP": (0, 1), "FN": (1, 0)}.items()):
        axes.bar(x + (offset - 1) * 0.27, matrices[:, i, j], width=0.27, label=label)
    axes.set_xticks(x, labels=list(class_names), rotation=45, ha="right", fontsize=8)
    axes.set(ylabel="images", title="per-class decisions")
    axes.legend()
    return _save(figure, plt, path)


def plot_reliability(bins: Sequence[ReliabilityBin], ece: float, path: Path) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, bin counts underneath."""
    plt = _pyplot()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), dpi=110, height_ratios=(3, 1), sharex=True)
    centres = [(b.lower + b.upper) / 2 for b in bins]
    width = bins[0].upper - bins[0].lower if bins else 0.1
    top.bar(centres, [b.accuracy or 0.0 for b in bins], width=width, edgecolor="black", alpha=0.8, label="accuracy")
    top.bar(
        centres,
        [(b.confidence or 0.0) - (b.accuracy or 0.0) if b.count else 0.0 for b in bins],
        bottom=[b.accuracy or 0.0 for b in bins],
        width=width,
        color="red",
        alpha=0.3,
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"reliability (ECE {ece:.4f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, [b.count for b in bins], width=width, color="grey")
    bottom.set(xlabel="confidence", ylabel="count")
    return _save(figure, plt, path)
