"""SDMGrad (Xiao et al., "Direction-oriented Multi-objective Learning", NeurIPS 2023).

The weights solve min_{w ∈ Δ} ½‖g_w‖² + λ g_wᵀ g0 (g0 the mean gradient), exactly as a QP on
the Gramian, and the update is (g_w + λ g0) / (1 + λ). The paper estimates the two Gramian
factors from independent mini-batches (double sampling); here both come from the step's
batch, which is the deterministic limit of the same update.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import min_norm_simplex


class SDMGrad(GramianBalancer):
    """`lam` (the paper's λ) pulls the direction towards the average gradient."""

    def __init__(self, lam: float = 0.3) -> None:
        super().__init__()
        if lam < 0:
            raise ValueError(f"SDMGrad lam must be >= 0, got {lam}")
        self.lam = lam

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        k = g.shape[0]
        w = min_norm_simplex(g, linear=self.lam * g.mean(1))
        mean = torch.full((k,), 1.0 / k, dtype=g.dtype, device=g.device)
        return (w + self.lam * mean) / (1 + self.lam)
