"""Equal weighting (EW): every task loss counts once, Σ_k L_k."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from polytask.balancers._base import Balancer, ones_like_tasks


class EqualWeights(Balancer):
    """The standard multi-task baseline: w_k = 1 for every task."""

    repeatable: ClassVar[bool] = True

    def loss_weights(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        return ones_like_tasks(losses)


class MeanWeights(Balancer):
    """EW on the mean loss: w_k = 1/K (LibMTL's and torchjd's `Mean` scale)."""

    repeatable: ClassVar[bool] = True

    def loss_weights(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        return ones_like_tasks(losses) / self.num_tasks
