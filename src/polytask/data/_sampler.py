"""Batches from several data sources under a sampling schedule, with exact resume.

Each source is a `DataSource` labelling some of the tasks (one task's own data set, or a joint
one): an in-memory `TaskData`, or a streamed one read by row index. A step's batch comes from
the source(s) the schedule picks; rows are collated with the other tasks' targets marked
missing (NaN, or −100 for class labels), so every task's loss and metrics mask them out. Each
source walks its own order (shuffled, unless the source says otherwise) and starts a new one
when it is used up. An epoch is Σ_i ⌈n_i / batch⌉ steps for sampled schedules (each row once in
expectation under proportional sampling) and max_i ⌈n_i / batch⌉ for `joint`.
"""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polytask.data._schedules import Schedule
from polytask.data._source import Batch, DataSource
from polytask.data._tensors import TaskData
from polytask.tasks._kinds import IGNORE_INDEX


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
    """One source's walk through its rows in the order it draws (`DataSource.order`: shuffled,
    block-shuffled, or in order). Its state keeps the generator's state from before the order
    was drawn, not the order itself, so a checkpoint stays small for any number of rows."""

    def __init__(self, source: DataSource, seed: int) -> None:
        self.source, self.size = source, len(source)
        self.generator = torch.Generator().manual_seed(seed)
        self._new_order()

    def _new_order(self) -> None:
        self.drawn_from: Tensor | None = self.generator.get_state()
        self.order = self.source.order(self.generator)
        self.position = 0

    def take(self, batch_size: int) -> Tensor:
        if self.position >= self.size:
            self._new_order()
        end = min(self.position + batch_size, self.size)
        if self.order is None:
            rows = torch.arange(self.position, end)
        else:
            rows = self.order[self.position : end]
        self.position = end
        return rows

    def state_dict(self) -> dict[str, Any]:
        state = {"rng": self.generator.get_state(), "position": self.position}
        if self.drawn_from is None:  # resumed from a checkpoint that held the order itself
            return state | {"order": self.order}
        return state | {"order_rng": self.drawn_from}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "order" in state:  # a checkpoint of an earlier version
            self.order, self.drawn_from = state["order"], None
        else:
            self.generator.set_state(state["order_rng"])
            self._new_order()
        self.generator.set_state(state["rng"])
        self.position = int(state["position"])


Plan = list[tuple[int, Tensor]]
"""One step's rows: (source index, row indices) for each source it draws from."""


