"""Aligned-MTL (Senushkin et al., "Independent Component Alignment for Multi-Task
Learning", CVPR 2023).

Aligns the task gradients to an orthogonal, equally scaled system: with J = UΣVᵀ and σ_min
the smallest non-zero singular value, J̃ = σ_min U Vᵀ = B J where B = σ_min G^(−1/2) (on the
range of G). The update is J̃ᵀ 1 = Jᵀ(B 1), so c = B 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer


class AlignedMTL(GramianBalancer):
    """Rank from the unit gradients' Gramian Ĝ = S⁻¹GS⁻¹, S = diag ‖g_k‖ (eigenvalues below
    K·eps32·λ_max count as zero, as in the paper's code, but on G that cut the directions of
    tasks ~1e3× smaller than the others); σ from R = S V Λ^½ (G = RRᵀ), which keeps their
    spread unsquared."""

    def coefficients(self, info: GradientInfo) -> Tensor:
        gramian = info.require_gramian()
        g = gramian.detach().double().cpu().numpy()  # K × K in NumPy: a third of torch's cost
        k = len(g)
        diag = np.diagonal(g)
        s = np.sqrt(np.where(diag > 0, diag, 1.0))
        eigvals, eigvecs = np.linalg.eigh(g / s[:, None] / s[None, :])
        keep = eigvals > max(float(eigvals.max()), 0.0) * k * np.finfo(np.float32).eps
        if not keep.any():
            return torch.zeros(k, dtype=gramian.dtype, device=gramian.device)
        factor = s[:, None] * eigvecs[:, keep] * np.sqrt(eigvals[keep])  # G = R Rᵀ on the range
        u, sigma, _ = np.linalg.svd(factor, full_matrices=False)
        c = sigma.min() * (u / sigma) @ (u.T @ np.ones(k))
        return torch.from_numpy(c).to(gramian.device)
