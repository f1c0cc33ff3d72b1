"""In-memory multi-task data: one input tensor and one target tensor per task."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as checked_dataclass
from torch import Tensor


def unscale(scale: Mapping[str, tuple[float, float]], task: str, values: Tensor) -> Tensor:
    """Map standardised regression values of `task` back to original units (others unchanged)."""
    if task not in scale:
        return values
    mean, std = scale[task]
    return values * std + mean


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


@checked_dataclass(frozen=True, config=ConfigDict(arbitrary_types_allowed=True))
class TaskData:
    """Rows of inputs `x` with per-task targets; `target_scale` maps a regression task to the
    (mean, std) used to standardise its targets, so metrics are reported on the original scale."""

    x: Tensor
    targets: Mapping[str, Tensor]
    target_scale: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        bad = {k: v.shape[0] for k, v in self.targets.items() if v.shape[0] != n}
        if bad:
            raise ValueError(f"targets must have {n} rows like x; got {bad}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: Tensor) -> TaskData:
        return TaskData(
            self.x[index], {k: v[index] for k, v in self.targets.items()}, self.target_scale
        )

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Mini-batches in order, or in a random order drawn from `generator`."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield Batch(self.x[idx], {k: v[idx] for k, v in self.targets.items()})

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def unscale(self, task: str, values: Tensor) -> Tensor:
        """Map standardised regression values back to the original units."""
        return unscale(self.target_scale, task, values)
