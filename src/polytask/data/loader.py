"""Training batches in the sampler's exact order, optionally assembled by worker processes.

The sampler draws each step's rows in this process, so its state (and so a checkpoint) never
depends on the workers; the workers only gather rows into batches. Batches are drawn one
evaluation window at a time: a schedule updated at the window's end (dynamic) applies to the
next window exactly as without workers, and no batch is prefetched across a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from polytask.data.sampler import MultiSourceSampler, Plan
from polytask.data.tensors import Batch


class _Plans(Sampler[list[Plan]]):
    """`count` plans drawn from the sampler, each as a one-item "batch of indices"."""

    def __init__(self, sampler: MultiSourceSampler, count: int) -> None:
        self.sampler, self.count = sampler, count

    def __iter__(self) -> Iterator[list[Plan]]:
        for _ in range(self.count):
            yield [self.sampler.draw()]

    def __len__(self) -> int:
        return self.count


class _Gather(Dataset[Batch]):
    def __init__(self, sampler: MultiSourceSampler) -> None:
        self.sampler = sampler

    def __getitem__(self, plan: Plan) -> Batch:
        return self.sampler.gather(plan)


def _only(items: Sequence[Batch]) -> Batch:
    return items[0]


def window_batches(
    sampler: MultiSourceSampler, steps: int, num_workers: int = 0, pin_memory: bool = False
) -> Iterator[Batch]:
    """The next `steps` batches; with `num_workers` > 0 gathered by that many processes, which
    stop when the window is consumed or the iterator is closed (e.g. on Ctrl-C)."""
    if num_workers == 0:
        for _ in range(steps):
            yield sampler.next_batch()
        return
    loader = DataLoader(
        _Gather(sampler),
        batch_sampler=_Plans(sampler, steps),
        num_workers=num_workers,
        collate_fn=_only,
        pin_memory=pin_memory,
        generator=torch.Generator(),  # workers' seeds: not from the global RNG (dropout's)
    )
    yield from loader
