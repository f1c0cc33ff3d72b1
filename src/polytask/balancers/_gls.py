"""Geometric loss strategy, GLS (Chennupati et al., "MultiNet++", CVPR-W 2019).

The combined loss is the geometric mean (Π_k L_k)^(1/K), so its gradient weighs task k by
GLS / (K · L_k): tasks with small losses get larger weights, and the scale of each loss
drops out.

With a partially labelled batch (`Balancer.labelled`) the mean is over the labelled tasks:
the others' loss of 0 is no observation, and taken as one (clamped to `eps`) it shrank the
product, and so every labelled task's weight, by eps^(1/K) per unlabelled task.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import Balancer


class GeometricLoss(Balancer):
    """(Π_k L_k)^(1/K), computed as exp(mean_k log L_k) for stability."""

    positive_losses = "it minimises the geometric mean of the losses (their log)"

    repeatable: ClassVar[bool] = True

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def combine(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        logs = torch.log(losses.clamp_min(self.eps))
        labelled = self.labelled
        if labelled is None:
            return torch.exp(logs.mean())
        labelled = labelled.to(losses.device)
        count = labelled.sum()
        mean = torch.where(labelled, logs, 0.0).sum() / count.clamp_min(1)
        return torch.exp(mean) * (count > 0)  # 0 (and no gradient) when none is labelled
