"""Auto-Lambda (Liu, James, Davison & Johns, TMLR 2022), first-order.

Task weights λ are meta-learned to lower a validation loss after a virtual step
θ' = θ − η Σ λ_k g_k. To first order ∂L_val(θ')/∂λ_k = −η g_valᵀ g_k, so each step
λ_k ← max(0, λ_k + β η g_valᵀ g_k): tasks whose gradients help the validation loss gain
weight. The engine supplies g_valᵀ g_k from a validation batch (a `BilevelBalancer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import BilevelBalancer, GradientInfo, require


class AutoLambda(BilevelBalancer):
    """`meta_lr` is β·η, the step of λ per unit hypergradient.

    Per step (`coefficients`): λ takes one hypergradient step.
    """

    updates_state: ClassVar[bool] = True

    lam: Tensor

    def __init__(self, meta_lr: float = 1e-2, init: float = 1.0) -> None:
        super().__init__()
        require(meta_lr > 0, "Auto-Lambda", "meta_lr", meta_lr, "> 0 (the weights' step)")
        require(init >= 0, "Auto-Lambda", "init", init, ">= 0 (the weights' start)")
        self.meta_lr = meta_lr
        self.init = init
        self.register_buffer("lam", torch.zeros(0, dtype=torch.float64))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.lam = torch.full((len(task_names),), self.init, dtype=torch.float64)

    def step_weights(self, lam: Tensor, products: Tensor) -> Tensor:
        return (lam + self.meta_lr * products).clamp_min(0)

    def coefficients(self, info: GradientInfo) -> Tensor:
        if info.val_products is None:
            raise ValueError(f"{type(self).__name__} needs the validation-gradient products")
        products = info.val_products.double().to(self.lam.device)
        self.lam = self.step_weights(self.lam, products)
        return self.lam.clone()
