"""Task-specific towers: the layers a task owns on top of what it reads from shared parts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from polytask.models._mlp import MLP
from polytask.tasks._task import Task


def task_tower(
    in_dim: int, hidden: Sequence[int], task: Task, dropout: float = 0.0, input_dropout: float = 0.0
) -> nn.Module:
    """A task's own layers: an `MLP` of `hidden` sizes (flattened into one nn.Sequential, so
    that its first linear layer can be read off), then the task's output head; `input_dropout`
    drops the features the task reads before its first layer."""
    layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout > 0 else []
    if hidden:
        body = MLP(in_dim, hidden, dropout)
        layers += [*body.net]
        in_dim = body.out_dim
    head = task.build_head(in_dim)
    return nn.Sequential(*layers, head) if layers else head


def check_task_dropout(task_dropout: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """Per-task dropout rates, refused when a name is not a task or a rate is outside [0, 1)."""
    unknown = sorted(set(task_dropout) - set(names))
    if unknown:
        raise ValueError(f"task_dropout names unknown tasks {unknown}; tasks: {list(names)}")
    bad = {n: r for n, r in task_dropout.items() if not 0 <= r < 1}
    if bad:
        raise ValueError(f"task_dropout rates must be in [0, 1), got {bad}")
    return dict(task_dropout)


def task_towers(
    in_dim: int,
    hidden: Sequence[int],
    tasks: Sequence[Task],
    dropout: float = 0.0,
    task_dropout: Mapping[str, float] | None = None,
) -> nn.ModuleDict:
    """One `task_tower` per task. A task listed in `task_dropout` gets its own rate, on the
    features it reads and in its tower's hidden layers (instead of `dropout`)."""
    rates = check_task_dropout(task_dropout or {}, [t.name for t in tasks])
    return nn.ModuleDict(
        {
            t.name: task_tower(in_dim, hidden, t, rates.get(t.name, dropout), rates.get(t.name, 0))
            for t in tasks
        }
    )
