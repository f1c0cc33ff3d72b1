"""Low-rank shared heads (Ando & Zhang 2005, "A framework for learning predictive structures
from multiple tasks"): task k predicts with w_k = U a_k + v_k on a shared trunk, U a basis of
`rank` directions every task shares, a_k its coefficients, and v_k its own deviation,
penalised by coupling × ‖v_k‖² (zero-initialised). Many small tasks of one kind then share a
few directions of their models, not one mean (`mean_regularised`) nor a whole trunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, cast

import torch
from pydantic import Field
from torch import Tensor, nn

from polytask._validation import checked
from polytask.models._base import MultiTaskNet, same_output
from polytask.models._hints import Rate, Strength, TaskRates, TowerSizes
from polytask.models._mean_regularised import trunk_or_inputs
from polytask.models._towers import check_task_dropout
from polytask.tasks._task import Task


class LowRank(MultiTaskNet):
    """A trunk (none with `hidden` empty), a shared basis U (trunk width × rank), per task its
    coefficients a_k (rank → output, with its bias) and a penalised deviation v_k."""

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        hidden: Sequence[int] = (),
        rank: int = 4,
        dropout: float = 0.0,
        coupling: float = 1e-2,
        task_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self._init_tasks(tasks)
        out = same_output("low_rank", tasks)
        rates = check_task_dropout(task_dropout or {}, self.task_names)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if coupling < 0:
            raise ValueError(f"coupling must be >= 0, got {coupling}")
        self.trunk: nn.Module = trunk_or_inputs(in_dim, hidden, dropout)
        width = int(self.trunk.out_dim)
        self.basis = nn.Linear(width, rank, bias=False)
        self.coefficients = nn.ModuleDict({t.name: nn.Linear(rank, out) for t in tasks})
        self.deviations = nn.ParameterDict(
            {t.name: nn.Parameter(torch.zeros(out, width)) for t in tasks}
        )
        self.task_dropout = nn.ModuleDict({n: nn.Dropout(r) for n, r in rates.items()})
        self.coupling = coupling

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.trunk(x)
        out = {}
        for t in self.tasks:
            zt = self.task_dropout[t.name](z) if t.name in self.task_dropout else z
            head = cast(nn.Linear, self.coefficients[t.name])
            out[t.name] = t.shape_output(head(self.basis(zt)) + zt @ self.deviations[t.name].T)
        return out

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.trunk.parameters()
        yield from self.basis.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        yield from self.coefficients[name].parameters()
        yield self.deviations[name]

    def task_weights(self) -> Mapping[str, Tensor]:
        """Each task's effective linear map on the trunk's output (output × width)."""
        return {
            t.name: cast(nn.Linear, self.coefficients[t.name]).weight @ self.basis.weight
            + self.deviations[t.name]
            for t in self.tasks
        }

    def penalty(self) -> Tensor | None:
        if self.coupling == 0:
            return None
        return self.coupling * torch.stack([(v**2).sum() for v in self.deviations.values()]).sum()


def build_low_rank(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: TowerSizes = (),
    rank: Annotated[int, Field(ge=1)] = 4,
    dropout: Rate = 0.0,
    coupling: Strength = 1e-2,
    task_dropout: TaskRates | None = None,
) -> LowRank:
    """`low_rank`: task k's head is U a_k + v_k on a shared trunk (`hidden`; none by default:
    linear models of the inputs), U a basis of `rank` directions shared by all tasks and v_k a
    deviation penalised by `coupling` × ‖v_k‖² (Ando & Zhang 2005): for many small related
    tasks with the same output size."""
    return LowRank(len(features), tasks, hidden=hidden, rank=rank, dropout=dropout,
                   coupling=coupling, task_dropout=task_dropout)  # fmt: skip
