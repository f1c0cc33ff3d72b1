"""IMTL-G, the gradient-balance half of IMTL (Liu et al., ICLR 2021).

Finds the combination g = Σ α_k g_k (Σ α = 1) whose projections on every unit task gradient
u_k are equal: with D = [g_1 − g_k]ᵀ and U = [u_1 − u_k]ᵀ (k ≥ 2),
α_{2:K} = g_1 Uᵀ (D Uᵀ)⁻¹ and α_1 = 1 − Σ α_{2:K}. Every product is a Gramian entry.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import inverse_norms


class IMTLG(GramianBalancer):
    """Closed form; ill-conditioned systems fall back to the least-squares solution."""

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        k = g.shape[0]
        if k == 1:
            return torch.ones(1, dtype=g.dtype, device=g.device)
        gu = g * inverse_norms(g.diagonal().clamp_min(0).sqrt())[None, :]  # gu[i, j] = g_i · u_j
        row = gu[0, 0] - gu[0, 1:]  # g_1 · (u_1 − u_j)
        du = gu[0, 0] - gu[0, 1:][None, :] - gu[1:, 0][:, None] + gu[1:, 1:]
        # α_{2:K} as a row vector: α D Uᵀ = g_1 Uᵀ  ⇒  (D Uᵀ)ᵀ αᵀ = (g_1 Uᵀ)ᵀ
        alpha = torch.linalg.lstsq(du.T, row.unsqueeze(1)).solution.squeeze(1)
        return torch.cat([1 - alpha.sum().unsqueeze(0), alpha])
