"""ConFIG, conflict-free inverse gradients (Liu et al., ICLR 2025).

The direction ĝ has the same cosine with every task gradient: with unit gradients u_k,
ĝ = U⁺ᵀ 1 = Σ_k y_k u_k where Ĝ y = 1 (Ĝ the Gramian of the u_k, pseudo-inverse), and the
update is (Σ_k g_kᵀ ĝ/‖ĝ‖) ĝ/‖ĝ‖.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import inverse_norms, normalized


class ConFIG(GramianBalancer):
    """Pseudo-inverse solve on the normalised Gramian."""

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        k = g.shape[0]
        unit, norms = normalized(g)
        # G comes from float32 gradients: eigenvalues below ~1e-6 of the largest are rounding
        # (dependent tasks), and inverting them would blow ĝ up
        inverse = torch.linalg.pinv(unit, hermitian=True, rtol=1e-6)
        y = inverse @ torch.ones(k, dtype=g.dtype, device=g.device)
        direction = y * inverse_norms(norms)  # coefficients of ĝ on the raw g_k
        length = (direction @ g @ direction).clamp_min(1e-24).sqrt()
        unit_dir = direction / length
        return (g @ unit_dir).sum() * unit_dir
