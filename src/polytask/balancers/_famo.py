"""FAMO, fast adaptive multitask optimisation (Liu et al., NeurIPS 2023).

Task logits ξ give z = softmax(ξ); the step minimises Σ_k z_k log(L_k − L_min) / c with
c = Σ_k z_k / (L_k − L_min), so task k's gradient is weighted z_k / (c (L_k − L_min)). After
each step ξ moves to make the log losses fall at equal rates:
ξ ← ξ − β (J_softmax(ξ)ᵀ δ + γ ξ), δ_k = log L_k(before) − log L_k(after). "After" is the
next step's loss on a fresh batch, which spares the paper's extra forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import Balancer


class FAMO(Balancer):
    """Loss weighting with O(1) cost per step; β the logit step size, γ its decay.

    Per step (`combine`): the task logits move and the step's log losses are kept.
    """

    updates_state: ClassVar[bool] = True

    logits: Tensor
    previous: Tensor

    def __init__(self, lr: float = 0.025, decay: float = 1e-3, min_loss: float = 0.0) -> None:
        super().__init__()
        self.lr = lr
        self.decay = decay
        self.min_loss = min_loss
        self.register_buffer("logits", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("previous", torch.zeros(0, dtype=torch.float64))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.logits = torch.zeros(len(task_names), dtype=torch.float64)
        self.previous = torch.zeros(0, dtype=torch.float64)

    def _shifted(self, losses: Tensor) -> Tensor:
        return (losses - self.min_loss).clamp_min(1e-8)

    def loss_weights(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        z = torch.softmax(self.logits, 0).to(losses)
        d = self._shifted(losses.detach())
        c = (z / d).sum()
        return z / (c * d)

    def update(self, losses: Tensor) -> None:
        """Move the logits using the change of log losses since the previous step."""
        now = torch.log(self._shifted(losses.detach().double()))
        if self.previous.numel() == self.num_tasks:
            delta = self.previous.to(now) - now
            z = torch.softmax(self.logits, 0)
            jvp = z * (delta - (z * delta).sum())  # J_softmax(ξ)ᵀ δ
            self.logits -= self.lr * (jvp.to(self.logits) + self.decay * self.logits)
        self.previous = now.to(self.logits.device)

    def combine(self, losses: Tensor) -> Tensor:
        self.update(losses)
        return super().combine(losses)
