"""PCGrad (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020).

For each task i, and the other tasks j in random order, if g_i' · g_j < 0 the projection
g_i' ← g_i' − (g_i' · g_j / ‖g_j‖²) g_j removes the conflicting part; the update is Σ_i g_i'.
Every g_i' stays a combination of the original gradients, so the whole surgery runs on the
Gramian: g_i' = Σ_m C_im g_m and g_i' · g_j = (C G)_ij.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import partner_orders


class PCGrad(GramianBalancer):
    """Projecting conflicting gradients; the order of the other tasks is drawn per step."""

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        k = g.shape[0]
        coef = torch.eye(k, dtype=g.dtype, device=g.device)
        rows, order = partner_orders(k, g.device)
        diag = g.diagonal()
        for r in range(k):  # round r: every task i projects against its r-th partner at once
            j = order[:, r]
            dot = (coef * g[:, j].T).sum(1)  # g_i' · g_j
            hit = (j != rows) & (dot < 0) & (diag[j] > 0)
            coef[rows[hit], j[hit]] -= dot[hit] / diag[j[hit]]
        return coef.sum(0)
