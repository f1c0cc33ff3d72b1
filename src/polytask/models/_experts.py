"""Mixtures of experts with per-task gates: MMoE (Ma et al., KDD 2018) and CGC / PLE
(Tang et al., "Progressive Layered Extraction", RecSys 2020).

Every task reads its own softmax-gated mixture of expert outputs through its own tower. Expert
usage per task (the gate weights averaged over the last batch) is kept for analysis.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from polytask._validation import checked
from polytask.models._base import MultiTaskNet
from polytask.models._gates import DSelectKGate, SoftmaxGate
from polytask.models._hints import Count, LayerSizes, Rate, Strength, TaskRates, TowerSizes
from polytask.models._mlp import MLP
from polytask.models._towers import task_towers
from polytask.tasks._task import Task


def _check_sizes(num_experts: int, hidden: Sequence[int], what: str) -> None:
    if num_experts < 1:
        raise ValueError(f"{what} needs at least one expert, got {num_experts}")
    if not hidden or min(hidden) < 1:
        raise ValueError(f"{what} expert_hidden must list positive sizes, got {list(hidden)}")


class _GatedMixture(MultiTaskNet):
    """Shared plumbing: towers, the usage record and the diagnostics it feeds."""

    towers: nn.ModuleDict

    def _init_usage(self) -> None:
        self._usage: dict[str, Tensor] = {}

    def expert_usage(self) -> dict[str, Tensor]:
        """Per task, the mean gate weight of each expert it can read on the last batch."""
        return dict(self._usage)

    def diagnostics(self) -> dict[str, float]:
        return {
            f"experts/{name}/{i}": float(w)
            for name, usage in self._usage.items()
            for i, w in enumerate(usage)
        }

    def _heads(self, mixtures: dict[str, Tensor]) -> dict[str, Tensor]:
        return {t.name: t.shape_output(self.towers[t.name](mixtures[t.name])) for t in self.tasks}


def _mix(gate: nn.Module, x: Tensor, experts: Tensor) -> tuple[Tensor, Tensor]:
    """The gate's weights (B, E) on x over expert outputs (B, E, d): the mixture (B, d) and
    the weights."""
    weights = gate(x)
    return torch.einsum("be,bed->bd", weights, experts), weights


def _gate(kind: str, in_dim: int, num_experts: int, top_k: int | None) -> nn.Module:
    if kind == "softmax":
        if top_k is not None:
            raise ValueError(
                f"top_k {top_k} limits the experts of gate 'dselect'; the softmax gate weighs "
                "every expert: drop top_k, or set gate: dselect"
            )
        return SoftmaxGate(in_dim, num_experts)
    if kind == "dselect":
        return DSelectKGate(in_dim, num_experts, k=2 if top_k is None else top_k)
    raise ValueError(f"gate must be 'softmax' or 'dselect', got {kind!r}")


class MMoE(_GatedMixture):
    """Shared experts; one gate per task over all of them (softmax, or DSelect-k choosing at
    most `top_k` experts), then the task's tower."""

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        num_experts: int = 4,
        expert_hidden: Sequence[int] = (64,),
        tower: Sequence[int] = (),
        dropout: float = 0.0,
        gate: str = "softmax",
        top_k: int | None = None,
        task_dropout: Mapping[str, float] | None = None,
        gate_entropy: float = 0.0,
    ) -> None:
        super().__init__()
        self._init_tasks(tasks)
        _check_sizes(num_experts, expert_hidden, "MMoE")
        if gate_entropy and gate != "dselect":
            raise ValueError(
                f"gate_entropy {gate_entropy} pushes DSelect-k's selectors to binary decisions, "
                "and the softmax gate has none: drop gate_entropy, or set gate: dselect"
            )
        if gate_entropy < 0:
            raise ValueError(f"gate_entropy must be >= 0, got {gate_entropy}")
        self.gate_entropy = gate_entropy
        self.experts = nn.ModuleList(
            [MLP(in_dim, expert_hidden, dropout) for _ in range(num_experts)]
        )
        dim = expert_hidden[-1]
        self.gates = nn.ModuleDict({t.name: _gate(gate, in_dim, num_experts, top_k) for t in tasks})
        self.towers = task_towers(dim, tower, tasks, dropout, task_dropout)
        self._init_usage()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outs = torch.stack([expert(x) for expert in self.experts], dim=1)
        mixtures = {}
        for name in self.task_names:
            mixtures[name], weights = _mix(self.gates[name], x, outs)
            self._usage[name] = weights.detach().mean(0)
        return self._heads(mixtures)

    def penalty(self) -> Tensor | None:
        """`gate_entropy` × the DSelect-k gates' selector entropy on the last forward (the
        paper's regulariser: without it nothing drives the selectors to pick one expert
        each)."""
        if not self.gate_entropy:
            return None
        gates = [g for g in self.gates.values() if isinstance(g, DSelectKGate)]
        terms = [e for g in gates if (e := g.entropy()) is not None]
        return self.gate_entropy * torch.stack(terms).sum() if terms else None

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.experts.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        yield from self.gates[name].parameters()
        yield from self.towers[name].parameters()


