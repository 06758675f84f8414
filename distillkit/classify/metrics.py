"""Classification metrics from predicted probabilities: accuracy, top-k, calibration, per-class P/R/F1.

Single-label: the predicted class is the arg-max; ECE bins the top-1 confidence against top-1
correctness. Multi-label: a class is predicted when its probability reaches its threshold;
``accuracy`` is subset accuracy (all classes right, scikit-learn's definition), hamming loss is the
wrong share of (image, class) decisions, and ECE bins every (image, class) probability against its
0/1 truth. Per-class thresholds that maximise each class's F1 are reported as a tuning aid.
ECE uses ``n_bins`` equal-width bins: ``sum_b |B|/N * |accuracy(B) - confidence(B)|``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)

DEFAULT_BINS = 15
#: Fitted temperatures outside this open range mean a degenerate fit (see ``fit_temperature``).
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    confidence: float | None  # mean confidence in the bin; None when empty
    accuracy: float | None


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    precision: float
    recall: float
    f1: float
    support: int  # images with this class in the truth
    predicted: int  # images predicted as this class
    best_threshold: float | None = None  # multi-label: the threshold maximising this class's F1
    best_f1: float | None = None


@dataclass
class ClassificationMetrics:
    """Everything ``evaluate`` reports for one set of predictions."""

    num_images: int
    multi_label: bool
    accuracy: float
    top_k: dict[int, float]
    ece: float
    nll: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    micro_precision: float
    micro_recall: float
    micro_f1: float
    per_class: list[ClassMetrics]
    confusion: np.ndarray  # single-label: C x C (rows truth); multi-label: C x 2 x 2 ([[tn, fp], [fn, tp]])
    reliability: list[ReliabilityBin]
    hamming_loss: float | None = None
    subset_accuracy: float | None = None
    thresholds: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "num_images": self.num_images,
            "multi_label": self.multi_label,
            "accuracy": self.accuracy,
            "top_k": {str(k): v for k, v in self.top_k.items()},
            "ece": self.ece,
            "nll": self.nll,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
            "micro_precision": self.micro_precision,
            "micro_recall": self.micro_recall,
            "micro_f1": self.micro_f1,
            "per_class": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in self.per_class},
            "confusion_matrix": self.confusion.tolist(),
            "reliability": [asdict(b) for b in self.reliability],
        }
        if self.multi_label:
            out.update(hamming_loss=self.hamming_loss, subset_accuracy=self.subset_accuracy, thresholds=self.thresholds)
        out.update(self.extra)
        return out


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS) -> list[ReliabilityBin]:
    """Equal-width confidence bins (the first closed at 0, the others open on the left, as usual)."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin b holds (edges[b], edges[b+1]]; a confidence of exactly 0 goes to the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        bins.append(
            ReliabilityBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=count,
                confidence=float(confidence[members].mean()) if count else None,
                accuracy=float(correct[members].mean()) if count else None,
            )
        )
    return bins


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """ECE = sum over bins of (bin share) * |accuracy - mean confidence|."""
    total = np.asarray(confidence).size
    if total == 0:
        return 0.0
    return float(
        sum(
            b.count / total * abs(b.accuracy - b.confidence)
            for b in reliability_bins(confidence, correct, n_bins)
            if b.count
        )
    )


