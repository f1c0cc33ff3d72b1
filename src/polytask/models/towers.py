"""Task-specific towers: the layers a task owns on top of what it reads from shared parts."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from polytask.models.mlp import MLP
from polytask.tasks.task import Task


def task_tower(in_dim: int, hidden: Sequence[int], task: Task, dropout: float = 0.0) -> nn.Module:
    """A task's own layers: an `MLP` of `hidden` sizes (flattened into one nn.Sequential, so
    that its first linear layer can be read off), then the task's output head."""
    if not hidden:
        return task.build_head(in_dim)
    body = MLP(in_dim, hidden, dropout)
    return nn.Sequential(*body.net, task.build_head(body.out_dim))