class MultiSourceSampler:
    """Endless training batches from `sources` (name → data) under `schedule`; `epochs` is the
    run's length, which the annealed schedule reads. `state_dict` captures everything needed
    to continue the exact same sequence."""

    def __init__(
        self,
        sources: Mapping[str, DataSource],
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
        likes = [d.target_like for d in sources.values()]
        self.tasks = list(dict.fromkeys(t for like in likes for t in like))
        self.like = {t: v for like in reversed(likes) for t, v in like.items()}
        # the first source keeps `seed`, so one joint source walks as TaskData.batches would
        self.cursors = [_Cursor(d, seed + 1000 * i) for i, d in enumerate(sources.values())]
        self.choice = torch.Generator().manual_seed(seed + 7919)
        self.step = 0
        self.counts = np.zeros(len(self.names), dtype=np.int64)
        self._pending: deque[list[int]] = deque()  # each drawn step's sources, until observed
        self._loss_sum = np.zeros(len(self.names))
        self._loss_steps = np.zeros(len(self.names), dtype=np.int64)
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
        self._pending.append([i for i, _ in plan])
        self.step += 1
        return plan

    def observe(self, task_losses: Mapping[str, float] | None) -> None:
        """The oldest drawn step's task losses (NaN where the step did not measure a task; None
        for a skipped step, or where the schedule reads no losses), kept for `source_losses`
        when that step drew one source: a task also labelled by other sources (or on every
        row, a self-supervised one) counts for the source whose rows measured it."""
        sources = self._pending.popleft() if self._pending else []
        if task_losses is None or len(sources) != 1:
            return
        i = sources[0]
        like = self.sources[self.names[i]].target_like
        values = np.array([task_losses.get(t, np.nan) for t in like], dtype=float)
        values = values[~np.isnan(values)]
        if values.size:
            self._loss_sum[i] += values.mean()
            self._loss_steps[i] += 1

    def gather(self, plan: Sequence[tuple[int, Tensor | list[int]]]) -> Batch:
        """The batch of a drawn plan (reads the sources only, so worker processes may run it)."""
        parts = [self.sources[self.names[i]].rows(torch.as_tensor(rows)) for i, rows in plan]
        if len(parts) == 1 and set(parts[0].targets) == set(self.tasks):
            return parts[0]
        return collate(parts, self.tasks, self.like)

    def next_batch(self) -> Batch:
        return self.gather(self.draw())

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()

    def source_losses(self) -> np.ndarray:
        """Each source's mean loss (for the dynamic schedule) over the steps since the last call
        that drew it alone and measured a task it labels (`observe`); NaN for a source no such
        step drew, so that the schedule keeps its ratio."""
        steps = self._loss_steps
        out = np.where(steps > 0, self._loss_sum / np.maximum(steps, 1), np.nan)
        self._loss_sum, self._loss_steps = np.zeros_like(self._loss_sum), np.zeros_like(steps)
        return out

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


def check_scored(data: DataSource, tasks: Sequence[str], what: str) -> None:
    """Refuse data to score `tasks` on (validation, evaluation) whose targets name none of
    them, or name one of them almost (`Reg` for `reg`): that task would go unscored without a
    word, and a validation loss of no task reads 0, the best, at every evaluation."""
    given = list(data.target_like)
    others = [t for t in given if t not in tasks]
    for task in tasks:
        if task in given:
            continue
        folded = [t for t in others if t.lower() == task.lower()]
        close = folded or difflib.get_close_matches(task, others, n=1)
        if close:
            raise ValueError(
                f"{what}: no targets for task {task!r}, and its target {close[0]!r} is no "
                f"task's: did you mean {task!r}? (the targets' keys must be the tasks' names)"
            )
    if tasks and not set(given) & set(tasks):
        raise ValueError(
            f"{what}: its targets {given[:10]} name none of the tasks {list(tasks)[:10]}, so "
            "no task would be scored: give each task's targets under the task's name"
        )


def sources_for(
    sources: Mapping[str, DataSource], tasks: Sequence[str], every_row: Sequence[str] = ()
) -> dict[str, DataSource]:
    """The sources restricted to `tasks`' labels (a single-task model trained on joint or
    per-task data ignores the rest), dropping sources left with none. The tasks in
    `every_row` derive their targets from the inputs, so every row of every source labels them
    (rows no other task labels included). Every task must be labelled somewhere and all inputs
    must share one shape; errors say which."""
    kept = {}
    for name, data in sources.items():
        selected = data.select(tasks, every_row)
        if selected.target_like:
            kept[name] = selected
    labelled = {t for d in kept.values() for t in d.target_like}
    missing = [t for t in tasks if t not in labelled]
    if missing:
        others = sorted({t for d in sources.values() for t in d.target_like} - set(tasks))
        hint = ""
        if others:  # e.g. a target named "digits" for the task "digit"
            close = difflib.get_close_matches(missing[0], others, n=1)
            hint = f"; the data's targets {others} are no task's" + (
                f": did you mean {close[0]!r} for {missing[0]!r}? (the targets' keys must be "
                "the tasks' names)" if close else ""
            )  # fmt: skip
        raise ValueError(
            f"tasks {missing} have no labels in any training data source ({list(sources)})" + hint
        )
    shapes = {name: d.input_shape for name, d in kept.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(
            f"data sources must share one input shape; got {shapes}: encode every source's "
            "features the same way (same columns, same preprocessor)"
        )
    return kept


def merge_sources(sources: Mapping[str, DataSource]) -> TaskData:
    """All rows of several sources in one `TaskData`, each task's labels missing elsewhere
    (a streamed source is read into memory: meant for validation and test sets)."""
    data = [d.to_memory() for d in sources.values()]
    parts = [Batch(d.x, dict(d.targets)) for d in data]
    tasks = list(dict.fromkeys(t for d in data for t in d.targets))
    like = {t: d.targets[t] for d in data for t in d.targets}
    merged = collate(parts, tasks, like)
    scale = {k: v for d in data for k, v in d.target_scale.items()}
    return TaskData(merged.x, merged.targets, scale)
