"""Task-specific towers: the layers a task owns on top of what it reads from shared parts."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from polytask.tasks.task import Task


def task_tower(in_dim: int, hidden: Sequence[int], task: Task, dropout: float = 0.0) -> nn.Module:
    """A task's own layers: `hidden` linear → ReLU blocks, then the task's output head."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = width
    head = task.build_head(prev)
    return nn.Sequential(*layers, head) if layers else head
