"""Multi-input MTL: each task reads its own features through its own encoder, and all tasks
share the trunk behind the encoders (and their heads sit on the trunk's output)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from polytask._validation import checked
from polytask.models._base import MultiTaskNet
from polytask.models._hints import Count, LayerSizes, Rate, TaskRates, TowerSizes
from polytask.models._mlp import MLP
from polytask.models._towers import task_towers
from polytask.tasks._task import Task


class MultiInput(MultiTaskNet):
    """`inputs` maps a task to the columns of x it reads (all columns when left out); its
    encoder maps them to `encoder_dim`, the shared trunk runs once on every task's encoding
    (stacked along the batch), and the task's head or `tower` reads its own trunk output."""

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        inputs: Mapping[str, Sequence[int]] | None = None,
        encoder_dim: int = 32,
        hidden: Sequence[int] = (64,),
        tower: Sequence[int] = (),
        dropout: float = 0.0,
        task_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self._init_tasks(tasks)
        inputs = dict(inputs or {})
        unknown = sorted(set(inputs) - set(self.task_names))
        if unknown:
            raise ValueError(
                f"inputs names unknown tasks {unknown}; tasks: {list(self.task_names)}"
            )
        self.columns: dict[str, list[int]] = {}
        for name in self.task_names:
            cols = list(inputs.get(name, range(in_dim)))
            if not cols or min(cols) < 0 or max(cols) >= in_dim:
                raise ValueError(
                    f"inputs[{name!r}] must list column indices in [0, {in_dim}), got {cols}"
                )
            self.columns[name] = cols
        self.encoders = nn.ModuleDict(
            {n: nn.Sequential(nn.Linear(len(c), encoder_dim), nn.ReLU())
             for n, c in self.columns.items()}
        )  # fmt: skip
        self.trunk = MLP(encoder_dim, hidden, dropout)
        self.heads = task_towers(hidden[-1], tower, tasks, dropout, task_dropout)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        names = self.task_names
        encoded = [self.encoders[n](x[:, self.columns[n]]) for n in names]
        shared = self.trunk(torch.stack(encoded)).unbind(0)  # (tasks, batch, ·): traceable
        return {
            t.name: t.shape_output(self.heads[t.name](z))
            for t, z in zip(self.tasks, shared, strict=True)
        }

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.trunk.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        yield from self.encoders[name].parameters()
        yield from self.heads[name].parameters()


def build_multi_input(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    tower: TowerSizes = (),
    task_dropout: TaskRates | None = None,
    inputs: dict[str, tuple[str, ...]] | None = None,
    encoder_dim: Count = 32,
) -> MultiInput:
    """`multi_input`: each task listed in `inputs` ({task: [feature, ...]}, raw feature names)
    reads only those features through its own encoder of `encoder_dim` units, in front of one
    shared trunk of `hidden` sizes; unlisted tasks read every feature."""
    return MultiInput(
        len(features),
        tasks,
        inputs=input_columns(inputs or {}, features),
        encoder_dim=encoder_dim,
        hidden=hidden,
        tower=tower,
        dropout=dropout,
        task_dropout=task_dropout,
    )


def input_columns(
    inputs: Mapping[str, Sequence[str]], features: Sequence[str]
) -> dict[str, list[int]]:
    """Each task's input columns by position, from raw feature names: a numeric feature is one
    column, a categorical one all of its one-hot columns ("region" → "region=north", ...)."""
    out: dict[str, list[int]] = {}
    for task, names in inputs.items():
        columns: list[int] = []
        for name in names:
            hits = [i for i, f in enumerate(features) if f == name or f.startswith(f"{name}=")]
            if not hits:
                raise ValueError(
                    f"model.inputs[{task!r}]: feature {name!r} is not an input column; "
                    f"the features are {sorted({f.split('=')[0] for f in features})}"
                )
            columns += hits
        out[task] = columns
    return out
