"""Geometric loss strategy, GLS (Chennupati et al., "MultiNet++", CVPR-W 2019).

The combined loss is the geometric mean (Π_k L_k)^(1/K), so its gradient weighs task k by
GLS / (K · L_k): tasks with small losses get larger weights, and the scale of each loss
drops out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import Balancer


class GeometricLoss(Balancer):
    """(Π_k L_k)^(1/K), computed as exp(mean_k log L_k) for stability."""

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def combine(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        return torch.exp(torch.log(losses.clamp_min(self.eps)).mean())
