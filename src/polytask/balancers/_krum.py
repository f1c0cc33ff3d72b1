"""Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
Descent", NeurIPS 2017), as torchjd offers it for multi-task aggregation.

Each task gradient scores the sum of squared distances to its K − f − 2 nearest others
(‖g_i − g_j‖² = G_ii + G_jj − 2G_ij); the m lowest-scoring gradients are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer


class Krum(GramianBalancer):
    """f = `n_byzantine` tolerated outliers, m = `n_selected` gradients kept. A partly labelled
    batch is aggregated over its labelled tasks, tolerating as many outliers as they allow."""

    labelled_subproblem: ClassVar[bool] = False  # restricts itself, tolerating fewer outliers

    def __init__(self, n_byzantine: int = 1, n_selected: int = 1) -> None:
        super().__init__()
        if n_byzantine < 0 or n_selected < 1:
            raise ValueError("Krum needs n_byzantine >= 0 and n_selected >= 1")
        self.n_byzantine = n_byzantine
        self.n_selected = n_selected

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self._check(len(self.task_names))

    def _check(self, k: int) -> None:
        if k - self.n_byzantine - 2 < 1 or self.n_selected > k:
            raise ValueError(
                f"Krum with n_byzantine={self.n_byzantine}, n_selected={self.n_selected} needs "
                f"at least {self.n_byzantine + 3} tasks and n_selected <= tasks; got {k} tasks"
            )

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        k = g.shape[0]
        self._check(k)
        labelled = self.labelled
        if labelled is None:
            return self._krum(g, self.n_byzantine, self.n_selected)
        rows = labelled.to(g.device).nonzero().squeeze(1)
        m = len(rows)  # tolerate as many outliers as m tasks allow; below 3 tasks, the mean
        sub = self._krum(
            g[rows][:, rows], max(min(self.n_byzantine, m - 3), 0), min(self.n_selected, m)
        )
        return torch.zeros(k, dtype=g.dtype, device=g.device).index_copy_(0, rows, sub)

    @staticmethod
    def _krum(g: Tensor, byzantine: int, selected: int) -> Tensor:
        k = g.shape[0]
        if k - byzantine - 2 < 1:
            return torch.full((k,), 1.0 / max(k, 1), dtype=g.dtype, device=g.device)
        neighbours = k - byzantine - 2
        diag = g.diagonal()
        dist = (diag[:, None] + diag[None, :] - 2 * g).clamp_min(0)
        dist.fill_diagonal_(float("inf"))
        scores = torch.sort(dist, dim=1).values[:, :neighbours].sum(1)
        chosen = torch.argsort(scores)[:selected]
        c = torch.zeros(k, dtype=g.dtype, device=g.device)
        c[chosen] = 1.0 / selected
        return c
