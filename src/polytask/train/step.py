"""One training step: forward, per-task losses, the balancer's combination, backward, update."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from polytask.balancers.base import Balancer
from polytask.data.tensors import Batch
from polytask.models.hard_sharing import MultiTaskModel
from polytask.tasks.task import Task


@dataclass(frozen=True)
class StepResult:
    losses: Tensor
    """Per-task losses (K,), detached."""


def task_losses(outputs: dict[str, Tensor], batch: Batch, tasks: Sequence[Task]) -> Tensor:
    """Stack each task's masked loss into a vector (K,)."""
    return torch.stack([t.compute_loss(outputs[t.name], batch.targets[t.name]) for t in tasks])


def train_step(
    model: MultiTaskModel,
    balancer: Balancer,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    tasks: Sequence[Task],
) -> StepResult:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    losses = task_losses(model(batch.x), batch, tasks)
    total = balancer.combine(losses)
    total.backward()
    optimizer.step()
    return StepResult(losses.detach())
