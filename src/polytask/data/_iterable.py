"""A user's stream of rows (a `torch.utils.data.IterableDataset`, or any re-iterable) as a
data source: read in order, with no random access.

The sampler walks it front to back each epoch and records how many rows it consumed, so a
resumed run re-opens the stream and skips that many rows (reading them again: the cost of
exact resume without random access). Each data worker holds its own open stream and skips
the rows the other workers' batches take.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any

import torch
from torch import Tensor

from polytask.data._sampler import missing_like
from polytask.data._source import Batch, DataSource
from polytask.tasks._columns import DataError

Chunk = tuple[Tensor, dict[str, Tensor]]


class IterableSource(DataSource):
    """Rows streamed from `dataset`, drawn in order (never shuffled).

    Each item is a dict: one row (`x` → its inputs, task → its target; a task's key absent or
    None marks its label missing), or with `batched=True` several rows (first dimension).
    `targets` names the tasks (default: every key of the first item but `x`). Targets keep
    the in-memory conventions: floats are regression (missing: NaN), integers class indices
    (missing: −100), as the first item's value for the task says (give a regression target
    as a float: 5.0, not 5). Inputs keep their type too (integers: token ids). `length` is the
    rows per epoch, and rows after it are not read (default: `len(dataset)` for rows, else
    counted in one pass over the stream); the schedules' proportions and the epoch length use
    it. `dataset` must be re-iterable (each epoch reads it again): not a generator."""

    def __init__(
        self,
        dataset: Iterable[Mapping[str, Any]],
        length: int | None = None,
        *,
        x: str = "x",
        targets: Sequence[str] | None = None,
        batched: bool = False,
        target_scale: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.dataset, self.x_key, self.batched = dataset, x, batched
        self.target_scale = dict(target_scale or {})
        if isinstance(dataset, Iterator):  # a generator: read once only
            raise DataError(
                f"the stream is a one-pass iterator ({type(dataset).__name__}), but it is "
                "read again each epoch (and on resume): give a re-iterable, e.g. a list, a "
                "torch IterableDataset, or an object whose __iter__ opens the stream anew"
            )
        first = next(iter(dataset), None)
        if first is None:
            raise DataError("the stream has no rows")
        if x not in first:
            raise DataError(f"the stream's items have no {x!r} key (keys: {list(first)})")
        names = list(targets) if targets is not None else [k for k in first if k != x]
        self._like: dict[str, Tensor] = {}
        for task in names:
            if first.get(task) is None:
                raise DataError(f"the stream's first item has no target for {task!r}")
            value = torch.as_tensor(first[task])
            shape = value.shape[1:] if batched else value.shape
            dtype = torch.float32 if value.is_floating_point() else torch.long
            self._like[task] = torch.zeros((0, *shape), dtype=dtype)
        inputs = torch.as_tensor(first[x])
        self._input_shape = tuple(inputs.shape[1:] if batched else inputs.shape)
        self._stream: Iterator[Mapping[str, Any]] | None = None
        self._pending: Chunk | None = None
        self._position, self._pid = 0, os.getpid()
        if length is None:
            sized = isinstance(dataset, Sized) and not batched  # batched: len counts items
            length = len(dataset) if sized and isinstance(dataset, Sized) else self._count()
        self.length = int(length)
        if self.length < 1:
            raise DataError(f"the stream's length must be at least 1, not {length}")

    def __len__(self) -> int:
        return self.length

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    @property
    def target_like(self) -> Mapping[str, Tensor]:
        return self._like

    def order(self, generator: torch.Generator) -> None:
        return None  # in order: a stream has no random access

    def _count(self) -> int:
        return sum(len(self._chunk(item)[0]) for item in self.dataset)

    def _chunk(self, item: Mapping[str, Any]) -> Chunk:
        """One item as (inputs, targets) with a first dimension of rows."""
        x = torch.as_tensor(item[self.x_key])
        x = x if self.batched else x.unsqueeze(0)
        targets = {}
        for task, like in self._like.items():
            value = item.get(task)
            if value is None:
                targets[task] = missing_like(like, len(x))
            else:
                value = torch.as_tensor(value)
                if value.is_floating_point() and not like.is_floating_point():
                    self._check_whole(task, value)
                value = value.to(like.dtype)
                targets[task] = value if self.batched else value.unsqueeze(0)
        return x.to(torch.float32) if x.is_floating_point() else x, targets

    @staticmethod
    def _check_whole(task: str, value: Tensor) -> None:
        """Refuse a fraction (or NaN) for a task whose first target was an integer: read as
        class indices, it would be truncated without a word."""
        odd = value[value != value.round()]
        if odd.numel():
            raise DataError(
                f"task {task!r}: the stream holds the target {float(odd[0]):g}, but the first "
                "item's target for it was an integer, so the task's targets are read as class "
                "indices (missing: None): for a regression target give floats from the first "
                "item on (5.0, not 5)"
            )

    def _open(self) -> None:
        self._stream, self._pending, self._position = iter(self.dataset), None, 0
        self._pid = os.getpid()

    def _next(self, most: int) -> Chunk:
        """Up to `most` next rows of the stream."""
        if self._pending is None:
            assert self._stream is not None
            item = next(self._stream, None)
            if item is None:
                raise DataError(
                    f"the stream ended after {self._position} rows, but its length is "
                    f"{self.length}: give the length it has"
                )
            self._pending = self._chunk(item)
        x, targets = self._pending
        if len(x) <= most:
            self._pending = None
        else:
            self._pending = x[most:], {t: v[most:] for t, v in targets.items()}
            x, targets = x[:most], {t: v[:most] for t, v in targets.items()}
        self._position += len(x)
        return x, targets

    def rows(self, index: Tensor) -> Batch:
        """Rows `start, start + 1, ...`: read on from the stream's position, skipping forward
        to `start`, or re-opening the stream when `start` lies behind it."""
        index = torch.as_tensor(index, dtype=torch.long)
        start = int(index[0]) if len(index) else 0
        if not torch.equal(index, torch.arange(start, start + len(index))):
            raise ValueError("an IterableSource is read in order: ask for consecutive rows")
        if self._stream is None or self._pid != os.getpid() or start < self._position:
            self._open()
        while self._position < start:
            self._next(start - self._position)
        parts: list[Chunk] = []
        taken = 0
        while taken < len(index):
            parts.append(self._next(len(index) - taken))
            taken += len(parts[-1][0])
        if not parts:
            empty = torch.zeros((0, *self._input_shape))
            return Batch(empty, {t: v.clone() for t, v in self._like.items()})
        x = torch.cat([p[0] for p in parts])
        return Batch(x, {t: torch.cat([p[1][t] for p in parts]) for t in self._like})

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the open stream (a worker opens its own)."""
        state = dict(self.__dict__)
        state["_stream"], state["_pending"] = None, None
        return state
