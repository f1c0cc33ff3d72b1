"""Shared pieces for architecture tests: data whose targets need a learnt trunk, and the check
that training beat the heads alone (the same model from the same start, trunk frozen)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from polytask import TaskData, TrainConfig, Trainer, make_balancer
from polytask.balancers import Balancer
from polytask.models import MultiTaskNet

GAIN = 1.3
"""Training must lower the validation loss at least GAIN times as much as the heads alone."""


def trunk_data(n: int, seed: int, names: Sequence[str] = ("a", "b", "c", "d")) -> TaskData:
    """Regression tasks (up to four) that are smooth non-linear functions of two directions s
    and r of 20 inputs: a trunk that learns s and r fits them all; heads on a random trunk
    cannot."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    s = x @ torch.linspace(-1, 1, 20) / 2.5
    r = x @ torch.cos(torch.arange(20.0)) / 3
    targets = [torch.tanh(2 * s), torch.tanh(-2 * s) + 0.5 * s, torch.tanh(2 * r),
               torch.tanh(2 * (s + r))]  # fmt: skip
    return TaskData(x, dict(zip(names, targets, strict=False)))


def trunk(model: MultiTaskNet) -> list[nn.Parameter]:
    """The parameters the heads alone leave untrained: the shared ones (soft sharing shares
    none outright; its towers are what the coupling ties)."""
    shared = list(model.shared_parameters())
    return shared or list(model.towers.parameters())  # type: ignore[union-attr]


def heads_alone(
    build: Callable[[], MultiTaskNet], train: TaskData, val: TaskData, config: TrainConfig
) -> tuple[float, float]:
    """The validation loss of `build()` (seeded) at the start, and after training it with equal
    weights and its trunk frozen."""
    torch.manual_seed(0)
    model = build()
    freeze: tuple[str, ...] = ("shared",)
    if not list(model.shared_parameters()):
        freeze = ()
        for p in trunk(model):
            p.requires_grad_(False)
    frozen = Trainer(model, make_balancer("ew"), dataclasses.replace(config, freeze=freeze))
    start = sum(m["loss"] for m in frozen.evaluate(val).values())
    history = frozen.fit(train, val)
    return float(start), float(history[-1]["val/loss"])


def assert_trunk_trained(
    model: MultiTaskNet,
    before: Sequence[torch.Tensor],
    trained: float,
    baseline: tuple[float, float],
    gain: float = GAIN,
) -> None:
    """The trunk moved from `before` (most of its tensors, by 5% of its norm), and training
    lowered the validation loss `gain` times as much as the heads alone (`baseline`)."""
    after = trunk(model)
    moved = [not torch.equal(p, p0) for p, p0 in zip(after, before, strict=True)]
    change = torch.cat([(p - p0).flatten() for p, p0 in zip(after, before, strict=True)])
    assert sum(moved) >= 0.75 * len(moved), f"shared tensors moved: {moved}"
    assert change.norm() > 0.05 * torch.cat([p.flatten() for p in before]).norm()
    start, frozen = baseline
    assert trained < frozen and start - trained > gain * (start - frozen), (
        f"val loss {start:.3f} → {trained:.3f}; with the trunk frozen → {frozen:.3f}"
    )


def fit_and_check(
    build: Callable[[], MultiTaskNet],
    balancer: Balancer,
    train: TaskData,
    val: TaskData,
    config: TrainConfig,
    gain: float = GAIN,
) -> tuple[Trainer, list[dict[str, float]]]:
    """Train `build()` (seeded) with `balancer`, then `assert_trunk_trained` against the same
    model trained with its trunk frozen; returns the trainer and its history."""
    torch.manual_seed(0)
    model = build()
    before = [p.detach().clone() for p in trunk(model)]
    trainer = Trainer(model, balancer, config)
    history = trainer.fit(train, val)
    baseline = heads_alone(build, train, val, config)
    assert_trunk_trained(model, before, history[-1]["val/loss"], baseline, gain)
    return trainer, history
