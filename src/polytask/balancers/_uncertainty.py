"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

Each task k has a learnable log-variance s_k = log σ_k² (initialised to 0), and the combined
loss is

    Σ_k exp(−s_k) · L_k + s_k

which is twice Kendall et al.'s regression form Σ_k L_k / (2σ_k²) + log σ_k: the same
minimiser, s_k* = log L_k. The s_k are trained by the same optimizer as the model.

A task a batch does not label (`Balancer.labelled`) has no term: its loss of 0 would leave
only s_k, whose gradient pulls s_k down at every such step, so rarely labelled tasks ended up
weighted by about 1 / (how often they are labelled).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from polytask.balancers._base import Balancer


class UncertaintyWeighting(Balancer):
    """Homoscedastic-uncertainty weighting; effective weights exp(−s_k).

    No running state: s is a learnable parameter moved by the model's optimizer, not by
    `combine` (so `updates_state` is False).
    """

    positive_losses = (
        "it learns a scale exp(-s) of each loss, which a negative loss drives without bound"
    )

    def __init__(self, init_log_var: float = 0.0) -> None:
        super().__init__()
        self.init_log_var = init_log_var
        self.log_vars = nn.Parameter(torch.zeros(0))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.log_vars = nn.Parameter(torch.full((len(task_names),), float(self.init_log_var)))

    def combine(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        s = self.log_vars.to(losses.dtype)
        terms = torch.exp(-s) * losses + s
        labelled = self.labelled
        if labelled is None:
            return terms.sum()
        return torch.where(labelled.to(terms.device), terms, 0.0).sum()
