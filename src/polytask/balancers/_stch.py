"""Smooth Tchebycheff scalarisation, STCH (Lin et al., ICML 2024).

With losses normalised by a nadir point L̄ (their mean over the first window, during which
the log losses are summed as in the paper's warm-up), the combined loss is

    K · μ · log Σ_k exp(log(L_k / L̄_k) / μ)

a smooth maximum that concentrates on the worst-off task as μ → 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import Balancer


class SmoothTchebycheff(Balancer):
    """μ is the smoothing; `warmup_windows` windows collect the nadir point.

    Per step (`combine`), during warm-up only: the losses are added to the nadir sums; the
    window count advances once per window (epoch_end), and the nadir is fixed after warm-up.
    """

    updates_state: ClassVar[bool] = True

    nadir_sum: Tensor
    nadir_count: Tensor
    windows: Tensor

    def __init__(self, mu: float = 1.0, warmup_windows: int = 1) -> None:
        super().__init__()
        if mu <= 0:
            raise ValueError(f"STCH mu must be > 0, got {mu}")
        self.mu = mu
        self.warmup_windows = warmup_windows
        self.register_buffer("nadir_sum", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("nadir_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("windows", torch.zeros((), dtype=torch.long))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.nadir_sum = torch.zeros(len(task_names), dtype=torch.float64)

    def _nadir(self) -> Tensor | None:
        if int(self.windows) < self.warmup_windows or int(self.nadir_count) == 0:
            return None
        return self.nadir_sum / self.nadir_count

    def scalarise(self, losses: Tensor) -> Tensor:
        """The STCH value, without touching state."""
        self._check_losses(losses)
        nadir = self._nadir()
        logs = torch.log(losses.clamp_min(1e-20))
        if nadir is None:
            return logs.sum()
        rel = logs - torch.log(nadir.to(losses))
        return self.num_tasks * self.mu * torch.logsumexp(rel / self.mu, dim=0)

    def combine(self, losses: Tensor) -> Tensor:
        if self._nadir() is None:
            self.nadir_sum += losses.detach().double().to(self.nadir_sum.device)
            self.nadir_count += 1
        return self.scalarise(losses)

    def loss_weights(self, losses: Tensor) -> Tensor:
        probe = losses.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.scalarise(probe), probe)
        return grad

    def epoch_end(self) -> None:
        self.windows += 1