def top_k_accuracy(probabilities: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of images whose k highest-scored classes include a true class (images with a label only)."""
    has_label = targets.sum(axis=1) > 0
    if not has_label.any():
        return 0.0
    probs, truth = probabilities[has_label], targets[has_label] > 0
    # Stable ordering: ties broken by class index, as scikit-learn's top_k_accuracy_score does.
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(truth, top, axis=1).any(axis=1).mean())


def best_f1_thresholds(
    probabilities: np.ndarray, targets: np.ndarray, default: float = 0.5
) -> tuple[list[float], list[float]]:
    """Per class, the probability threshold that maximises F1 on these images (and that F1)."""
    thresholds, scores = [], []
    for c in range(probabilities.shape[1]):
        p, t = probabilities[:, c], targets[:, c] > 0
        if not t.any():
            thresholds.append(default)
            scores.append(0.0)
            continue
        order = np.argsort(-p, kind="stable")
        sorted_p, sorted_t = p[order], t[order]
        tp = np.cumsum(sorted_t)
        predicted = np.arange(1, len(p) + 1)
        f1 = 2 * tp / (predicted + t.sum())
        # Only cut between distinct scores: the last position of each run of equal probabilities.
        last_of_run = np.r_[sorted_p[1:] != sorted_p[:-1], True]
        f1 = np.where(last_of_run, f1, -1.0)
        best = int(np.argmax(f1))
        thresholds.append(float(sorted_p[best]))
        scores.append(float(f1[best]))
    return thresholds, scores


def _nll(probabilities: np.ndarray, targets: np.ndarray, multi_label: bool) -> float:
    eps = 1e-12
    p = np.clip(probabilities, eps, 1 - eps)
    if multi_label:
        return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(p)), targets.argmax(axis=1)]).mean())


def classification_metrics(
    probabilities: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    class_names: list[str],
    multi_label: bool,
    topk: list[int] | tuple[int, ...] = (1, 5),
    thresholds: list[float] | float = 0.5,
    n_bins: int = DEFAULT_BINS,
) -> ClassificationMetrics:
    """All metrics for probabilities (N, C) against multi-hot targets (N, C)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(targets, dtype=np.float64)
    n, c = probs.shape
    labels = list(range(c))
    top_k = {k: top_k_accuracy(probs, truth, k) for k in sorted(set(topk)) if k <= c}
    if multi_label:
        cut = np.asarray(thresholds if isinstance(thresholds, list) else [thresholds] * c, dtype=np.float64)
        y_true, y_pred = truth.astype(int), (probs >= cut).astype(int)
        per = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        macro = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
        micro = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
        best_t, best_f = best_f1_thresholds(probs, truth)
        subset = float(accuracy_score(y_true, y_pred))
        confusion = multilabel_confusion_matrix(y_true, y_pred, labels=labels)
        ece = expected_calibration_error(probs.ravel(), truth.ravel(), n_bins)
        reliability = reliability_bins(probs.ravel(), truth.ravel(), n_bins)
        predicted_counts = y_pred.sum(axis=0)
        return ClassificationMetrics(
            num_images=n,
            multi_label=True,
            accuracy=subset,
            top_k=top_k,
            ece=ece,
            nll=_nll(probs, truth, True),
            **_averages(macro, micro),
            per_class=[
                ClassMetrics(
                    class_names[i],
                    float(per[0][i]),
                    float(per[1][i]),
                    float(per[2][i]),
                    int(per[3][i]),
                    int(predicted_counts[i]),
                    best_t[i],
                    best_f[i],
                )
                for i in labels
            ],
            confusion=confusion,
            reliability=reliability,
            hamming_loss=float(hamming_loss(y_true, y_pred)),
            subset_accuracy=subset,
            thresholds=[float(v) for v in cut],
        )
    y_true, y_pred = truth.argmax(axis=1), probs.argmax(axis=1)
    per = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    micro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="micro", zero_division=0)
    confidence = probs.max(axis=1)
    correct = (y_true == y_pred).astype(np.float64)
    predicted_counts = np.bincount(y_pred, minlength=c)
    return ClassificationMetrics(
        num_images=n,
        multi_label=False,
        accuracy=float(accuracy_score(y_true, y_pred)),
        top_k=top_k,
        ece=expected_calibration_error(confidence, correct, n_bins),
        nll=_nll(probs, truth, False),
        **_averages(macro, micro),
        per_class=[
            ClassMetrics(
                class_names[i],
                float(per[0][i]),
                float(per[1][i]),
                float(per[2][i]),
                int(per[3][i]),
                int(predicted_counts[i]),
            )
            for i in labels
        ],
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        reliability=reliability_bins(confidence, correct, n_bins),
    )


def _mean_confidence(z: torch.Tensor, y: torch.Tensor, multi_label: bool, temperature: float) -> float:
    """Mean probability given to the true answer (every decision is right on separated data)."""
    if multi_label:
        p = torch.sigmoid(z / temperature)
        return float(torch.where(y > 0.5, p, 1 - p).mean())
    return float(torch.softmax(z / temperature, dim=1).max(dim=1).values.mean())


def _confidence_matching_temperature(z: torch.Tensor, y: torch.Tensor, multi_label: bool) -> float:
    """The temperature whose mean confidence equals (n + 1) / (n + 2) for n decisions, all correct."""
    n = y.numel() if multi_label else y.shape[0]
    target = (n + 1) / (n + 2)
    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    for _ in range(60):  # confidence falls as the temperature rises: bisect on log T
        middle = (low + high) / 2
        if _mean_confidence(z, y, multi_label, float(np.exp(middle))) > target:
            low = middle
        else:
            high = middle
    return float(np.exp((low + high) / 2))


def fit_temperature(logits: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, multi_label: bool) -> float:
    """The softmax/sigmoid temperature minimising validation NLL (Guo et al., 2017), in TEMPERATURE_RANGE."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    if z.numel() == 0:
        return 1.0
    # Validation data the model separates perfectly has no finite NLL optimum (it keeps falling as
    # T -> 0, which would claim certainty); match the mean confidence to the Laplace-smoothed
    # accuracy (k + 1) / (n + 2) instead, as the data cannot say more than that.
    separated = ((z > 0) == (y > 0.5)).all() if multi_label else (z.argmax(1) == y.argmax(1)).all()
    if bool(separated):
        return _confidence_matching_temperature(z, y, multi_label)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        scaled = z / log_t.exp()
        if multi_label:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scaled, y)
        else:
            loss = -(torch.log_softmax(scaled, dim=1) * y).sum(dim=1).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    value = float(log_t.detach().exp())
    if not np.isfinite(value) or not TEMPERATURE_RANGE[0] < value < TEMPERATURE_RANGE[1]:
        return 1.0
    return value


def _averages(macro: Any, micro: Any) -> dict[str, float]:
    """Macro and micro precision / recall / F1 from sklearn's ``precision_recall_fscore_support`` tuples."""
    return {
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
        "micro_precision": float(micro[0]),
        "micro_recall": float(micro[1]),
        "micro_f1": float(micro[2]),
    }
