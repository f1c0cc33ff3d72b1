"""UPGrad (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024).

Each task gradient, weighted by the preference 1/K, is projected onto the dual cone
{d : J d ≥ 0} (the directions that conflict with no task) and the projections are summed.
Projecting Jᵀu onto the cone is the QP min_v vᵀGv s.t. v ≥ u; its solutions for u = e_k/K
add up to c. The update never conflicts with any task gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import project_to_dual_cone


class UPGrad(GramianBalancer):
    """Unconflicting projection of gradients; K small QPs per step."""

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        k = g.shape[0]
        prefs = torch.eye(k, dtype=g.dtype, device=g.device) / k
        return project_to_dual_cone(g, prefs).sum(1)
