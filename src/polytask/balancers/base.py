"""The balancer interface: how the tasks' losses are combined into one training signal.

A balancer declares what it needs from the training step in `needs` (for the methods here:
only the vector of task losses); the step computes exactly that and never looks at the
balancer's name. Balancers are `nn.Module`s so that learnable weights (uncertainty weighting)
reach the optimizer and running state (DWA's loss history) lands in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn


class Balancer(nn.Module):
    """Base class. Constructors store hyper-parameters only; `setup` sizes state for K tasks."""

    needs: ClassVar[frozenset[str]] = frozenset({"losses"})
    task_names: tuple[str, ...]

    def __init__(self) -> None:
        super().__init__()
        self.task_names = ()

    def setup(self, task_names: Sequence[str]) -> None:
        """Called once by the trainer before the optimizer is built."""
        self.task_names = tuple(task_names)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def weights(self, losses: Tensor) -> Tensor:
        """Per-task weights (K,) for the current step."""
        raise NotImplementedError

    def combine(self, losses: Tensor) -> Tensor:
        """The scalar to back-propagate; by default Σ_k w_k · L_k with weights held constant."""
        return (self.weights(losses).detach() * losses).sum()

    def epoch_end(self) -> None:
        """Called at the end of each window (epoch, or N steps when training by steps)."""

    def _check_losses(self, losses: Tensor) -> None:
        if losses.shape != (self.num_tasks,):
            raise ValueError(
                f"{type(self).__name__} expected {self.num_tasks} task losses "
                f"(call setup(task_names) first), got shape {tuple(losses.shape)}"
            )

    def extra_repr(self) -> str:
        return f"tasks={list(self.task_names)}"


def ones_like_tasks(losses: Tensor) -> Tensor:
    return torch.ones_like(losses.detach())
