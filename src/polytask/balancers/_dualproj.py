"""DualProj (Quinton & Rey 2024, after GEM, Lopez-Paz & Ranzato 2017): the mean gradient
projected onto the dual cone {d : J d ≥ 0}, i.e. c = argmin_v vᵀGv s.t. v ≥ 1/K."""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import project_to_dual_cone


class DualProj(GramianBalancer):
    """One QP per step."""

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        k = g.shape[0]
        mean = torch.full((k, 1), 1.0 / k, dtype=g.dtype, device=g.device)
        return project_to_dual_cone(g, mean).squeeze(1)
