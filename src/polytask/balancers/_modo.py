"""MoDo, multi-objective gradient with double sampling (Chen et al., NeurIPS 2023).

Keeps simplex weights λ and takes one projected step per training step,
λ ← Π_Δ(λ − γ (G λ + ρ λ)), then updates along Jᵀλ. The paper draws the two factors of G and
the update direction from three independent batches; here all come from the step's batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import project_simplex


class MoDo(GramianBalancer):
    """γ: step size of λ; ρ: its ℓ2 regulariser.

    Per step (`coefficients`): λ takes one projected step.
    """

    updates_state: ClassVar[bool] = True
    labelled_subproblem: ClassVar[bool] = False  # per-task state: sees every row

    lam: Tensor

    def __init__(self, gamma: float = 1e-3, rho: float = 0.1) -> None:
        super().__init__()
        self.gamma = gamma
        self.rho = rho
        self.register_buffer("lam", torch.zeros(0, dtype=torch.float64))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        k = len(task_names)
        self.lam = torch.full((k,), 1.0 / k, dtype=torch.float64)

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        lam = self.lam.to(g)
        self.lam = project_simplex(lam - self.gamma * (g @ lam + self.rho * lam))
        return self.lam.clone()
