"""Mean-regularised heads on a shared trunk (Evgeniou & Pontil, "Regularized multi-task
learning", KDD 2004, applied to a learnt representation).

Task k predicts with a head every task shares plus its own deviation, w0 + v_k; the step adds
coupling × Σ_k ‖v_k‖² (weights, not intercepts), so a task with few rows stays near the
shared head and a well-sampled one may move away. The deviations start at zero: every task
starts as the shared predictor. Suits many small related tasks (e.g. one per school).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from polytask._validation import checked
from polytask.models._base import MultiTaskNet, same_output
from polytask.models._hints import Rate, Strength, TaskRates, TowerSizes
from polytask.models._mlp import MLP
from polytask.models._towers import check_task_dropout
from polytask.tasks._task import Task


class Inputs(nn.Module):
    """No trunk: the encoded inputs themselves (`hidden: []`, a linear model per task)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        return x


def trunk_or_inputs(in_dim: int, hidden: Sequence[int], dropout: float) -> MLP | Inputs:
    """An MLP trunk of `hidden` sizes, or none (the inputs) for `hidden: []`, where `dropout`,
    which acts in the trunk's layers, is refused rather than silently dropped."""
    if dropout and not hidden:
        raise ValueError(
            f"dropout {dropout} acts in the trunk's layers, and hidden: [] has none: drop "
            "dropout, or give hidden layers"
        )
    return MLP(in_dim, hidden, dropout) if hidden else Inputs(in_dim)


class MeanRegularised(MultiTaskNet):
    """An MLP trunk (none with `hidden` empty: linear models of the inputs), one shared
    linear head and a zero-initialised linear deviation per task. The trunk and the shared
    head are the shared parameters; a task owns its deviation."""

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.0,
        coupling: float = 1e-3,
        task_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self._init_tasks(tasks)
        out = same_output("mean_regularised", tasks)
        if coupling < 0:
            raise ValueError(f"coupling must be >= 0, got {coupling}")
        rates = check_task_dropout(task_dropout or {}, self.task_names)
        self.trunk: nn.Module = trunk_or_inputs(in_dim, hidden, dropout)
        width = int(self.trunk.out_dim)
        self.shared_head = nn.Linear(width, out)
        deviations = {t.name: nn.Linear(width, out) for t in tasks}
        for layer in deviations.values():
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.deviations = nn.ModuleDict(deviations)
        self.task_dropout = nn.ModuleDict({n: nn.Dropout(r) for n, r in rates.items()})
        self.coupling = coupling

    @property
    def _weights(self) -> list[Tensor]:
        """The deviations' weights, read from the modules at each call (not kept in a list: a
        functional call, as meta-learning's, swaps the modules' parameters)."""
        return [cast(nn.Linear, layer).weight for layer in self.deviations.values()]

    @property
    def _biases(self) -> list[Tensor]:
        return [cast(nn.Linear, layer).bias for layer in self.deviations.values()]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.trunk(x)
        shared = self.shared_head(z)
        # every deviation in one product: many small tasks would otherwise cost a call each
        together = nn.functional.linear(z, torch.cat(self._weights), torch.cat(self._biases))
        pieces = together.split(shared.shape[-1], dim=-1)  # one backward for all, not a slice each
        out = {}
        for k, task in enumerate(self.tasks):
            if task.name in self.task_dropout:
                zt = self.task_dropout[task.name](z)
                raw = self.shared_head(zt) + self.deviations[task.name](zt)
            else:
                raw = shared + pieces[k]
            out[task.name] = task.shape_output(raw)
        return out

    def shared_prediction(self, x: Tensor) -> Tensor | None:
        """A new task's head: the shared head plus the tasks' mean deviation, the centre of
        their heads (the deviations' prior mean, zero, where the fit has reached it: a
        network trained by Adam with a weak coupling leaves their mean away from zero)."""
        z = self.trunk(x)
        weight = torch.stack(self._weights).mean(0)
        bias = torch.stack(self._biases).mean(0)
        return self.shared_head(z) + nn.functional.linear(z, weight, bias)

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.trunk.parameters()
        yield from self.shared_head.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        yield from self.deviations[name].parameters()

    def penalty(self) -> Tensor | None:
        if self.coupling == 0:
            return None
        return self.coupling * torch.stack([(w**2).sum() for w in self._weights]).sum()


def build_mean_regularised(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: TowerSizes = (128, 128),
    dropout: Rate = 0.0,
    task_dropout: TaskRates | None = None,
    coupling: Strength = 1e-3,
) -> MeanRegularised:
    """`mean_regularised`: a shared `hidden` trunk (`hidden: []`: none, the classic linear
    model of Evgeniou & Pontil 2004); task k's linear head (no `tower`) is a shared head plus
    its own deviation, penalised by `coupling` × ‖deviation‖²: for many small related tasks
    with the same output size."""
    return MeanRegularised(
        len(features),
        tasks,
        hidden=hidden,
        dropout=dropout,
        coupling=coupling,
        task_dropout=task_dropout,
    )
