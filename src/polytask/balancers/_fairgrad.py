"""FairGrad (Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024).

α-fair allocation of the update among tasks: d = Jᵀw with w > 0 solving G w = w^(−1/α).
α = 1 is proportional fairness (Nash-MTL), α → ∞ max-min fairness. Solved exactly as the
stationary point of a strictly convex function (damped Newton).
"""

from __future__ import annotations

from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import solve_power_equation


class FairGrad(GramianBalancer):
    """`alpha` is the fairness level (> 0)."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"FairGrad alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def coefficients(self, info: GradientInfo) -> Tensor:
        return solve_power_equation(info.require_gramian(), power=1.0 / self.alpha)
