"""Supervised contrastive loss and the evidential (Dirichlet) loss, with its uncertainty ``u = K / S``.

SupCon (Khosla et al., NeurIPS 2020, the L_out form): every view of every image is an anchor; its
positives are the other views with the same label, its contrast set every other view::

    L = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a != i} exp(z_i.z_a / tau) )

Evidential deep learning (Sensoy et al., NeurIPS 2018): the logits give non-negative evidence
``e = softplus(logits)``, the Dirichlet parameters are ``alpha = e + 1`` with strength
``S = sum alpha``; the expected probability is ``alpha / S`` and the uncertainty ``u = K / S`` (1 when
there is no evidence at all). The loss is the expected squared error under the Dirichlet (eq. 5),
``sum_j (y_j - p_j)^2 + p_j (1 - p_j) / (S + 1)``, plus ``lambda_t KL(Dir(alpha~) || Dir(1))`` on the
misleading evidence (``alpha~ = y + (1 - y) alpha``), ``lambda_t`` ramping up over the first epochs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """``features`` (B, V, D) (normalised inside), ``labels`` (B,) -> the mean SupCon loss over anchors."""
    batch, views, _ = features.shape
    z = F.normalize(features.float(), dim=-1).reshape(batch * views, -1)
    y = labels.repeat_interleave(views)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(batch * views, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    has = counts > 0
    if not bool(has.any()):
        return logits.new_zeros(()).requires_grad_(features.requires_grad)
    summed = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(summed[has] / counts[has]).mean()


class SupConLoss(nn.Module):
    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return supcon_loss(features, labels, self.temperature)


def dirichlet_alpha(logits: torch.Tensor) -> torch.Tensor:
    """alpha = softplus(logits) + 1."""
    return F.softplus(logits.float()) + 1.0


def evidential_probabilities(logits: torch.Tensor) -> torch.Tensor:
    alpha = dirichlet_alpha(logits)
    return alpha / alpha.sum(dim=1, keepdim=True)


def evidential_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """u = K / S per row, in (0, 1]."""
    alpha = dirichlet_alpha(logits)
    return logits.shape[1] / alpha.sum(dim=1)


def kl_to_uniform_dirichlet(alpha: torch.Tensor) -> torch.Tensor:
    """KL(Dir(alpha) || Dir(1, ..., 1)) per row."""
    k = alpha.shape[1]
    strength = alpha.sum(dim=1)
    return (
        torch.lgamma(strength)
        - torch.lgamma(torch.tensor(float(k), device=alpha.device))
        - torch.lgamma(alpha).sum(dim=1)
        + ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(strength)[:, None])).sum(dim=1)
    )


class EvidentialLoss(nn.Module):
    """Dirichlet expected-MSE loss + annealed KL; ``targets`` (B, K) one-hot or soft (mixing).

    ``set_epoch(e)`` (called by the training loop at each epoch start) sets the KL weight to
    ``kl_weight * min(1, (e - 1) / anneal_epochs)``: no KL in the first epoch, full weight after.
    """

    def __init__(self, kl_weight: float = 1.0, anneal_epochs: int = 10) -> None:
        super().__init__()
        self.kl_weight = kl_weight
        self.anneal_epochs = max(1, anneal_epochs)
        self.current_kl = 0.0

    def set_epoch(self, epoch: int) -> None:
        self.current_kl = self.kl_weight * min(1.0, max(0, epoch - 1) / self.anneal_epochs)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = targets.float()
        alpha = dirichlet_alpha(logits)
        strength = alpha.sum(dim=1, keepdim=True)
        p = alpha / strength
        mse = ((y - p).pow(2) + p * (1 - p) / (strength + 1)).sum(dim=1)
        loss = mse
        if self.current_kl > 0:
            misleading = y + (1 - y) * alpha
            loss = loss + self.current_kl * kl_to_uniform_dirichlet(misleading)
        return loss.mean()


def uncertainty_summary(uncertainty: torch.Tensor, correct: torch.Tensor, bins: int = 4) -> dict[str, object]:
    """How uncertainty tracks errors: mean u of right and wrong predictions, and error rate per u-quantile bin.

    A useful uncertainty has ``mean_u_wrong > mean_u_right`` and an error rate rising across bins;
    ``auroc`` is the probability that a random wrong prediction is more uncertain than a right one.
    """
    u = uncertainty.double().flatten()
    ok = correct.bool().flatten()
    summary: dict[str, object] = {
        "mean_u": float(u.mean()) if u.numel() else None,
        "mean_u_right": float(u[ok].mean()) if bool(ok.any()) else None,
        "mean_u_wrong": float(u[~ok].mean()) if bool((~ok).any()) else None,
    }
    if bool(ok.any()) and bool((~ok).any()):
        wrong, right = u[~ok], u[ok]
        greater = (wrong[:, None] > right[None, :]).double().mean()
        ties = (wrong[:, None] == right[None, :]).double().mean()
        summary["auroc"] = float(greater + 0.5 * ties)
    else:
        summary["auroc"] = None
    order = torch.argsort(u, stable=True)
    rows = []
    for chunk in torch.tensor_split(order, min(bins, max(1, u.numel()))):
        if chunk.numel():
            rows.append(
                {
                    "u_min": float(u[chunk].min()),
                    "u_max": float(u[chunk].max()),
                    "count": int(chunk.numel()),
                    "error_rate": float((~ok[chunk]).double().mean()),
                }
            )
    summary["bins"] = rows
    return summary
