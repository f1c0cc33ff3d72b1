"""Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022).

The Nash bargaining solution is d = Jᵀα with α > 0 solving Gα = 1/α. That is the stationary
point of the strictly convex ½αᵀGα − Σ log α_k, which is solved here exactly by damped
Newton steps (no cvxpy, no solver that can go missing). `max_norm` clips the update's norm
as in the paper's code (0 switches it off).
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import solve_power_equation


def clip_coefficients(gramian: Tensor, c: Tensor, max_norm: float) -> Tensor:
    """Scale c so that ‖Jᵀc‖ ≤ max_norm (no-op for max_norm ≤ 0)."""
    if max_norm <= 0:
        return c
    norm = (c @ gramian @ c).clamp_min(0).sqrt()
    return c * torch.clamp(max_norm / norm.clamp_min(1e-20), max=1.0)


class NashMTL(GramianBalancer):
    """Scale-invariant: multiplying g_k by s > 0 divides α_k by s, leaving α_k g_k alone."""

    def __init__(self, max_norm: float = 0.0) -> None:
        super().__init__()
        self.max_norm = max_norm

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        return clip_coefficients(g, solve_power_equation(g, power=1.0), self.max_norm)
