"""Batches from several data sources under a sampling schedule, with exact resume.

Each source is a `TaskData` labelling some of the tasks (one task's own data set, or a joint
one). A step's batch comes from the source(s) the schedule picks; rows are collated with the
other tasks' targets marked missing (NaN, or −100 for class labels), so every task's loss and
metrics mask them out. Each source walks its own shuffled order and starts a new one when it is
used up. An epoch is Σ_i ⌈n_i / batch⌉ steps for sampled schedules (each row once in
expectation under proportional sampling) and max_i ⌈n_i / batch⌉ for `joint`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polytask.data._schedules import Schedule
from polytask.data._tensors import Batch, TaskData
from polytask.tasks._kinds import IGNORE_INDEX
from polytask.tasks._kinds import every_row as every_row_target


def missing_like(target: Tensor, rows: int) -> Tensor:
    """`rows` targets shaped like `target`'s rows, all marked missing."""
    value = float("nan") if target.is_floating_point() else IGNORE_INDEX
    return torch.full((rows, *target.shape[1:]), value, dtype=target.dtype)


def collate(parts: Sequence[Batch], tasks: Sequence[str], like: Mapping[str, Tensor]) -> Batch:
    """One batch from several, each task's targets marked missing where a part lacks them."""
    targets = {
        t: torch.cat([p.targets.get(t, missing_like(like[t], len(p.x))) for p in parts])
        for t in tasks
    }
    return Batch(torch.cat([p.x for p in parts]), targets)


class _Cursor:
    """One source's walk through its rows in shuffled order."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(size, generator=self.generator)
        self.position = 0

    def take(self, batch_size: int) -> Tensor:
        if self.position >= self.size:
            self.order = torch.randperm(self.size, generator=self.generator)
            self.position = 0
        rows = self.order[self.position : self.position + batch_size]
        self.position += len(rows)
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["rng"])
        self.order, self.position = state["order"], int(state["position"])


Plan = list[tuple[int, Tensor]]
"""One step's rows: (source index, row indices) for each source it draws from."""


