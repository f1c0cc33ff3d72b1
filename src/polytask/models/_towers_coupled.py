"""One tower per task, coupled softly: cross-stitch units (Misra et al., CVPR 2016) or a penalty
on the distance between the towers' corresponding weights (soft parameter sharing, Duong et al.
2015; trace-norm coupling, Yang & Hospedales, ICLR 2017)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from polytask._validation import checked
from polytask.models._base import MultiTaskNet
from polytask.models._hints import LayerSizes, Rate, Strength, TaskRates
from polytask.models._towers import check_task_dropout
from polytask.tasks._task import Task


def _tower(in_dim: int, hidden: Sequence[int]) -> nn.ModuleList:
    """Linear layers of one tower (activation and dropout are applied between them)."""
    if not hidden or min(hidden) < 1:
        raise ValueError(f"towers need positive hidden layer sizes, got {list(hidden)}")
    sizes = [in_dim, *hidden]
    return nn.ModuleList([nn.Linear(a, b) for a, b in itertools.pairwise(sizes)])


class _Towers(MultiTaskNet):
    """K towers of the same shape, one head each, ReLU and dropout between layers."""

    def _build(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        hidden: Sequence[int],
        dropout: float,
        task_dropout: Mapping[str, float] | None,
    ) -> None:
        self._init_tasks(tasks)
        rates = check_task_dropout(task_dropout or {}, self.task_names)
        self.towers = nn.ModuleDict({t.name: _tower(in_dim, hidden) for t in tasks})
        self.heads = nn.ModuleDict({t.name: t.build_head(hidden[-1]) for t in tasks})
        self.dropout = nn.ModuleDict(
            {n: nn.Dropout(rates.get(n, dropout)) for n in self.task_names}
        )
        self.depth = len(hidden)

    def _layer(self, name: str, i: int, h: Tensor) -> Tensor:
        return self.dropout[name](torch.relu(self.towers[name][i](h)))  # type: ignore[index]

    def _outputs(self, hs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {t.name: t.shape_output(self.heads[t.name](hs[t.name])) for t in self.tasks}


class CrossStitch(_Towers):
    """After every layer, task k continues with Σ_j α_kj h_j; α starts as the identity (the
    towers are then independent networks) unless `init_mix` gives the off-diagonal share.

    Once α leaves the identity every tower feeds every task, so the towers and the α units are
    the shared parameters; the heads are each task's own.
    """

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        init_mix: float = 0.0,
        task_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self._build(in_dim, tasks, hidden, dropout, task_dropout)
        if not 0 <= init_mix < 1:
            raise ValueError(f"init_mix must be in [0, 1), got {init_mix}")
        k = len(tasks)
        off = init_mix / (k - 1) if k > 1 else 0.0
        start = torch.full((k, k), off) + torch.eye(k) * (1 - init_mix - off)
        self.alphas = nn.ParameterList([nn.Parameter(start.clone()) for _ in range(self.depth)])

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        names = self.task_names
        hs = torch.stack([x] * len(names))
        for i, alpha in enumerate(self.alphas):
            hs = torch.stack([self._layer(n, i, hs[k]) for k, n in enumerate(names)])
            hs = torch.einsum("kj,jbd->kbd", alpha, hs)
        return self._outputs(dict(zip(names, hs, strict=True)))

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.alphas
        yield from self.towers.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        return self.heads[name].parameters()


class SoftSharing(_Towers):
    """Independent towers plus `coupling` × a penalty tying corresponding weight matrices:
    "l2", Σ_k ‖W_k − W̄‖² to their mean, or "trace", the nuclear norm of the matrix whose
    rows are the towers' flattened weights (low rank = shared structure). Nothing is shared
    outright, so only loss-weighting balancers apply."""

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        coupling: float = 1e-3,
        penalty: Literal["l2", "trace"] = "l2",
        task_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self._build(in_dim, tasks, hidden, dropout, task_dropout)
        if coupling < 0:
            raise ValueError(f"coupling must be >= 0, got {coupling}")
        if penalty not in ("l2", "trace"):
            raise ValueError(f"penalty must be 'l2' or 'trace', got {penalty!r}")
        self.coupling, self.penalty_kind = coupling, penalty

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        hs = {}
        for name in self.task_names:
            h = x
            for i in range(self.depth):
                h = self._layer(name, i, h)
            hs[name] = h
        return self._outputs(hs)

    def penalty(self) -> Tensor | None:
        """coupling × the distance between the towers (0 when they are identical)."""
        if self.coupling == 0:
            return None
        terms = []
        for i in range(self.depth):
            rows = torch.stack(
                [self.towers[n][i].weight.reshape(-1) for n in self.task_names]  # type: ignore[index]
            )
            if self.penalty_kind == "l2":
                terms.append((rows - rows.mean(0)).pow(2).sum())
            else:
                terms.append(torch.linalg.matrix_norm(rows, ord="nuc"))
        return self.coupling * torch.stack(terms).sum()

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        yield from self.towers[name].parameters()
        yield from self.heads[name].parameters()


def build_cross_stitch(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    task_dropout: TaskRates | None = None,
) -> CrossStitch:
    """`cross_stitch`: one tower of `hidden` sizes per task (no separate `tower`), mixed after
    every layer by cross-stitch units."""
    return CrossStitch(
        len(features), tasks, hidden=hidden, dropout=dropout, task_dropout=task_dropout
    )


def build_soft_sharing(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    task_dropout: TaskRates | None = None,
    coupling: Strength = 1e-3,
    penalty: Literal["l2", "trace"] = "l2",
) -> SoftSharing:
    """`soft_sharing`: one tower of `hidden` sizes per task (no separate `tower`), tied by
    `coupling` × an "l2" or "trace" `penalty`; nothing is shared outright."""
    return SoftSharing(
        len(features),
        tasks,
        hidden=hidden,
        dropout=dropout,
        coupling=coupling,
        penalty=penalty,
        task_dropout=task_dropout,
    )
