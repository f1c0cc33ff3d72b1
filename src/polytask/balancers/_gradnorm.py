"""GradNorm (Chen et al., ICML 2018).

Learnable weights w_k move so that each weighted gradient norm w_k‖g_k‖ tracks
mean_j(w_j‖g_j‖) · r_k^α, where r_k is task k's loss ratio L_k/L_k(0) relative to the mean
ratio. The GradNorm loss Σ_k |w_k‖g_k‖ − target_k| (targets held constant, as in the paper)
has the closed-form gradient sign(·)‖g_k‖ in w_k, so no second-order backward is needed: the
norms come from the Gramian's diagonal. The weights are renormalised to sum to K after each
step, as in the paper: the parameter itself is, before its gradient is taken, so that the
optimizer's step lands on w (rescaling only where it was read, the step was K / Σw times
another and drifted with Σw).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from polytask.balancers._base import GradientInfo, GramianBalancer, first_labelled, require


class GradNorm(GramianBalancer):
    """α is the restoring-force strength; the weights are trained by the model's optimizer.

    No running state per step: the weights are a learnable parameter (`coefficients` only adds
    their gradient to `.grad`, as a backward pass would), and L_k(0) is recorded once, on the
    first step that labels each task (so `updates_state` is False).
    """

    labelled_subproblem: ClassVar[bool] = False  # learnable per-task weights: sees every row

    initial: Tensor

    def __init__(self, alpha: float = 1.5) -> None:
        super().__init__()
        require(alpha >= 0, "GradNorm", "alpha", alpha, ">= 0 (its restoring force)")
        self.alpha = alpha
        self.loss_scale = nn.Parameter(torch.ones(0))
        self.register_buffer("initial", torch.zeros(0, dtype=torch.float64))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.loss_scale = nn.Parameter(torch.ones(len(task_names)))
        self.initial = torch.zeros(0, dtype=torch.float64)

    def current_weights(self) -> Tensor:
        w = self.loss_scale.detach().double().clamp_min(1e-6)
        return self.num_tasks * w / w.sum()

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        losses = info.losses.detach().double().to(g.device)
        if self.initial.numel() != losses.numel():
            self.initial = torch.full_like(losses, torch.nan)
        # L_k(0) at the first step that labels task k: an unlabelled task's loss is the 0 of an
        # empty mean, which as L_k(0) made its ratio ~1e12 for the whole run
        fresh = self.initial.isnan() & first_labelled(self.labelled, losses)
        self.initial = torch.where(fresh, losses.clamp_min(1e-12), self.initial)
        w = self.current_weights()
        with torch.no_grad():  # the paper's renormalisation, on the parameter the step moves
            self.loss_scale.copy_(w.to(self.loss_scale))
        w = w.to(g)
        norms = g.diagonal().clamp_min(0).sqrt()
        weighted = w * norms
        ratio = (losses / self.initial.to(g)).nan_to_num(0.0)  # not labelled yet: loss 0
        ratio = ratio / ratio.mean().clamp_min(1e-12)
        target = weighted.mean() * ratio**self.alpha
        grad = (torch.sign(weighted - target) * norms).to(self.loss_scale)
        self.loss_scale.grad = grad if self.loss_scale.grad is None else self.loss_scale.grad + grad
        return w
