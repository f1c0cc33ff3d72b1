"""ExcessMTL (He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024).

Estimates each task's excess risk with a diagonal (AdaGrad-style) Hessian approximation,
e_k = g_kᵀ diag(Σ_t g_k,t² + ε)^(−½) g_k, relative to its first value, and raises the weights
of tasks far from their optimum: w ← w ⊙ exp(η e / e_0), renormalised to sum to K. The
update is Jᵀw. The accumulated squared gradients are K × n state (needs the Jacobian).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import (
    GradientInfo,
    JacobianBalancer,
    first_labelled,
    require,
    weighted_sum,
)


class ExcessMTL(JacobianBalancer):
    """η = `robust_step_size`.

    Per step (`aggregate`): the squared gradients accumulate and the weights move (e_0 is
    recorded at the first step that labels each task; a task's weight moves from the next).
    """

    updates_state: ClassVar[bool] = True
    labelled_subproblem: ClassVar[bool] = False  # per-task state: sees every row

    squares: Tensor
    initial: Tensor
    loss_weight: Tensor

    keeps_gradient_state: ClassVar[bool] = True

    def __init__(self, robust_step_size: float = 1e-2) -> None:
        super().__init__()
        require(robust_step_size > 0, "ExcessMTL", "robust_step_size", robust_step_size, "> 0")
        self.robust_step_size = robust_step_size
        self.register_buffer("squares", torch.zeros(0))
        self.register_buffer("initial", torch.zeros(0))
        self.register_buffer("loss_weight", torch.zeros(0))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.loss_weight = torch.ones(len(task_names))
        self.squares = torch.zeros(0)
        self.initial = torch.zeros(0)

    def aggregate(self, info: GradientInfo) -> Tensor:
        assert info.jacobian is not None
        jac = info.jacobian
        owned = self.squares.shape == jac.shape  # then accumulate in place on the state
        squares = self.squares.to(jac).addcmul_(jac, jac) if owned else jac.square()
        excess = squares.add(1e-7).rsqrt_().mul_(jac).mul_(jac).sum(1)  # Σ g² / √(Σ_t g²)
        w = self.loss_weight.to(jac)
        if self.initial.numel() != excess.numel():
            self.initial = torch.full_like(excess, torch.nan)
        initial = self.initial.to(jac)
        recorded = ~initial.isnan()  # e_0 at each task's first labelled step (0 unlabelled)
        if bool(recorded.any()):
            relative = (excess / initial.clamp_min(1e-20)).where(recorded, 0.0)
            w = w * torch.exp(self.robust_step_size * relative)
            w = w / w.sum() * len(w)
        fresh = ~recorded & first_labelled(self.labelled, excess)
        self.initial = torch.where(fresh, excess, initial)
        self.squares, self.loss_weight = squares, w
        return weighted_sum(w, jac)
