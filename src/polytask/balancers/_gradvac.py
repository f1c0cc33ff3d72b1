"""Gradient Vaccine, GradVac (Wang et al., ICLR 2021).

Like PCGrad, but each pair (i, j) has a target cosine φ̂_ij (an EMA with rate β of the
observed cosines, starting at 0). When cos(g_i', g_j) < φ̂_ij, g_i' is moved towards g_j:

    g_i' ← g_i' + g_j · ‖g_i'‖ (φ̂ √(1−φ²) − φ √(1−φ̂²)) / (‖g_j‖ √(1−φ̂²))

All inner products come from the Gramian (g_i' = Σ_m C_im g_m).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import partner_orders


class GradVac(GramianBalancer):
    """β is the EMA rate of the target cosines.

    Per step (`coefficients`): the target cosines move towards the observed ones.
    """

    updates_state: ClassVar[bool] = True
    labelled_subproblem: ClassVar[bool] = False  # per-task state: sees every row

    targets: Tensor

    def __init__(self, beta: float = 0.5) -> None:
        super().__init__()
        if not 0 <= beta <= 1:
            raise ValueError(f"GradVac beta must be in [0, 1], got {beta}")
        self.beta = beta
        self.register_buffer("targets", torch.zeros(0, 0, dtype=torch.float64))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        k = len(task_names)
        self.targets = torch.zeros(k, k, dtype=torch.float64)

    def coefficients(self, info: GradientInfo) -> Tensor:
        # K x K float64 work in NumPy: its small ops cost a third of torch's here (GradVac's
        # rounds are ~50 of them each), 1 ms instead of 3 at K = 32.
        gramian = info.require_gramian()
        g = gramian.detach().double().cpu().numpy()
        k = len(g)
        targets = self.targets.detach().cpu().numpy().copy()
        coef = np.eye(k)
        rows_t, order_t = partner_orders(k, torch.device("cpu"))
        rows, order = rows_t.numpy(), order_t.numpy()
        diag = np.diagonal(g)
        for r in range(k):  # round r: every task i adjusts against its r-th partner at once
            j = order[:, r]
            norm_i = np.sqrt(np.clip(((coef @ g) * coef).sum(1), 0, None))
            live = (j != rows) & (diag[j] > 0) & (norm_i > 0)
            i, j, n_i = rows[live], j[live], norm_i[live]
            n_j = np.sqrt(diag[j])
            phi = (coef[i] * g[:, j].T).sum(1) / (n_i * n_j)
            target = targets[i, j]
            low = phi < target
            num = target * np.sqrt(np.clip(1 - phi**2, 0, None)) - phi * np.sqrt(
                np.clip(1 - target**2, 0, None)
            )
            den = n_j * np.sqrt(np.clip(1 - target**2, 1e-12, None))
            coef[i[low], j[low]] += (n_i * num / den)[low]
            targets[i, j] = (1 - self.beta) * target + self.beta * phi
        self.targets = torch.from_numpy(targets).to(self.targets.device)
        return torch.from_numpy(coef.sum(0)).to(gramian.device)
