"""Dynamic weight averaging, DWA (Liu, Johns & Davison, "End-to-end multi-task learning with
attention", CVPR 2019).

    w_k(t) = K · exp(r_k(t−1) / T) / Σ_i exp(r_i(t−1) / T),   r_k(t−1) = L̄_k(t−1) / L̄_k(t−2)

where L̄_k(t) is task k's mean training loss over window t (an epoch, or N steps when training
by steps) and T is the temperature (2 by default). Until two windows are complete, w_k = 1.

With partially labelled batches (`Balancer.labelled`), L̄_k(t) is the mean over the steps of
window t that labelled task k (a zero loss on the others is no observation: counted, it made
L̄ follow how often a task was labelled, and 0 for a window without labels). A task with no
label in a window keeps its history; one with fewer than two windows of labels gets the mean
ratio of the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import Balancer


class DynamicWeightAverage(Balancer):
    """DWA: tasks whose loss falls more slowly get more weight.

    Per step (`combine`): the labelled tasks' losses are added to the window's sums; the
    weights change once per window (epoch_end).
    """

    positive_losses = "it weighs tasks by the ratio of their losses over the last windows"

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
        self.window_count = torch.zeros(k, dtype=torch.float64)  # steps that labelled each
        self.history = torch.ones(2, k, dtype=torch.float64)  # [L̄(t−2), L̄(t−1)]
        self.completed = torch.zeros(k, dtype=torch.long)  # windows that labelled each task

    def loss_weights(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        mature = self.completed >= 2
        if not bool(mature.any()):
            return torch.ones_like(losses.detach())
        ratio = self.history[1] / self.history[0].clamp_min(1e-12)
        ratio = torch.where(mature, ratio, ratio[mature].mean())
        w = self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)
        return w.to(losses.dtype).to(losses.device)

    def combine(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)  # before the running sums, which setup sizes
        labelled = self.labelled
        if labelled is None:
            self.window_sum += losses.detach().to(self.window_sum)
            self.window_count += 1
        else:
            seen = labelled.to(self.window_sum.device)
            self.window_sum += torch.where(seen, losses.detach().to(self.window_sum), 0.0)
            self.window_count += seen
        return super().combine(losses)

    def epoch_end(self) -> None:
        seen = self.window_count > 0
        if not bool(seen.any()):
            return
        mean = self.window_sum / self.window_count.clamp_min(1)
        self.history = torch.stack([
            torch.where(seen, self.history[1], self.history[0]),
            torch.where(seen, mean, self.history[1]),
        ])  # fmt: skip
        self.completed += seen
        self.window_sum.zero_()
        self.window_count.zero_()

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Checkpoints from before per-task counts kept one count for all tasks: broadcast."""
        for name in ("window_count", "completed"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.dim() == 0 and self.num_tasks:
                state_dict[prefix + name] = saved.expand(self.num_tasks).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
