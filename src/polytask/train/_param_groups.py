"""Optimizer parameter groups from the per-task regularisation settings of `TrainConfig`."""

from __future__ import annotations

from typing import Any

from torch import nn

from polytask.models._base import MultiTaskNet
from polytask.train._config import TrainConfig


def check_task_settings(model: MultiTaskNet, config: TrainConfig) -> None:
    """Every task named in the per-task settings must be one of the model's tasks."""
    names = set(model.task_names)
    for what, keys in (
        ("task_lr", config.task_lr),
        ("task_weight_decay", config.task_weight_decay),
        ("freeze", [k for k in config.freeze if k != "shared"]),
    ):
        unknown = sorted(set(keys) - names)
        if unknown:
            raise ValueError(
                f"training.{what} names unknown tasks {unknown}; the model's tasks are "
                f"{sorted(names)}" + (' (or "shared")' if what == "freeze" else "")
            )
        empty = [t for t in keys if next(iter(model.task_parameters(t)), None) is None]
        if empty:
            raise ValueError(
                f"training.{what} names {empty}, which own no parameters of their own in "
                f"{type(model).__name__} (what computes them is shared with other tasks), so "
                "the setting would change nothing: leave them out, or set it on the shared "
                "parameters (training.lr, weight_decay; freeze: [shared])"
            )
    if "shared" in config.freeze and next(iter(model.shared_parameters()), None) is None:
        raise ValueError(
            f"training.freeze names 'shared', but {type(model).__name__} has no parameters "
            "shared between tasks (each task has its own), so it would change nothing: leave "
            "it out, or freeze tasks by name"
        )


def parameter_groups(model: MultiTaskNet, config: TrainConfig) -> list[dict[str, Any]]:
    """Shared parameters at the base settings, each task's own with its multiplier and decay;
    frozen parts get requires_grad=False and no group."""
    check_task_settings(model, config)
    frozen = set(config.freeze)
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()

    def add(params: list[nn.Parameter], lr: float, decay: float, freeze: bool) -> None:
        fresh = [p for p in params if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        if freeze:
            for p in fresh:
                p.requires_grad_(False)
        elif fresh:
            groups.append({"params": fresh, "lr": lr, "weight_decay": decay})

    add(list(model.shared_parameters()), config.lr, config.weight_decay, "shared" in frozen)
    for name in model.task_names:
        add(
            list(model.task_parameters(name)),
            config.lr * config.task_lr.get(name, 1.0),
            config.task_weight_decay.get(name, config.weight_decay),
            name in frozen,
        )
    rest = [p for p in model.parameters() if id(p) not in seen]
    add(rest, config.lr, config.weight_decay, False)
    return groups
