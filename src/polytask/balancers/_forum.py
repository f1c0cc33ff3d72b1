"""FORUM, a first-order multi-gradient method for multi-objective bilevel optimisation (Ye,
Lin, Zhang & Kwok, ECAI 2024), as a loss-weighting method.

The lower level trains the model on Σ_k α_k L_k (α on the simplex); the upper level is the
validation loss F. FORUM replaces the lower level by the value-function constraint
q(α, θ) = f(α, θ) − f(α, θ_T(α)) ≤ 0 and moves (α, θ) along d = −(∇F + ν∇q), with ν ≥ 0 the
multiplier of ⟨∇q, d⟩ ≤ −ρ‖∇q‖², in closed form ν = max(0, ρ − ⟨∇F, ∇q⟩ / ‖∇q‖²).
Here θ_T is one inner step θ − η Jᵀα, linearised: ∇_α q ≈ η Gα, ∇_θ q = Jᵀα, so
‖∇q‖² = η²‖Gα‖² + αᵀGα and ⟨∇F, ∇q⟩ = αᵀ(J g_val). The shared update is ν Jᵀα + g_val
(coefficients (ν α, 1), the last weighing the validation gradient) and α takes the step
α ← Π_Δ(α − β ν η Gα). The upper level is the summed validation loss, so the multi-gradient
over several upper-level objectives reduces to that single gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import BilevelBalancer, GradientInfo
from polytask.balancers._solvers import project_simplex


class FORUM(BilevelBalancer):
    """ρ: constraint strength; η: the inner step of the value function; β: the step of α.

    Per step (`coefficients`): α takes one projected step (none when ν = 0).
    """

    updates_state: ClassVar[bool] = True
    steps_on_validation: ClassVar[bool] = True  # ν = 0: the update is g_val alone

    alpha: Tensor

    def __init__(self, rho: float = 0.1, inner_lr: float = 0.1, meta_lr: float = 0.1) -> None:
        super().__init__()
        if rho < 0 or inner_lr <= 0 or meta_lr <= 0:
            raise ValueError("FORUM needs rho >= 0, inner_lr > 0 and meta_lr > 0")
        self.rho, self.inner_lr, self.meta_lr = rho, inner_lr, meta_lr
        self.register_buffer("alpha", torch.zeros(0, dtype=torch.float64))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        k = len(task_names)
        self.alpha = torch.full((k,), 1.0 / k, dtype=torch.float64)

    def coefficients(self, info: GradientInfo) -> Tensor:
        if info.val_products is None:
            raise ValueError("FORUM needs the validation-gradient products")
        g = info.require_gramian()
        alpha = self.alpha.to(g)
        g_alpha = g @ alpha
        q_sq = self.inner_lr**2 * (g_alpha @ g_alpha) + alpha @ g_alpha
        inner = alpha @ info.val_products.to(g)
        nu = torch.clamp(self.rho - inner / q_sq, min=0) if q_sq > 0 else g.new_zeros(())
        self.alpha = project_simplex(alpha - self.meta_lr * nu * self.inner_lr * g_alpha)
        return torch.cat([nu * alpha, g.new_ones(1)])
