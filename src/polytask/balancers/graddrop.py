"""GradDrop, gradient sign dropout (Chen et al., NeurIPS 2020).

Per coordinate, P = ½(1 + Σ_k g_k / Σ_k |g_k|) is the purity of the positive sign; with one
uniform draw U per coordinate, positive task gradients survive where P > U and negative ones
where P < U (a fraction `leak` of every gradient always passes). Acts coordinate-wise, so it
needs the Jacobian.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers.base import GradientInfo, JacobianBalancer


class GradDrop(JacobianBalancer):
    """`leak` in [0, 1]: share of each gradient kept regardless of sign."""

    def __init__(self, leak: float = 0.0) -> None:
        super().__init__()
        if not 0 <= leak <= 1:
            raise ValueError(f"GradDrop leak must be in [0, 1], got {leak}")
        self.leak = leak

    def aggregate(self, info: GradientInfo) -> Tensor:
        assert info.jacobian is not None
        jac = info.jacobian
        # Keeping the positive parts where P > U and the negative ones where P < U sums to
        # Σ_k max(g_k, 0) or Σ_k min(g_k, 0) per coordinate: two passes over J, no K × n mask.
        positive = jac.clamp_min(0).sum(0)
        total = jac.sum(0)
        negative = total - positive
        purity = 0.5 * (1 + total / (positive - negative).clamp_min(1e-20))
        draw = torch.rand(purity.shape, dtype=jac.dtype, device=jac.device)
        kept = torch.where(purity > draw, positive, torch.where(purity < draw, negative, 0.0))
        return self.leak * total + (1 - self.leak) * kept