class _Level(nn.Module):
    """One PLE extraction level: shared experts, each task's experts and gate, and (below the
    top level) the shared gate over all experts."""

    def __init__(
        self,
        width: int,
        names: Sequence[str],
        shared: int,
        own: int,
        hidden: Sequence[int],
        dropout: float,
        top: bool,
    ) -> None:
        super().__init__()

        def experts(n: int) -> nn.ModuleList:
            return nn.ModuleList([MLP(width, hidden, dropout) for _ in range(n)])

        self.shared_experts = experts(shared)
        self.task_experts = nn.ModuleDict({n: experts(own) for n in names})
        self.task_gates = nn.ModuleDict({n: SoftmaxGate(width, own + shared) for n in names})
        self.shared_gate = None if top else SoftmaxGate(width, shared + own * len(names))

    def forward(
        self, shared_in: Tensor, task_in: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        shared_out = [e(shared_in) for e in self.shared_experts]
        own = {n: [e(task_in[n]) for e in self.task_experts[n]] for n in task_in}  # type: ignore[attr-defined]
        mixed, weights = {}, {}
        for n in task_in:
            mixed[n], weights[n] = _mix(
                self.task_gates[n], task_in[n], torch.stack(own[n] + shared_out, 1)
            )
        if self.shared_gate is not None:
            every = [o for n in task_in for o in own[n]] + shared_out
            shared_in, _ = _mix(self.shared_gate, shared_in, torch.stack(every, 1))
        return shared_in, mixed, weights


class PLE(_GatedMixture):
    """Progressive layered extraction: `levels` of shared and task-specific experts. Each task's
    gate mixes its own experts with the shared ones; below the top level a shared gate mixes
    all experts into the next level's shared input. One level is CGC."""

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        levels: int = 2,
        shared_experts: int = 2,
        task_experts: int = 1,
        expert_hidden: Sequence[int] = (64,),
        tower: Sequence[int] = (),
        dropout: float = 0.0,
        task_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self._init_tasks(tasks)
        if levels < 1:
            raise ValueError(f"PLE needs at least one level, got {levels}")
        _check_sizes(shared_experts, expert_hidden, "PLE shared")
        _check_sizes(task_experts, expert_hidden, "PLE task")
        dim = expert_hidden[-1]
        self.levels = nn.ModuleList(
            [
                _Level(
                    in_dim if i == 0 else dim,
                    self.task_names,
                    shared_experts,
                    task_experts,
                    expert_hidden,
                    dropout,
                    top=i == levels - 1,
                )
                for i in range(levels)
            ]
        )
        self.towers = task_towers(dim, tower, tasks, dropout, task_dropout)
        self._init_usage()

    def _level_list(self) -> list[_Level]:
        return [level for level in self.levels if isinstance(level, _Level)]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        shared_in, task_in = x, dict.fromkeys(self.task_names, x)
        weights: dict[str, Tensor] = {}
        for level in self._level_list():
            shared_in, task_in, weights = level(shared_in, task_in)
        self._usage = {n: w.detach().mean(0) for n, w in weights.items()}  # the top level's
        return self._heads(task_in)

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """Shared experts and gates, the task experts below the top level (the shared gate passes
        their outputs on to every task) and the task gates that feed those experts."""
        levels = self._level_list()
        for level in levels:
            yield from level.shared_experts.parameters()
            if level.shared_gate is not None:
                yield from level.shared_gate.parameters()
        for level in levels[:-1]:
            yield from level.task_experts.parameters()
        for level in levels[:-2]:
            yield from level.task_gates.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        """The task's gates at the top two levels, its top-level experts and its tower."""
        self._check_task(name)
        levels = self._level_list()
        for level in levels[-2:]:
            yield from level.task_gates[name].parameters()
        yield from levels[-1].task_experts[name].parameters()
        yield from self.towers[name].parameters()


def build_mmoe(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    tower: TowerSizes = (),
    task_dropout: TaskRates | None = None,
    experts: Count = 4,
    gate: Literal["softmax", "dselect"] = "softmax",
    top_k: Count | None = None,
    gate_entropy: Strength = 0.0,
) -> MMoE:
    """`mmoe`: `experts` shared experts of `hidden` sizes; per task a gate ("softmax", or
    "dselect": DSelect-k, at most `top_k` experts, 2 by default, once `gate_entropy` has
    driven its selectors to binary decisions) over them, then its head or `tower`."""
    return MMoE(
        len(features),
        tasks,
        num_experts=experts,
        expert_hidden=hidden,
        tower=tower,
        dropout=dropout,
        gate=gate,
        top_k=top_k,
        task_dropout=task_dropout,
        gate_entropy=gate_entropy,
    )


def build_cgc(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    tower: TowerSizes = (),
    task_dropout: TaskRates | None = None,
    experts: Count = 2,
    task_experts: Count = 1,
) -> PLE:
    """`cgc`: one PLE level: `experts` shared and `task_experts` own experts (of `hidden`
    sizes) per task, mixed by the task's gate, then its head or `tower`."""
    return PLE(
        len(features),
        tasks,
        levels=1,
        shared_experts=experts,
        task_experts=task_experts,
        expert_hidden=hidden,
        tower=tower,
        dropout=dropout,
        task_dropout=task_dropout,
    )


def build_ple(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    tower: TowerSizes = (),
    task_dropout: TaskRates | None = None,
    experts: Count = 2,
    task_experts: Count = 1,
    levels: Count = 2,
) -> PLE:
    """`ple`: `levels` of extraction, each with `experts` shared and `task_experts` own experts
    per task (of `hidden` sizes); below the top level a shared gate feeds the next level."""
    return PLE(
        len(features),
        tasks,
        levels=levels,
        shared_experts=experts,
        task_experts=task_experts,
        expert_hidden=hidden,
        tower=tower,
        dropout=dropout,
        task_dropout=task_dropout,
    )
