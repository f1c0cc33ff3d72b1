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

from polytask.balancers._base import GradientInfo, GramianBalancer, require
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
        require(gamma > 0, "MoDo", "gamma", gamma, "> 0 (the weights' step)")
        require(rho >= 0, "MoDo", "rho", rho, ">= 0 (its regularisation)")
        self.gamma = gamma
        self.rho = rho
        self.register_buffer("lam", torch.zeros(0, dtype=torch.float64))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        k = len(task_names)
        self.lam = torch.full((k,), 1.0 / k, dtype=torch.float64)

    def coefficients(self, info: GradientInfo) -> Tensor:
        """λ's step on the tasks the batch labels (with a nonzero gradient): an absent task's
        zero row would pull λ onto it, and its λ waits for its next observation."""
        g = info.require_gramian()
        lam = self.lam.to(g)
        seen = self.labelled_mask(g.shape[0], g.device)
        if lam.shape != seen.shape:  # λ is sized at setup
            raise RuntimeError(f"MoDo holds {lam.numel()} weights for {g.shape[0]} tasks")
        if not bool(seen.any()):
            return torch.zeros_like(lam)
        part, mass = lam[seen], lam[seen].sum()
        sub = g[seen][:, seen]
        step = project_simplex(part / mass - self.gamma * (sub @ (part / mass)
                                                           + self.rho * (part / mass)))  # fmt: skip
        lam = lam.clone()
        lam[seen] = step * mass
        self.lam = lam
        return torch.where(seen, lam, 0.0) / mass
