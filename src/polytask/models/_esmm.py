"""ESMM, the entire space multi-task model (Ma et al., SIGIR 2018), for tasks that follow each
other in a funnel (impression → click → conversion).

Stage k has its own tower giving the conditional probability p_k = P(stage k | stage k − 1)
from a shared trunk; task k is supervised on every impression with P(stages 1..k) = Π_{j≤k} p_j,
so the later stages are learnt over the entire space, not only over the rows that passed the
earlier stages. Outputs are logits of those products, computed in log space for stability.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polytask._validation import checked
from polytask.models._base import MultiTaskNet
from polytask.models._hints import LayerSizes, Rate, TaskRates, TowerSizes
from polytask.models._mlp import MLP
from polytask.models._towers import task_towers
from polytask.tasks._kinds import BinaryKind
from polytask.tasks._task import Task


def chain_logit(log_p: Tensor, log_q: Tensor) -> Tensor:
    """logit(p · σ(b)) from log p and the stage logit b, without leaving log space:
    log(1 − p σ(b)) = logaddexp(log(1 − p), log p + log σ(−b))."""
    log_not_p = torch.log(-torch.expm1(log_p).clamp_max(-1e-30))  # log(1 − p) for p < 1
    log_prod = log_p + F.logsigmoid(log_q)
    log_not_prod = torch.logaddexp(log_not_p, log_p + F.logsigmoid(-log_q))
    return log_prod - log_not_prod


def check_funnel(tasks: Sequence[Task], model: str) -> None:
    """Funnel models need binary stages with one output each."""
    bad = [t.name for t in tasks if not isinstance(t.kind_spec, BinaryKind) or t.out_features != 1]
    if bad:
        raise ValueError(f"{model} stages must be binary tasks with one output; not {bad}")


def check_funnel_targets(tasks: Sequence[Task], targets: Mapping[str, Tensor], model: str) -> None:
    """A funnel's stage k is supervised on every impression: where stage k − 1 is 0, stage k
    is 0 by definition. Refuse a 1 there (no funnel), and warn of a missing label there (NaN
    for "not clicked, so not applicable"): those rows then leave stage k's loss, which falls
    back to the rows that passed stage k − 1, the biased population the model exists to
    avoid."""
    stopped: Tensor | None = None  # rows where some earlier stage is 0, not only the last
    earlier: list[str] = []
    for task in tasks:
        if task.name not in targets:
            continue
        later = targets[task.name]
        if stopped is not None:
            _check_stage(model, earlier, task.name, stopped, later)
        stopped = (later == 0) if stopped is None else stopped | (later == 0)
        earlier.append(task.name)


def _check_stage(
    model: str, earlier: Sequence[str], after: str, stopped: Tensor, later: Tensor
) -> None:
    before, all_before = " or ".join(map(repr, earlier)), " and ".join(map(repr, earlier))
    passed = int((stopped & (later == 1)).sum())
    if passed:
        raise ValueError(
            f"{model}: {passed} row(s) have {after!r} = 1 where {before} = 0, "
            f"but a funnel's {after!r} happens only after every earlier stage: check the "
            "labels, or their order in tasks (earlier stage first)"
        )
    blank = int((stopped & torch.isnan(later.float())).sum())
    if blank:
        warnings.warn(
            f"{model}: {blank} row(s) have no {after!r} label where {before} "
            f"= 0; on them {after!r} is 0 by the funnel's definition, and left "
            f"missing they leave its loss, which then learns from the rows that passed "
            f"{all_before} only (the bias {model} removes): give them 0",
            UserWarning,
            stacklevel=4,
        )


class ESMM(MultiTaskNet):
    """`tasks` in funnel order, all binary: task k's output is the logit of P(stages 1..k)."""

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        hidden: Sequence[int] = (64,),
        tower: Sequence[int] = (32,),
        dropout: float = 0.0,
        task_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self._init_tasks(tasks)
        check_funnel(tasks, "ESMM")
        self.trunk = MLP(in_dim, hidden, dropout)
        self.towers = task_towers(hidden[-1], tower, tasks, dropout, task_dropout)

    def stage_logits(self, x: Tensor) -> dict[str, Tensor]:
        """Each stage's conditional logit, P(stage k | stage k − 1) = σ(logit)."""
        z = self.trunk(x)
        return {t.name: self.towers[t.name](z).squeeze(-1) for t in self.tasks}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        stages = self.stage_logits(x)
        out: dict[str, Tensor] = {}
        log_p: Tensor | None = None
        for name in self.task_names:
            b = stages[name]
            if log_p is None:
                out[name], log_p = b, F.logsigmoid(b)
            else:
                out[name] = chain_logit(log_p, b)
                log_p = log_p + F.logsigmoid(b)
        return out

    def check_targets(self, targets: Mapping[str, Tensor]) -> None:
        check_funnel_targets(self.tasks, targets, "ESMM")

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The trunk, and every stage's tower but the last: stage k's probability multiplies
        into every later task's output."""
        yield from self.trunk.parameters()
        for name in self.task_names[:-1]:
            yield from self.towers[name].parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        if name == self.task_names[-1]:
            yield from self.towers[name].parameters()


def build_esmm(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    tower: TowerSizes = (32,),
    task_dropout: TaskRates | None = None,
) -> ESMM:
    """`esmm`: binary tasks listed in funnel order (click, then conversion, ...) on a shared
    trunk of `hidden` sizes, one `tower` per stage."""
    return ESMM(
        len(features), tasks, hidden=hidden, tower=tower, dropout=dropout, task_dropout=task_dropout
    )
