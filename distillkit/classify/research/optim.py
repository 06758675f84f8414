"""Composable optimiser wrappers: sharpness-aware minimisation, Lookahead, gradient centralisation.

Each wraps another ``torch.optim.Optimizer`` and is one itself: the parameter groups are shared with
the wrapped optimiser (so an lr scheduler reaches it), and ``state_dict`` / ``load_state_dict`` nest
the wrapped optimiser's state, so the shared Trainer checkpoints and resumes them like any other.
They stack: ``Lookahead(SAM(GradientCentralization(AdamW)))`` is what ``wrap_optimizer`` builds
when all three are on.

- SAM (Foret et al., ICLR 2021): climb to ``w + e``, ``e = rho g / |g|`` (the worst point of a
  rho-ball, to first order), take the gradient there, come back to ``w`` and let the base optimiser
  step with that gradient. It needs a second forward-backward pass, so ``step(closure)`` requires a
  closure and the class declares ``requires_closure = True`` (the Trainer then passes one).
- Lookahead (Zhang et al., NeurIPS 2019): the wrapped ("fast") optimiser takes k steps, then the slow
  weights move ``alpha`` of the way towards the fast ones and the fast weights restart from them.
- Gradient centralisation (Yong et al., ECCV 2020): before the step, every weight with two or more
  dimensions has its gradient made zero-mean over all dimensions but the first (output channel).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

Closure = Callable[[], torch.Tensor]


class OptimizerWrapper(Optimizer):
    """Shares the wrapped optimiser's parameter groups and nests its state dict."""

    def __init__(self, base: Optimizer, **defaults: Any) -> None:
        # Optimizer.__init__ installs the hook machinery an lr scheduler expects; the groups it builds
        # are replaced by the base's own, so lr changes made through either object reach both.
        super().__init__(base.param_groups, {**base.defaults, **defaults})
        self.base = base
        self.param_groups = base.param_groups
        for group in self.param_groups:
            for name, value in defaults.items():
                group.setdefault(name, value)

    @property
    def requires_closure(self) -> bool:
        return bool(getattr(self.base, "requires_closure", False))

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def own_state(self) -> dict[str, Any]:
        return {}

    def load_own_state(self, state: dict[str, Any]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"wrapper": type(self).__name__, "base": self.base.state_dict(), "own": self.own_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if state_dict.get("wrapper") != type(self).__name__:
            raise ValueError(
                f"optimizer state is for {state_dict.get('wrapper', 'a plain optimizer')}, not {type(self).__name__}; "
                "resume with the same sam_rho / lookahead / grad_centralization settings"
            )
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups
        self.load_own_state(state_dict["own"])

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]


class GradientCentralization(OptimizerWrapper):
    def __init__(self, base: Optimizer) -> None:
        super().__init__(base)

    @torch.no_grad()
    def centralize(self) -> None:
        for param in self._params():
            grad = param.grad
            if grad is not None and grad.ndim > 1:
                grad.sub_(grad.mean(dim=tuple(range(1, grad.ndim)), keepdim=True))

    def step(self, closure: Closure | None = None) -> torch.Tensor | None:  # type: ignore[override]
        # With a closure the gradients are recomputed inside the base step; centralise them there.
        if closure is not None:

            def centralized_closure() -> torch.Tensor:
                loss = closure()
                self.centralize()
                return loss

            self.centralize()
            return self.base.step(centralized_closure)
        self.centralize()
        return self.base.step()


class SAM(OptimizerWrapper):
    """``step(closure)``: the gradients at ``w`` are already in ``.grad`` (the Trainer's backward);
    ``closure`` must zero them, recompute the loss and backward at the perturbed weights."""

    requires_closure = True  # type: ignore[assignment]

    def __init__(self, base: Optimizer, rho: float = 0.05) -> None:
        if rho <= 0:
            raise ValueError(f"SAM rho must be positive, got {rho}")
        super().__init__(base, sam_rho=rho)
        self.rho = rho

    @torch.no_grad()
    def first_step(self) -> dict[torch.Tensor, torch.Tensor]:
        """Move to ``w + rho g / |g|``; return the perturbations (to undo them)."""
        params = [p for p in self._params() if p.grad is not None]
        if not params:
            return {}
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params]))
        scale = self.rho / (norm + 1e-12)
        perturbations: dict[torch.Tensor, torch.Tensor] = {}
        for param in params:
            e = param.grad * scale.to(param.grad.dtype)
            param.add_(e)
            perturbations[param] = e
        return perturbations

    @torch.no_grad()
    def second_step(self, perturbations: dict[torch.Tensor, torch.Tensor]) -> None:
        for param, e in perturbations.items():
            param.sub_(e)
        self.base.step()

    def step(self, closure: Closure | None = None) -> torch.Tensor | None:  # type: ignore[override]
        if closure is None:
            raise RuntimeError("SAM needs a closure that re-computes the loss and its gradients")
        perturbations = self.first_step()
        with torch.enable_grad():
            loss = closure()
        self.second_step(perturbations)
        return loss


class Lookahead(OptimizerWrapper):
    def __init__(self, base: Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead needs k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        super().__init__(base, lookahead_k=k, lookahead_alpha=alpha)
        self.k = k
        self.alpha = alpha
        self.fast_steps = 0
        self.slow = [p.detach().clone() for p in self._params()]

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = self.base.step(closure) if closure is not None else self.base.step()
        self.fast_steps += 1
        if self.fast_steps % self.k == 0:
            for slow, fast in zip(self.slow, self._params(), strict=True):
                slow.add_(fast.detach() - slow, alpha=self.alpha)
                fast.copy_(slow)
        return loss

    def own_state(self) -> dict[str, Any]:
        return {"fast_steps": self.fast_steps, "slow": [s.detach().to("cpu", copy=True) for s in self.slow]}

    @torch.no_grad()
    def load_own_state(self, state: dict[str, Any]) -> None:
        self.fast_steps = int(state["fast_steps"])
        if len(state["slow"]) != len(self.slow):
            raise ValueError("Lookahead state holds a different number of parameters")
        for slow, saved in zip(self.slow, state["slow"], strict=True):
            slow.copy_(saved)


def wrap_optimizer(
    base: Optimizer,
    sam_rho: float = 0.0,
    lookahead_k: int = 0,
    lookahead_alpha: float = 0.5,
    grad_centralization: bool = False,
) -> Optimizer:
    """Stack the enabled wrappers around ``base`` (returned unchanged when none is on)."""
    optimizer = base
    if grad_centralization:
        optimizer = GradientCentralization(optimizer)
    if sam_rho > 0:
        optimizer = SAM(optimizer, sam_rho)
    if lookahead_k > 0:
        optimizer = Lookahead(optimizer, lookahead_k, lookahead_alpha)
    return optimizer
