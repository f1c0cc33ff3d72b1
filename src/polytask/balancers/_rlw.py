"""Random loss weighting, RLW (Lin et al., "Reasonable Effectiveness of Random Weighting",
TMLR 2022): each step draws z ~ N(0, I) and weighs the losses by softmax(z)."""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import Balancer


class RandomLossWeighting(Balancer):
    """w = softmax(z), z ~ N(0, I) redrawn every step (torch's RNG, so seeded runs repeat)."""

    records = ("_drawn",)
    _drawn: Tensor | None = None

    def loss_weights(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        z = torch.randn(self.num_tasks, dtype=losses.dtype, device=losses.device)
        self._drawn = torch.softmax(z, dim=0).detach()
        return self._drawn

    def weights(self, losses: Tensor) -> Tensor:
        """The expected weights, 1/K (a draw would change the RNG stream); a step's own draw
        is `drawn_weights`."""
        self._check_losses(losses)
        return torch.full_like(losses.detach(), 1.0 / self.num_tasks)

    def drawn_weights(self) -> Tensor | None:
        return self._drawn
