"""IMTL, the hybrid of IMTL-L and IMTL-G (Liu et al., "Towards Impartial Multi-task
Learning", ICLR 2021), as LibMTL's `IMTL`.

The losses are scaled first, L_k' = e^{s_k} L_k − s_k with learnable s (IMTL-L), so the
scaled gradients are e^{s_k} g_k and their Gramian is D G D with D = diag(e^s); IMTL-G's
coefficients c' on the scaled gradients give c = D c' on the raw ones. s gets the closed-form
gradient ∂L'/∂s = e^s L − 1 and is trained by the model's optimizer.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo
from polytask.balancers._imtl_g import IMTLG
from polytask.balancers._imtl_l import LossScales


class IMTL(LossScales, IMTLG):
    """Loss scales s (init 0) plus IMTL-G on the scaled gradients.

    No running state: s is learned by the optimizer; `coefficients` only adds its gradient to
    `s.grad`, as a backward pass would (so `updates_state` is False). With a partially
    labelled batch, IMTL-G runs on the labelled tasks and only their scales move.
    """

    labelled_subproblem: ClassVar[bool] = False  # learnable per-task scales: restricts itself

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        scales = torch.exp(self.log_scales.detach().double()).to(g.device)
        losses = info.losses.double().to(g.device)
        labelled = self.labelled
        keep = torch.ones_like(losses, dtype=torch.bool) if labelled is None else labelled
        keep = keep.to(g.device)
        grad = torch.where(keep, scales * losses - 1, 0.0)  # an absent task's scale holds
        rows = keep.nonzero().squeeze(1)
        sub = scales[rows]
        gram = g[rows][:, rows] * sub[:, None] * sub[None, :]
        c = torch.zeros_like(scales)
        if len(rows):
            c[rows] = sub * super().coefficients(GradientInfo(losses[rows], gramian=gram))
        grad = grad.to(self.log_scales)
        self.log_scales.grad = grad if self.log_scales.grad is None else self.log_scales.grad + grad
        return c
