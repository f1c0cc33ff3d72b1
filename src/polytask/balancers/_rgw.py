"""Random gradient weighting, RGW (Lin et al., "Reasonable Effectiveness of Random Weighting",
TMLR 2022; torchjd's `Random` aggregator): the shared update is Jᵀ softmax(z), z ~ N(0, I)
redrawn every step. Unlike RLW, the random weights act on the gradients of the shared
parameters only; the heads keep their ordinary gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer


class RandomGradientWeighting(GramianBalancer):
    """Weights drawn from torch's RNG, so seeded runs repeat."""

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        z = torch.randn(g.shape[0], dtype=g.dtype, device=g.device)
        return torch.softmax(z, dim=0)
