"""The meta head init: one set of task-specific parameters per kind and output size, shared by
all tasks of that kind and size, from which a new task's head starts."""

from __future__ import annotations

from torch import Tensor

from polytask.models._base import MultiTaskNet
from polytask.tasks._task import Task

MetaInit = dict[str, list[Tensor]]
""""kind:out_features" → tensors in the order of `task_parameters` (e.g. weight, bias)."""


def meta_init_key(task: Task) -> str:
    """The group a task's head belongs to, e.g. "regression:1" or "multiclass:3"."""
    return f"{task.kind}:{task.out_features}"


def task_shapes(model: MultiTaskNet, name: str) -> list[tuple[int, ...]]:
    """The shapes of a task's own parameters, in `task_parameters` order."""
    return [tuple(p.shape) for p in model.task_parameters(name)]


def mean_task_parameters(model: MultiTaskNet) -> MetaInit:
    """Per group, the mean of its tasks' own parameters (the meta init before any episode).
    Refuses a model whose tasks of one kind and output size have own parameters of different
    shapes: they could not start from one init."""
    groups: dict[str, list[str]] = {}
    for task in model.tasks:
        groups.setdefault(meta_init_key(task), []).append(task.name)
    init: MetaInit = {}
    for key, names in groups.items():
        first = task_shapes(model, names[0])
        for name in names[1:]:
            if task_shapes(model, name) != first:
                raise ValueError(
                    f"meta_learning: tasks {names[0]!r} and {name!r} are both {key} but their "
                    f"own parameters differ in {type(model).__name__} ({first} vs "
                    f"{task_shapes(model, name)}), so they cannot share one head init; give "
                    "them the same head, use another architecture, or train without "
                    "meta_learning"
                )
        params = [list(model.task_parameters(name)) for name in names]
        init[key] = [
            sum((p[i].detach() for p in params[1:]), params[0][i].detach().clone()) / len(names)
            for i in range(len(first))
        ]
    return init


def initial_task_parameters(
    meta_init: MetaInit, task: Task, model: MultiTaskNet
) -> list[Tensor] | None:
    """Where a new task's own parameters start: the meta head init of its kind and output size,
    as copies in `model.task_parameters(task.name)` order (on those parameters' device and
    dtype), or None when there is none for its group or its shapes differ (then keep the
    fresh head). `task` must already be one of `model`'s tasks."""
    init = meta_init.get(meta_init_key(task))
    own = list(model.task_parameters(task.name))
    if init is None or [tuple(t.shape) for t in init] != [tuple(p.shape) for p in own]:
        return None
    return [t.detach().to(p.device, p.dtype).clone() for t, p in zip(init, own, strict=True)]
