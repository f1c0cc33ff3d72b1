"""IMTL-G, the gradient-balance half of IMTL (Liu et al., ICLR 2021).

Finds the combination g = Σ α_k g_k (Σ α = 1) whose projections on every unit task gradient
u_k are equal: g · (u_1 − u_j) = 0 for j ≥ 2, K equations in K unknowns (the paper's
α_{2:K} = g_1 Uᵀ (D Uᵀ)⁻¹, α_1 = 1 − Σ α_{2:K}, where that inverse exists). Every product is
a Gramian entry.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import inverse_norms


class IMTLG(GramianBalancer):
    """Closed form. Where the system has many solutions (tasks with parallel gradients) the one
    nearest equal weights, so that tasks with the same gradient get the same weight."""

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        k = g.shape[0]
        if k == 1:
            return torch.ones(1, dtype=g.dtype, device=g.device)
        gu = g * inverse_norms(g.diagonal().clamp_min(0).sqrt())[None, :]  # gu[i, j] = g_i · u_j
        # row j-1 (j ≥ 2): Σ_k α_k g_k · (u_1 − u_j) = 0; last row: Σ_k α_k = 1
        system = torch.cat([(gu[:, :1] - gu[:, 1:]).T, torch.ones_like(g[:1])])
        rhs = torch.zeros(k, dtype=g.dtype, device=g.device)
        rhs[-1] = 1
        uniform = torch.full_like(rhs, 1 / k)
        # the solution nearest uniform: the unique one where the system is regular
        return uniform + torch.linalg.pinv(system) @ (rhs - system @ uniform)
