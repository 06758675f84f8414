"""The report's figures as PNG bytes (matplotlib, headless), ready to inline as data URIs.

The evaluation and classifier plots are the very ones ``evaluate`` writes (drawn into a temporary
folder and read back); training curves and the metric-vs-latency scatter are drawn here.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # never needs a display
    import matplotlib.pyplot as plt

    return plt


def png_from(plot: Callable[..., Path], *args: Any) -> bytes:
    """Run one of distillkit's ``plot_*(..., path)`` functions and return the PNG it wrote."""
    with tempfile.TemporaryDirectory(prefix="distillkit-report-") as folder:
        return Path(plot(*args, Path(folder) / "figure.png")).read_bytes()


def _png(figure: Any, plt: Any) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def is_loss_column(key: str) -> bool:
    """Loss-like columns of a training log: losses, every ``train/`` term, distillation terms (``*/kd_*``)."""
    return "loss" in key or key.startswith("train/") or "/kd_" in key


def training_curves(history: Sequence[dict[str, float]]) -> bytes | None:
    """Losses (and distillation terms), validation metrics and learning rate per epoch."""
    if not history:
        return None
    plt = _pyplot()
    epochs = [row.get("epoch", index + 1) for index, row in enumerate(history)]
    keys = sorted({key for row in history for key in row} - {"epoch", "time"})
    losses = [k for k in keys if is_loss_column(k)]
    all_rates = [k for k in keys if k == "lr" or k.startswith("lr/")]
    rates = all_rates[:1]  # ultralytics' parameter groups follow one schedule
    scores = [k for k in keys if k not in losses and k not in all_rates and not k.startswith("time")]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    for panel, chosen, title in ((axes[0], losses, "losses"), (axes[1], scores, "validation"), (axes[2], rates, "lr")):
        for key in chosen:
            values = [row.get(key) for row in history]
            points = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None]
            if points:
                panel.plot(*zip(*points, strict=True), marker=".", linewidth=1.3, label=key)
        panel.set(title=title, xlabel="epoch")
        panel.grid(alpha=0.3)
        if panel.lines and panel is not axes[2]:
            panel.legend(fontsize=7)
    return _png(figure, plt)


def metric_vs_latency(points: Sequence[dict[str, Any]], metric_name: str) -> bytes | None:
    """One dot per experiment (latency, metric); the Pareto front joined and its dots filled."""
    usable = [p for p in points if p.get("latency_ms") is not None and p.get("metric") is not None]
    if not usable:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7.5, 4.6), dpi=100)
    front = sorted((p for p in usable if p["pareto"]), key=lambda p: p["latency_ms"])
    if len(front) > 1:
        axes.step(
            [p["latency_ms"] for p in front],
            [p["metric"] for p in front],
            where="post",
            color="#1f6feb",
            linewidth=1.5,
            label="Pareto front",
        )
    for point in usable:
        on_front = point["pareto"]
        axes.scatter(
            point["latency_ms"],
            point["metric"],
            s=60,
            color="#1f6feb" if on_front else "white",
            edgecolor="#1f6feb" if on_front else "#666666",
            linewidth=1.5,
            zorder=3,
        )
        axes.annotate(point["name"], (point["latency_ms"], point["metric"]), xytext=(6, 4), textcoords="offset points")
    axes.set(xlabel="latency per image, ms (lower is better)", ylabel=f"{metric_name} (higher is better)")
    axes.grid(alpha=0.3)
    if len(front) > 1:
        axes.legend(loc="lower right", fontsize=8)
    axes.margins(x=0.15, y=0.15)
    return _png(figure, plt)
