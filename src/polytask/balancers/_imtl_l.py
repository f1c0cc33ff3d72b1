"""IMTL-L, the loss-balance half of IMTL (Liu et al., "Towards Impartial Multi-task
Learning", ICLR 2021): learnable s_k, combined loss Σ_k e^{s_k} L_k − s_k, whose optimum
e^{s_k} L_k = 1 makes every scaled loss equal.

A task a batch does not label (`Balancer.labelled`) has no term: its loss of 0 would leave
only −s_k, whose gradient pushes s_k up at every such step, so rarely labelled tasks ended
up weighted by about 1 / (how often they are labelled)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from polytask.balancers._base import Balancer


class LossScales(Balancer):
    """Learnable log loss scales s, one per task (init 0), trained by the model's optimizer;
    shared by IMTL-L and the IMTL hybrid. s is a learned weight, not running state: a call
    never changes it (so `updates_state` is False)."""

    positive_losses = (
        "it learns a scale exp(s) of each loss, which a negative loss drives without bound"
    )

    def __init__(self) -> None:
        super().__init__()
        self.log_scales = nn.Parameter(torch.zeros(0))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.log_scales = nn.Parameter(torch.zeros(len(task_names)))


class ImpartialLoss(LossScales):
    """Combined loss Σ_k e^{s_k} L_k − s_k; s is learned by the optimizer (no running state)."""

    def combine(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        s = self.log_scales.to(losses.dtype)
        terms = torch.exp(s) * losses - s
        labelled = self.labelled
        if labelled is None:
            return terms.sum()
        return torch.where(labelled.to(terms.device), terms, 0.0).sum()
