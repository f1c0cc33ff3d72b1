"""MOML, multi-objective meta learning (Ye et al., NeurIPS 2021), first-order.

The loss weights live on the simplex and follow the validation hypergradient: with the
first-order approximation ∂L_val(θ')/∂λ_k ≈ −η g_valᵀ g_k, each step is
λ ← Π_Δ(λ + β η g_valᵀ g); the update is Jᵀλ. (Its multi-objective upper level is reduced to
the summed validation loss.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._auto_lambda import AutoLambda
from polytask.balancers._solvers import project_simplex


class MOML(AutoLambda):
    """Simplex-constrained meta-learned weights.

    Per step (`coefficients`): λ takes one projected hypergradient step.
    """

    updates_state: ClassVar[bool] = True

    def __init__(self, meta_lr: float = 1e-2) -> None:
        super().__init__(meta_lr=meta_lr)

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.lam = torch.full((len(task_names),), 1.0 / len(task_names), dtype=torch.float64)

    def step_weights(self, lam: Tensor, products: Tensor) -> Tensor:
        return project_simplex(lam + self.meta_lr * products)
