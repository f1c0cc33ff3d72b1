"""MoCo (Fernando et al., "Mitigating Gradient Bias in Multi-objective Learning", ICLR 2023).

Tracks each task gradient (normalised to ‖g_k‖ = L_k) with y_k ← y_k − β_t (y_k − g_k) to
remove the stochastic bias of MGDA, and the weights with the paper's projected step
λ ← Π_Δ(λ − γ_t (Y Yᵀ + ρI) λ) onto the simplex; the update is Yᵀλ. β_t = β/t^σβ,
γ_t = γ/t^σγ. `simplex="softmax"` takes LibMTL's variant, softmax(λ − γ_t (Y Yᵀ + ρI) λ),
which reads λ as logits and so keeps it near uniform. The tracked gradients are K × n state,
so it needs the Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, JacobianBalancer, require, weighted_sum
from polytask.balancers._solvers import project_simplex

SIMPLEX: dict[str, Callable[[Tensor], Tensor]] = {
    "projection": project_simplex,
    "softmax": lambda v: torch.softmax(v, dim=0),
}
"""How λ's step is brought back onto the simplex."""


class MoCo(JacobianBalancer):
    """Step sizes as in LibMTL (β = 0.5, σβ = 0.5, γ = 0.1, σγ = 0.5, ρ = 0); λ by the paper's
    projection onto the simplex (`simplex="projection"`) or LibMTL's softmax (`"softmax"`).

    Per step (`aggregate`): the tracked gradients, λ and the step count t are updated.
    """

    positive_losses = "it scales each task gradient by its loss"

    updates_state: ClassVar[bool] = True
    labelled_subproblem: ClassVar[bool] = False  # per-task state: sees every row

    tracked: Tensor
    lam: Tensor
    steps: Tensor

    keeps_gradient_state: ClassVar[bool] = True

    def __init__(
        self,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
        simplex: str = "projection",
    ) -> None:
        super().__init__()
        if simplex not in SIMPLEX:
            raise ValueError(
                f"moco: simplex must be one of {sorted(SIMPLEX)} (the paper's projection, or "
                f"LibMTL's softmax), got {simplex!r}"
            )
        self.simplex = simplex
        require(0 < beta <= 1, "moco", "beta", beta, "in (0, 1] (its tracking step)")
        require(gamma > 0, "moco", "gamma", gamma, "> 0 (the weights' step)")
        for name, value in (("beta_sigma", beta_sigma), ("gamma_sigma", gamma_sigma)):
            require(value >= 0, "moco", name, value, ">= 0 (a step's decay)")
        require(rho >= 0, "moco", "rho", rho, ">= 0 (a ridge on the weights' problem)")
        self.beta, self.beta_sigma = beta, beta_sigma
        self.gamma, self.gamma_sigma, self.rho = gamma, gamma_sigma, rho
        self.register_buffer("tracked", torch.zeros(0))
        self.register_buffer("lam", torch.zeros(0))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        k = len(task_names)
        self.lam = torch.full((k,), 1.0 / k)
        self.tracked = torch.zeros(0)

    def aggregate(self, info: GradientInfo) -> Tensor:
        assert info.jacobian is not None
        jac = info.jacobian
        k = jac.shape[0]
        self.steps += 1
        t = float(self.steps)
        scale = info.losses.to(jac) / (jac.norm(dim=1) + 1e-8)  # g̃_k = L_k g_k / ‖g_k‖
        beta = self.beta / t**self.beta_sigma
        # a task the batch does not label (or whose gradient is exactly zero) has no
        # observation: its tracked gradient and its λ stay as they were, and the step is
        # that of the others alone (its zero row would pull λ onto it: Yᵀλ towards 0)
        seen = self.labelled_mask(k, jac.device)
        rate = torch.where(seen, beta, 0.0).to(jac)
        if self.tracked.shape == jac.shape:  # y ← (1 − β_t) y + β_t g̃, in place, no K × n temp
            y = (
                self.tracked.to(jac)
                .mul_((1 - rate)[:, None])
                .addcmul_(jac, (rate * scale)[:, None])
            )
        else:
            y = jac * (rate * scale)[:, None]
        lam = self.lam.to(jac)
        part = lam[seen]
        ys = y[seen]
        gram = ys @ ys.T + self.rho * torch.eye(len(ys), dtype=jac.dtype, device=jac.device)
        if len(ys):
            mass = part.sum()
            step = SIMPLEX[self.simplex](part / mass - (self.gamma / t**self.gamma_sigma) * (
                gram @ (part / mass)))  # fmt: skip
            lam = lam.clone()
            lam[seen] = step * mass
        self.tracked, self.lam = y, lam
        weights = torch.where(seen, lam, 0.0)
        total = weights.sum()
        return weighted_sum(weights / total if total > 0 else weights, y)
