"""Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022).

The Nash bargaining solution is d = Jᵀα with α > 0 solving Gα = 1/α. That is the stationary
point of the strictly convex ½αᵀGα − Σ log α_k, which is solved here exactly by damped
Newton steps (no cvxpy, no solver that can go missing). Its update always has norm √K
(αᵀGα = Σ α_k (Gα)_k = K): a normalised gradient step. The authors' code (and LibMTL's and
torchjd's) divides G by its Frobenius norm N, but its constraint log(α_k N) + log((G/N α)_k)
≥ 0 multiplies N back, so its α is this solution on G itself. `normalize=True` takes instead
the solution on G / N, an update ‖G‖_F^½ times this one, which shrinks as the gradients do.
`max_norm` clips the update's norm as in the authors' code (0, the default here, switches it
off; their default is 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer, require
from polytask.balancers._solvers import solve_power_equation


def clip_coefficients(gramian: Tensor, c: Tensor, max_norm: float) -> Tensor:
    """Scale c so that ‖Jᵀc‖ ≤ max_norm (no-op for max_norm ≤ 0)."""
    if max_norm <= 0:
        return c
    norm = (c @ gramian @ c).clamp_min(0).sqrt()
    return c * torch.clamp(max_norm / norm.clamp_min(1e-20), max=1.0)


class NashMTL(GramianBalancer):
    """Direction scale-invariant: multiplying g_k by s > 0 divides α_k by s up to a factor
    common to every task (none without `normalize`), leaving α_k g_k's direction alone."""

    def __init__(self, max_norm: float = 0.0, normalize: bool = False) -> None:
        super().__init__()
        require(max_norm >= 0, "Nash-MTL", "max_norm", max_norm, ">= 0 (0: no clipping)")
        self.max_norm, self.normalize = max_norm, normalize

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        alpha = solve_power_equation(g, power=1.0)
        if self.normalize:  # the solution on G / ‖G‖_F, without solving again
            alpha = alpha * torch.linalg.matrix_norm(g).sqrt()
        return clip_coefficients(g, alpha, self.max_norm)
