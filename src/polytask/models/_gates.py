"""Per-task gates over experts: softmax (MMoE) and DSelect-k (Hazimeh et al., "DSelect-k:
Differentiable Selection in the Mixture of Experts", NeurIPS 2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from polytask.models._base import LastForward


class SoftmaxGate(nn.Module):
    """Weights softmax(W x) over the experts, per example."""

    def __init__(self, in_dim: int, num_experts: int) -> None:
        super().__init__()
        self.logits = nn.Linear(in_dim, num_experts)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=-1)


def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """0 below −γ/2, 1 above γ/2, the cubic −2t³/γ³ + 3t/(2γ) + ½ between: it reaches exactly
    0 and 1, so trained selectors become exactly sparse."""
    cubic = -2 / gamma**3 * t**3 + 3 / (2 * gamma) * t + 0.5
    return torch.where(t <= -gamma / 2, 0.0, torch.where(t >= gamma / 2, 1.0, cubic))


class DSelectKGate(nn.Module):
    """k selectors, each choosing one of E experts through ⌈log₂ E⌉ smooth binary decisions
    (the per-example version: decisions and selector weights are linear in x); the gate is the
    softmax-weighted sum of the selectors, so at most k experts get weight once the steps
    saturate. Code c selects expert c mod E, so when E is not a power of two the spare codes
    fall back on the first experts and every selector still sums to one."""

    def __init__(self, in_dim: int, num_experts: int, k: int = 2, gamma: float = 1.0) -> None:
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"DSelect-k needs 1 <= k <= experts ({num_experts}), got k={k}")
        if gamma <= 0:
            raise ValueError(f"DSelect-k gamma must be > 0, got {gamma}")
        self.num_experts, self.k, self.gamma = num_experts, k, gamma
        self.bits = max(1, math.ceil(math.log2(num_experts)))
        self.decisions = nn.Linear(in_dim, k * self.bits)
        self.selector_logits = nn.Linear(in_dim, k)
        codes = torch.arange(2**self.bits)
        table = ((codes[:, None] >> torch.arange(self.bits)) & 1).float()  # (2^bits, bits)
        self.table: Tensor
        self.register_buffer("table", table)
        self.to_expert: Tensor  # (2^bits, E): code → expert
        self.register_buffer("to_expert", nn.functional.one_hot(codes % num_experts).float())
        self._codes = LastForward()  # the last forward's P(code) per selector, for `entropy`

    def forward(self, x: Tensor) -> Tensor:
        steps = smooth_step(self.decisions(x).view(-1, self.k, self.bits), self.gamma)
        # P(code) per selector: Π_b (s_b if bit b of the code is 1 else 1 − s_b) → (B, k, 2^bits)
        on = steps[:, :, None, :] * self.table + (1 - steps[:, :, None, :]) * (1 - self.table)
        codes = on.prod(-1)
        self._codes = LastForward([codes])
        per_selector = codes @ self.to_expert
        mix = torch.softmax(self.selector_logits(x), dim=-1)
        return torch.einsum("bk,bke->be", mix, per_selector)

    def entropy(self) -> Tensor | None:
        """The paper's regulariser on the last forward: each selector's entropy over its codes,
        summed over the k selectors and averaged over the rows; 0 once every selector has made
        its binary decisions (it then picks one expert)."""
        if not self._codes:
            return None
        p = self._codes[0]
        return -(p * torch.log(p.clamp_min(1e-12))).sum((1, 2)).mean()
