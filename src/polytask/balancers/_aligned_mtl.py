"""Aligned-MTL (Senushkin et al., "Independent Component Alignment for Multi-Task
Learning", CVPR 2023).

Aligns the task gradients to an orthogonal, equally scaled system: with J = UΣVᵀ and σ_min
the smallest non-zero singular value, J̃ = σ_min U Vᵀ = B J where B = σ_min G^(−1/2) (on the
range of G). The update is J̃ᵀ 1 = Jᵀ(B 1), so c = B 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer


class AlignedMTL(GramianBalancer):
    """Eigen-decomposition of G; eigenvalues below K·eps·λ_max count as zero."""

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        k = g.shape[0]
        eigvals, eigvecs = torch.linalg.eigh(g)
        tol = eigvals.max().clamp_min(0) * k * torch.finfo(torch.float32).eps
        keep = eigvals > tol
        if not bool(keep.any()):
            return torch.zeros(k, dtype=g.dtype, device=g.device)
        lam, vec = eigvals[keep], eigvecs[:, keep]
        b = lam.min().sqrt() * (vec / lam.sqrt()) @ vec.T
        return b.sum(1)
