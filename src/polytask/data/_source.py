"""What the sampler needs of a data source: its length, its targets' kinds, and rows by index.

`TaskData` (in memory) and the streaming sources (`ParquetSource`, `CsvSource`,
`IterableSource`) all satisfy it, so `MultiSourceSampler`, the data workers and `Trainer.fit`
treat them alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polytask.tasks._kinds import TargetFit
from polytask.tasks._kinds import every_row as every_row_target

if TYPE_CHECKING:
    from polytask.data._tensors import TaskData


@dataclass(frozen=True)
class Batch:
    """Inputs and the targets of every task for the same rows (missing labels marked).

    `rows` says which rows of `x` a task's outputs are taken on, for batches that carry rows of
    their own for some tasks (a self-supervised task's corrupted inputs appended after the clean
    rows, see `polytask.train.derive_batch`); a task not in it reads every row."""

    x: Tensor
    targets: dict[str, Tensor]
    rows: dict[str, slice] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        targets = {k: v.to(device) for k, v in self.targets.items()}
        return Batch(self.x.to(device), targets, self.rows)

    def pin_memory(self) -> Batch:
        """In page-locked memory, for faster (asynchronous) copies to a GPU."""
        targets = {k: v.pin_memory() for k, v in self.targets.items()}
        return Batch(self.x.pin_memory(), targets, self.rows)

    def outputs_of(self, task: str, output: Tensor) -> Tensor:
        """The rows of a model output on `x` that task `task`'s targets belong to."""
        where = self.rows.get(task)
        return output if where is None else output[where]


class DataSource(ABC):
    """Rows of inputs with per-task targets, read by row index (missing labels: NaN, or −100
    for class labels, as in `TaskData`)."""

    target_scale: Mapping[str, tuple[float, float]]
    """Regression task → the (mean, std) its targets were standardised with."""
    target_fits: Mapping[str, TargetFit] = {}
    """Task → what the data's encoding learnt of its targets, for sources whose tasks'
    metrics need it (e.g. a tokenizer to score translations as text); empty by default."""

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one row's inputs."""

    @property
    @abstractmethod
    def target_like(self) -> Mapping[str, Tensor]:
        """Task → a zero-row tensor with its targets' dtype and per-row shape."""

    @abstractmethod
    def rows(self, index: Tensor) -> Batch:
        """The rows at `index` (in that order)."""

    def order(self, generator: torch.Generator) -> Tensor | None:
        """One epoch's row order drawn from `generator`; None reads the rows in order."""
        return torch.randperm(len(self), generator=generator)

    def select(self, tasks: Sequence[str], every_row: Sequence[str] = ()) -> DataSource:
        """The same rows with only `tasks`' targets, and `every_row` tasks labelling each row."""
        return Selected(self, tasks, every_row)

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Mini-batches of all rows in order, or in a random order drawn from `generator`
        (e.g. the validation batches of balancers that learn on them)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.rows(order[start : start + batch_size])

    def chunks(self, size: int) -> Iterator[Batch]:
        """All rows in order, `size` at a time (e.g. for evaluation)."""
        for start in range(0, len(self), size):
            yield self.rows(torch.arange(start, min(start + size, len(self))))

    def to_memory(self) -> TaskData:
        """All rows in one in-memory `TaskData` (for data that do fit, e.g. a validation set)."""
        from polytask.data._tensors import TaskData

        parts = list(self.chunks(65536))
        if not parts:  # no rows: an empty table of the right shapes
            like = self.target_like
            empty = torch.zeros((0, *self.input_shape))
            return TaskData(empty, {t: v.clone() for t, v in like.items()}, dict(self.target_scale))
        x = torch.cat([p.x for p in parts])
        targets = {t: torch.cat([p.targets[t] for p in parts]) for t in self.target_like}
        return TaskData(x, targets, dict(self.target_scale))


class Rows(DataSource):
    """Some rows of a source, in `index`'s order, read from it when asked (a process's share
    of the rows to evaluate) rather than copied."""

    def __init__(self, source: DataSource, index: Tensor) -> None:
        self.source, self.index = source, index
        self.target_scale, self.target_fits = source.target_scale, source.target_fits

    def __len__(self) -> int:
        return len(self.index)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.source.input_shape

    @property
    def target_like(self) -> Mapping[str, Tensor]:
        return self.source.target_like

    def rows(self, index: Tensor) -> Batch:
        return self.source.rows(self.index[index])


class Selected(DataSource):
    """A source's rows with some of its tasks' targets (see `DataSource.select`)."""

    def __init__(self, source: DataSource, tasks: Sequence[str], every_row: Sequence[str]) -> None:
        self.source = source
        self.kept = [t for t in source.target_like if t in tasks]
        self.every_row = [t for t in every_row if t not in self.kept]
        self.target_scale = source.target_scale
        self.target_fits = source.target_fits

    def __len__(self) -> int:
        return len(self.source)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.source.input_shape

    @property
    def target_like(self) -> Mapping[str, Tensor]:
        like = self.source.target_like
        return {t: like[t] for t in self.kept} | {t: every_row_target(0) for t in self.every_row}

    def rows(self, index: Tensor) -> Batch:
        batch = self.source.rows(index)
        targets = {t: batch.targets[t] for t in self.kept}
        targets |= {t: every_row_target(len(batch.x)) for t in self.every_row}
        return Batch(batch.x, targets)

    def order(self, generator: torch.Generator) -> Tensor | None:
        return self.source.order(generator)
