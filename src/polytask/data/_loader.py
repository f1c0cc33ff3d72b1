"""Training batches in the sampler's exact order, optionally assembled by worker processes.

The sampler draws each step's rows in this process, so its state (and so a checkpoint) never
depends on the workers; the workers only gather rows into batches. Batches are drawn one
evaluation window at a time: a schedule updated at the window's end (dynamic) applies to the
next window exactly as without workers, and no batch is prefetched across a checkpoint.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from polytask.data._sampler import MultiSourceSampler
from polytask.data._tensors import Batch

ListPlan = list[tuple[int, list[int]]]


class _Plans(Sampler[list[ListPlan]]):
    """`count` plans drawn from the sampler, each as a one-item "batch of indices"."""

    def __init__(self, sampler: MultiSourceSampler, count: int) -> None:
        self.sampler, self.count = sampler, count

    def __iter__(self) -> Iterator[list[ListPlan]]:
        for _ in range(self.count):  # rows as lists: small, and pickled without shared memory
            yield [[(i, rows.tolist()) for i, rows in self.sampler.draw()]]

    def __len__(self) -> int:
        return self.count


Arrays = tuple[np.ndarray, dict[str, np.ndarray]]


class _Gather(Dataset[Arrays]):
    """A worker's job: one plan's rows as arrays (pickled through the worker's pipe: for
    batches of small rows much cheaper than a shared-memory segment per tensor)."""

    def __init__(self, sampler: MultiSourceSampler) -> None:
        self.sampler = sampler

    def __getitem__(self, plan: ListPlan) -> Arrays:
        batch = self.sampler.gather(plan)
        return batch.x.numpy(), {t: v.numpy() for t, v in batch.targets.items()}


def _only(items: Sequence[Arrays]) -> Arrays:
    return items[0]


def _leave_interrupts_to_the_main_process(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group; a worker that died of it would leave its
    queue unflushed and the main process waiting seconds to terminate it. Workers ignore it
    and are stopped by the main process instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the CLI's SIGTERM, to the group, likewise


class WindowLoader:
    """Batches one evaluation window at a time: `window(steps)` yields the next `steps`
    batches; with `num_workers` > 0 they are gathered by that many worker processes, started
    once and kept across windows until `close` (or garbage collection) stops them."""

    def __init__(
        self, sampler: MultiSourceSampler, num_workers: int = 0, pin_memory: bool = False
    ) -> None:
        self.sampler, self.pin_memory = sampler, pin_memory
        self.plans = _Plans(sampler, 0)
        self.loader: DataLoader[Arrays] | None = None
        if num_workers > 0:
            self.loader = DataLoader(
                _Gather(sampler),
                batch_sampler=self.plans,
                num_workers=num_workers,
                collate_fn=_only,
                persistent_workers=True,
                worker_init_fn=_leave_interrupts_to_the_main_process,
                generator=torch.Generator(),  # workers' seeds: not from the global RNG (dropout's)
            )

    def window(self, steps: int) -> Iterator[Batch]:
        if self.loader is None:
            for _ in range(steps):
                yield self.sampler.next_batch()
            return
        self.plans.count = steps
        for x, targets in self.loader:
            batch = Batch(torch.from_numpy(x), {t: torch.from_numpy(v) for t, v in targets.items()})
            yield batch.pin_memory() if self.pin_memory else batch

    def close(self) -> None:
        """Stop the workers (the loader's iterator shuts them down when it is released)."""
        self.loader = None
