"""AITM, adaptive information transfer multi-task (Xi et al., KDD 2021), for tasks that follow
each other in a funnel (impression → click → conversion).

Each stage has its own tower on a shared trunk. From the second stage on, what the previous
stage learnt (its fused vector, through a transfer layer p) and the stage's own tower output q
are fused by attention: z_t = Σ_{u ∈ {p, q}} w_u h(u), w = softmax(⟨f(u), g(u)⟩ / √d).
The behavioural expectation calibrator adds α · mean_x Σ_t max(ŷ_t(x) − ŷ_{t−1}(x), 0) to the
loss, so that a later stage's probability (conversion) does not exceed an earlier one (click).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from polytask._validation import checked
from polytask.models._base import LastForward, MultiTaskNet
from polytask.models._esmm import check_funnel, check_funnel_targets
from polytask.models._hints import LayerSizes, Rate, Strength, TaskRates
from polytask.models._mlp import MLP
from polytask.models._towers import check_task_dropout
from polytask.tasks._task import Task


class _Transfer(nn.Module):
    """Stage t's attention over [what stage t − 1 passes on, stage t's own tower output]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.carry = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.h, self.f, self.g = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, previous: Tensor, own: Tensor) -> tuple[Tensor, Tensor]:
        u = torch.stack([self.carry(previous), own], dim=1)  # (B, 2, d)
        scores = (self.f(u) * self.g(u)).sum(-1) / math.sqrt(u.shape[-1])
        weights = torch.softmax(scores, dim=1)
        return (weights.unsqueeze(-1) * self.h(u)).sum(1), weights


class AITM(MultiTaskNet):
    """`tasks` in funnel order, all binary with one output; outputs are each stage's logit.

    `calibration` is the calibrator's α (0 turns it off); `task_dropout` gives a stage's tower
    its own dropout rate. Parameters follow reach: what feeds a later stage is shared."""

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        hidden: Sequence[int] = (64,),
        tower: Sequence[int] = (32,),
        dropout: float = 0.0,
        calibration: float = 0.6,
        task_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self._init_tasks(tasks)
        check_funnel(tasks, "AITM")
        if not tower:
            raise ValueError("AITM needs a tower (its last size is the transfer width)")
        if calibration < 0:
            raise ValueError(f"calibration must be >= 0, got {calibration}")
        rates = check_task_dropout(task_dropout or {}, self.task_names)
        self.trunk = MLP(in_dim, hidden, dropout)
        self.towers = nn.ModuleDict(
            {n: MLP(hidden[-1], tower, rates.get(n, dropout)) for n in self.task_names}
        )
        dim = tower[-1]
        self.transfers = nn.ModuleDict({n: _Transfer(dim) for n in self.task_names[1:]})
        self.heads = nn.ModuleDict({t.name: t.build_head(dim) for t in tasks})
        self.calibration = calibration
        self._probs = LastForward()
        self._carried: dict[str, Tensor] = {}  # floats only when asked: no sync per step

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.trunk(x)
        out: dict[str, Tensor] = {}
        fused: Tensor | None = None
        self._carried = {}
        for t in self.tasks:
            own = self.towers[t.name](z)
            if fused is None:
                fused = own
            else:
                fused, weights = self.transfers[t.name](fused, own)
                self._carried[t.name] = weights[:, 0].detach().mean()
            out[t.name] = t.shape_output(self.heads[t.name](fused))
        self._probs = LastForward(torch.sigmoid(o) for o in out.values())
        return out

    def penalty(self) -> Tensor | None:
        """α · mean over the last forward's rows of Σ_t max(ŷ_t − ŷ_{t−1}, 0)."""
        if self.calibration == 0 or len(self._probs) < 2:
            return None
        probs = torch.stack(self._probs)
        return self.calibration * torch.relu(probs[1:] - probs[:-1]).sum(0).mean()

    def diagnostics(self) -> dict[str, float]:
        """Per later stage, the mean attention weight on what the previous stage passed on."""
        return {f"aitm/{name}/transfer": float(w) for name, w in self._carried.items()}

    def check_targets(self, targets: Mapping[str, Tensor]) -> None:
        check_funnel_targets(self.tasks, targets, "AITM")

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The trunk and everything of a stage that feeds the next one: its tower and fusion."""
        yield from self.trunk.parameters()
        for name in self.task_names[:-1]:
            yield from self.towers[name].parameters()
            if name in self.transfers:
                yield from self.transfers[name].parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        if name == self.task_names[-1]:
            yield from self.towers[name].parameters()
            if name in self.transfers:
                yield from self.transfers[name].parameters()
        yield from self.heads[name].parameters()


def build_aitm(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    tower: LayerSizes = (32,),
    task_dropout: TaskRates | None = None,
    calibration: Strength = 0.6,
) -> AITM:
    """`aitm`: binary tasks in funnel order, like esmm, with attention that carries each stage
    into the next (`tower`'s last size wide) and a calibrator of strength `calibration`
    against later stages out-predicting earlier ones."""
    return AITM(
        len(features),
        tasks,
        hidden=hidden,
        tower=tower,
        dropout=dropout,
        calibration=calibration,
        task_dropout=task_dropout,
    )