class MultiSourceSampler:
    """Endless training batches from `sources` (name → data) under `schedule`; `epochs` is the
    run's length, which the annealed schedule reads. `state_dict` captures everything needed
    to continue the exact same sequence."""

    def __init__(
        self,
        sources: Mapping[str, TaskData],
        schedule: Schedule,
        batch_size: int,
        seed: int = 0,
        epochs: int = 1,
    ) -> None:
        if not sources:
            raise ValueError("give at least one data source")
        empty = [name for name, data in sources.items() if len(data) == 0]
        if empty:
            raise ValueError(f"data sources {empty} have no rows")
        self.names = list(sources)
        self.sources = dict(sources)
        self.schedule, self.batch_size, self.epochs = schedule, batch_size, epochs
        self.sizes = np.array([len(d) for d in sources.values()])
        self.tasks = list(dict.fromkeys(t for d in sources.values() for t in d.targets))
        self.like = {t: d.targets[t] for d in reversed(list(sources.values())) for t in d.targets}
        # the first source keeps `seed`, so one joint source walks as TaskData.batches would
        self.cursors = [_Cursor(n, seed + 1000 * i) for i, n in enumerate(self.sizes)]
        self.choice = torch.Generator().manual_seed(seed + 7919)
        self.step = 0
        self.counts = np.zeros(len(self.names), dtype=np.int64)
        self.share: Callable[[Tensor], Tensor] | None = None
        """This process's share of each drawn batch's rows (distributed training; None: all)."""

    @property
    def steps_per_epoch(self) -> int:
        per_source = -(-self.sizes // self.batch_size)
        return int(per_source.max() if self.schedule.joint else per_source.sum())

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    def probabilities(self) -> np.ndarray:
        """Each source's probability of being drawn at the current step."""
        return self.schedule.probabilities(self.sizes, self.epoch, self.epochs)

    def _pick(self) -> list[int]:
        if self.schedule.joint:
            return list(range(len(self.names)))
        if self.schedule.cyclic:
            return [self.step % len(self.names)]
        p = torch.as_tensor(self.probabilities(), dtype=torch.float64)
        return [int(torch.multinomial(p, 1, generator=self.choice))]

    def draw(self) -> Plan:
        """The next step's rows: (source index, row indices) per source drawn from."""
        plan = []
        for i in self._pick():
            rows = self.cursors[i].take(self.batch_size)
            plan.append((i, rows if self.share is None else self.share(rows)))
            self.counts[i] += 1
        self.step += 1
        return plan

    def gather(self, plan: Sequence[tuple[int, Tensor | list[int]]]) -> Batch:
        """The batch of a drawn plan (reads the sources only, so worker processes may run it)."""
        parts = []
        for i, rows in plan:
            data = self.sources[self.names[i]]
            parts.append(Batch(data.x[rows], {t: v[rows] for t, v in data.targets.items()}))
        if len(parts) == 1 and set(parts[0].targets) == set(self.tasks):
            return parts[0]
        return collate(parts, self.tasks, self.like)

    def next_batch(self) -> Batch:
        return self.gather(self.draw())

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()

    def source_losses(self, task_losses: Mapping[str, float]) -> np.ndarray:
        """Each source's mean loss over the tasks it labels (for the dynamic schedule)."""
        return np.array(
            [np.mean([task_losses[t] for t in self.sources[n].targets]) for n in self.names]
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "counts": self.counts.tolist(),
            "choice": self.choice.get_state(),
            "cursors": [c.state_dict() for c in self.cursors],
            "schedule": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["cursors"]) != len(self.cursors):
            raise ValueError(
                f"the saved sampler had {len(state['cursors'])} sources, this one has "
                f"{len(self.cursors)}: resume with the same data sources"
            )
        self.step = int(state["step"])
        self.counts = np.array(state["counts"], dtype=np.int64)
        self.choice.set_state(state["choice"])
        for cursor, saved in zip(self.cursors, state["cursors"], strict=True):
            cursor.load_state_dict(saved)
        self.schedule.load_state_dict(state["schedule"])


def sources_for(
    sources: Mapping[str, TaskData], tasks: Sequence[str], every_row: Sequence[str] = ()
) -> dict[str, TaskData]:
    """The sources restricted to `tasks`' labels (a single-task model trained on joint or
    per-task data ignores the rest), dropping sources left with none. The tasks in
    `every_row` derive their targets from the inputs, so every row of every source labels them
    (rows no other task labels included). Every task must be labelled somewhere and all inputs
    must share one shape; errors say which."""
    kept = {}
    for name, data in sources.items():
        targets = {t: v for t, v in data.targets.items() if t in tasks}
        targets |= {t: every_row_target(len(data)) for t in every_row if t not in targets}
        if targets:
            kept[name] = TaskData(data.x, targets, data.target_scale)
    labelled = {t for d in kept.values() for t in d.targets}
    missing = [t for t in tasks if t not in labelled]
    if missing:
        raise ValueError(
            f"tasks {missing} have no labels in any training data source ({list(sources)})"
        )
    shapes = {name: tuple(d.x.shape[1:]) for name, d in kept.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(
            f"data sources must share one input shape; got {shapes}: encode every source's "
            "features the same way (same columns, same preprocessor)"
        )
    return kept


def merge_sources(sources: Mapping[str, TaskData]) -> TaskData:
    """All rows of several sources in one `TaskData`, each task's labels missing elsewhere."""
    parts = [Batch(d.x, dict(d.targets)) for d in sources.values()]
    tasks = list(dict.fromkeys(t for d in sources.values() for t in d.targets))
    like = {t: d.targets[t] for d in sources.values() for t in d.targets}
    merged = collate(parts, tasks, like)
    scale = {k: v for d in sources.values() for k, v in d.target_scale.items()}
    return TaskData(merged.x, merged.targets, scale)
