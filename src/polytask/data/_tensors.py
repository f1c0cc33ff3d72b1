"""In-memory multi-task data: one input tensor and one target tensor per task."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import field

import torch
from pydantic.dataclasses import dataclass as checked_dataclass
from torch import Tensor

from polytask._validation import API_CONFIG
from polytask.data._source import Batch, DataSource
from polytask.tasks._kinds import every_row as every_row_target


def unscale(scale: Mapping[str, tuple[float, float]], task: str, values: Tensor) -> Tensor:
    """Map standardised regression values of `task` back to original units (others unchanged)."""
    if task not in scale:
        return values
    mean, std = scale[task]
    return values * std + mean


@checked_dataclass(frozen=True, config=API_CONFIG)
class TaskData(DataSource):
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

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def target_like(self) -> Mapping[str, Tensor]:
        return {t: v[:0] for t, v in self.targets.items()}

    def rows(self, index: Tensor) -> Batch:
        return Batch(self.x[index], {t: v[index] for t, v in self.targets.items()})

    def select(self, tasks: Sequence[str], every_row: Sequence[str] = ()) -> TaskData:
        targets = {t: v for t, v in self.targets.items() if t in tasks}
        targets |= {t: every_row_target(len(self)) for t in every_row if t not in targets}
        return TaskData(self.x, targets, self.target_scale)

    def to_memory(self) -> TaskData:
        return self

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
