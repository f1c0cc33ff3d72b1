"""MGDA (Désidéri 2012; Sener & Koltun, "Multi-Task Learning as Multi-Objective
Optimization", NeurIPS 2018): the minimum-norm point of the convex hull of the task
gradients, λ* = argmin_{λ ∈ Δ} λᵀGλ, solved exactly as a QP. `normalize` rescales the task
gradients first ("l2": unit norm, "loss": by the loss, "loss+": by loss × norm).

MGDA-UB is the same method on the representation gradients (`preferred_mode`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import min_norm_simplex

Normalization = Literal["none", "l2", "loss", "loss+"]


def gradient_scales(info: GradientInfo, normalize: str) -> Tensor:
    """Per-task divisors of the gradients for the usual MGDA normalisations."""
    g = info.require_gramian()
    norms = g.diagonal().clamp_min(0).sqrt()
    losses = info.losses.detach().double().to(g.device).abs()
    if normalize == "l2":
        return norms
    if normalize == "loss":
        return losses
    if normalize == "loss+":
        return losses * norms
    return torch.ones_like(norms)


class MGDA(GramianBalancer):
    """Pareto-stationary common descent direction; c = λ* (on the simplex)."""

    def __init__(self, normalize: Normalization = "none") -> None:
        super().__init__()
        self.normalize = normalize

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        scales = gradient_scales(info, self.normalize)
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # no absolute floor
        scaled = g / scales[:, None] / scales[None, :]
        return min_norm_simplex(scaled) / scales


class MGDAUpperBound(MGDA):
    """MGDA-UB: MGDA on gradients with respect to the shared representation."""

    preferred_mode: ClassVar[str | None] = "representation"
