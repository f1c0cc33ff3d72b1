"""Task embeddings: one network for every task, told which task it predicts by a learnt vector
e_k fed with the inputs (MLP([x, e_k]) → one shared head). Tasks that behave alike learn
nearby vectors; a task with few rows borrows the whole network and learns only its vector.
Suits many small related tasks of one kind (one per school, patient, store).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from polytask._validation import checked
from polytask.models._base import MultiTaskNet, same_output
from polytask.models._hints import LayerSizes, Rate, TaskRates
from polytask.models._towers import check_task_dropout
from polytask.tasks._task import Task


class TaskEmbedding(MultiTaskNet):
    """An MLP on the inputs and a task's vector, and one linear head. The first layer is split
    (W_x x + W_e e_k) so that the inputs' part is computed once per batch for all tasks."""

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        hidden: Sequence[int] = (64, 64),
        embedding: int = 8,
        dropout: float = 0.0,
        task_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self._init_tasks(tasks)
        out = same_output("task_embedding", tasks)
        rates = check_task_dropout(task_dropout or {}, self.task_names)
        self.task_dropout = nn.ModuleDict({n: nn.Dropout(r) for n, r in rates.items()})
        if not hidden:
            raise ValueError("task_embedding needs at least one hidden layer (the task's vector "
                             "enters there)")  # fmt: skip
        if embedding < 1:
            raise ValueError(f"embedding must be >= 1, got {embedding}")
        self.vectors = nn.ParameterDict(
            {t.name: nn.Parameter(torch.randn(embedding) * 0.1) for t in tasks}
        )
        self.inputs = nn.Linear(in_dim, hidden[0])
        self.task_in = nn.Linear(embedding, hidden[0], bias=False)
        layers: list[nn.Module] = [nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        for width_in, width in itertools.pairwise(hidden):
            layers += [nn.Linear(width_in, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.rest = nn.Sequential(*layers)
        self.head = nn.Linear(hidden[-1], out)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        base = self.inputs(x)
        out = {}
        for t in self.tasks:
            z = self.rest(base + self.task_in(self.vectors[t.name]))
            if t.name in self.task_dropout:
                z = self.task_dropout[t.name](z)
            out[t.name] = t.shape_output(self.head(z))
        return out

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for module in (self.inputs, self.task_in, self.rest, self.head):
            yield from module.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        yield self.vectors[name]


def build_task_embedding(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (64, 64),
    embedding: Annotated[int, Field(ge=1)] = 8,
    dropout: Rate = 0.0,
    task_dropout: TaskRates | None = None,
) -> TaskEmbedding:
    """`task_embedding`: one MLP (`hidden`) on the inputs and a learnt vector of size
    `embedding` per task, one shared head: for many small related tasks of one kind."""
    return TaskEmbedding(len(features), tasks, hidden=hidden, embedding=embedding,
                         dropout=dropout, task_dropout=task_dropout)  # fmt: skip
