"""Smooth Tchebycheff scalarisation, STCH (Lin et al., ICML 2024).

With losses normalised by a nadir point L̄ (their mean over the first window, during which
the log losses are summed as in the paper's warm-up), the combined loss is

    K · μ · log Σ_k exp(log(L_k / L̄_k) / μ)

a smooth maximum that concentrates on the worst-off task as μ → 0.

With a partially labelled batch (`Balancer.labelled`) the maximum is over the labelled tasks,
scaled by their number |S| instead of K, and each task's nadir averages the warm-up steps that
labelled it; a task first labelled after the warm-up takes that loss as its nadir. (A zero
loss counted in the nadir pulled it towards 0, and a task never labelled in the warm-up got
a nadir of 0 and an infinite loss.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import Balancer, require


class SmoothTchebycheff(Balancer):
    """μ is the smoothing; `warmup_windows` windows collect the nadir point.

    Per step (`combine`), during warm-up only: the labelled tasks' losses are added to the
    nadir sums (after it, only for tasks never labelled yet); the window count advances once
    per window (epoch_end), and the nadir is fixed after warm-up.
    """

    positive_losses = "it takes the log losses"

    updates_state: ClassVar[bool] = True

    nadir_sum: Tensor
    nadir_count: Tensor
    windows: Tensor

    def __init__(self, mu: float = 1.0, warmup_windows: int = 1) -> None:
        super().__init__()
        if mu <= 0:
            raise ValueError(f"STCH mu must be > 0, got {mu}")
        require(warmup_windows >= 0, "STCH", "warmup_windows", warmup_windows, ">= 0")
        self.mu = mu
        self.warmup_windows = warmup_windows
        self.register_buffer("nadir_sum", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("nadir_count", torch.zeros(0, dtype=torch.long))
        self.register_buffer("windows", torch.zeros((), dtype=torch.long))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.nadir_sum = torch.zeros(len(task_names), dtype=torch.float64)
        self.nadir_count = torch.zeros(len(task_names), dtype=torch.long)

    def _warm(self) -> bool:
        return int(self.windows) >= self.warmup_windows

    def _nadir(self, losses: Tensor) -> Tensor | None:
        """Each task's nadir (its own loss now where it has none yet); None during warm-up."""
        if not self._warm():
            return None
        ready = self.nadir_count > 0
        mean = self.nadir_sum / self.nadir_count.clamp_min(1)
        return torch.where(ready, mean, losses.detach().to(mean)).to(losses)

    def scalarise(self, losses: Tensor) -> Tensor:
        """The STCH value, without touching state."""
        self._check_losses(losses)
        nadir = self._nadir(losses)
        logs = torch.log(losses.clamp_min(1e-20))
        labelled = self.labelled
        if labelled is None:
            if nadir is None:
                return logs.sum()
            rel = logs - torch.log(nadir)
            return self.num_tasks * self.mu * torch.logsumexp(rel / self.mu, dim=0)
        labelled = labelled.to(losses.device)
        if nadir is None or not bool(labelled.any()):
            return torch.where(labelled, logs, 0.0).sum()
        rel = torch.where(labelled, logs - torch.log(nadir.clamp_min(1e-20)), -torch.inf)
        return labelled.sum() * self.mu * torch.logsumexp(rel / self.mu, dim=0)

    def combine(self, losses: Tensor) -> Tensor:
        labelled = self.labelled
        seen = (
            torch.ones_like(self.nadir_count, dtype=torch.bool)
            if labelled is None
            else labelled.to(self.nadir_count.device)
        )
        collect = seen if not self._warm() else seen & (self.nadir_count == 0)
        if bool(collect.any()):
            self.nadir_sum += torch.where(
                collect, losses.detach().double().to(self.nadir_sum.device), 0.0
            )
            self.nadir_count += collect
        return self.scalarise(losses)

    def loss_weights(self, losses: Tensor) -> Tensor:
        probe = losses.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.scalarise(probe), probe)
        return grad

    def epoch_end(self) -> None:
        self.windows += 1

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Checkpoints from before per-task counts kept one count for all tasks: broadcast."""
        saved = state_dict.get(prefix + "nadir_count")
        if saved is not None and saved.dim() == 0 and self.num_tasks:
            state_dict[prefix + "nadir_count"] = saved.expand(self.num_tasks).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
