"""Dynamic weight averaging, DWA (Liu, Johns & Davison, "End-to-end multi-task learning with
attention", CVPR 2019).

    w_k(t) = K · exp(r_k(t−1) / T) / Σ_i exp(r_i(t−1) / T),   r_k(t−1) = L̄_k(t−1) / L̄_k(t−2)

where L̄_k(t) is task k's mean training loss over window t (an epoch, or N steps when training
by steps) and T is the temperature (2 by default). Until two windows are complete, w_k = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import Balancer


class DynamicWeightAverage(Balancer):
    """DWA: tasks whose loss falls more slowly get more weight.

    Per step (`combine`): the losses are added to the window's sums; the weights change once
    per window (epoch_end).
    """

    updates_state: ClassVar[bool] = True

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"DWA temperature must be > 0, got {temperature}")
        self.temperature = temperature
        for name in ("window_sum", "window_count", "history", "completed"):
            self.register_buffer(name, torch.zeros(0))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        k = len(task_names)
        self.window_sum = torch.zeros(k, dtype=torch.float64)
        self.window_count = torch.zeros((), dtype=torch.float64)
        self.history = torch.ones(2, k, dtype=torch.float64)  # [L̄(t−2), L̄(t−1)]
        self.completed = torch.zeros((), dtype=torch.long)

    def loss_weights(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        if int(self.completed) < 2:
            return torch.ones_like(losses.detach())
        ratio = self.history[1] / self.history[0].clamp_min(1e-12)
        w = self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)
        return w.to(losses.dtype).to(losses.device)

    def combine(self, losses: Tensor) -> Tensor:
        self.window_sum += losses.detach().to(self.window_sum)
        self.window_count += 1
        return super().combine(losses)

    def epoch_end(self) -> None:
        if float(self.window_count) == 0:
            return
        mean = self.window_sum / self.window_count
        self.history = torch.stack([self.history[1], mean])
        self.completed += 1
        self.window_sum.zero_()
        self.window_count.zero_()
