"""Evaluation: per-task losses and metrics over a whole data set, in original units."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from polytask.data._source import DataSource, Rows
from polytask.data._tensors import TaskData
from polytask.models._base import MultiTaskNet
from polytask.models._teacher import teaching
from polytask.tasks._kinds._base import Concatenated
from polytask.tasks._metrics import Undefined
from polytask.tasks._task import Task
from polytask.train._distributed import Processes

TaskMetrics = dict[str, dict[str, float]]
"""{task: {"loss": ..., metric: value}}"""

NO_LABELS = Undefined("no labelled rows")


@torch.no_grad()
def predict_raw(
    model: MultiTaskNet, x: Tensor, batch_size: int, device: torch.device
) -> dict[str, Tensor]:
    """Raw head outputs for all rows, computed in batches, on the CPU."""
    model.eval()
    if x.shape[0] == 0:  # no rows: outputs of the right shapes, with none
        return {
            k: v.float().cpu()[:0]
            for k, v in model(x.new_zeros(1, *x.shape[1:]).to(device)).items()
        }
    chunks: dict[str, list[Tensor]] = {}
    for start in range(0, x.shape[0], batch_size):
        out = model(x[start : start + batch_size].to(device))
        for k, v in out.items():
            chunks.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v) for k, v in chunks.items()}


def predict_source(
    model: MultiTaskNet, rows: DataSource, batch_size: int, device: torch.device
) -> dict[str, Tensor]:
    """Raw head outputs for every row of `rows` on the CPU, read a batch at a time (images are
    decoded batch by batch, never all at once)."""
    if isinstance(rows, TaskData):
        return predict_raw(model, rows.x, batch_size, device)
    if len(rows) == 0:  # no rows: outputs of the right shapes, with none
        return predict_raw(model, torch.zeros((0, *rows.input_shape)), 1, device)
    chunks: dict[str, list[Tensor]] = {}
    model.eval()
    with torch.no_grad():
        for batch in rows.chunks(batch_size):
            for name, value in model(batch.x.to(device)).items():
                chunks.setdefault(name, []).append(value.float().cpu())
    return {name: torch.cat(values) for name, values in chunks.items()}


POOLED = ": pooled"
"""The suffix of the pooled entries `evaluate` adds (`"COLUMN: pooled"`)."""

PER_LABEL = ": per label"
"""The suffix of the per-part entries `evaluate` adds (`"TASK: per label"`, multilabel)."""


def evaluate(
    model: MultiTaskNet,
    tasks: Sequence[Task],
    data: DataSource,
    batch_size: int,
    device: torch.device,
    processes: Processes | None = None,
    summaries: bool = False,
) -> TaskMetrics:
    """Each task's loss and metrics on the rows of `data` that label it (tasks `data` has no
    targets for, and auxiliary tasks, are left out); a value that cannot be computed is
    `Undefined`, with the reason (e.g. no labelled rows, one class only). The rows are read
    `batch_size` at a time and each task's metrics accumulated over the batches (its kind's
    `accumulator`), so that no prediction of the whole set is held at once, except with
    `processes`: each reads and evaluates its share of the rows, and the outputs of all of
    them are gathered to every process, which computes the metrics on them.

    `summaries`: for tasks made from one column (`Task.where`), two more entries: the mean of
    each metric over those tasks (`"COLUMN: task mean"`, each task scored on its own rows, as
    the multi-task literature reports) and the metrics of all their rows pooled, each row
    predicted by its own task (`"COLUMN: pooled"`); and for a multilabel task each label's
    metrics (`"TASK: per label"`: `auc[label]`, `f1[label]`)."""
    chosen = [t for t in tasks if not t.auxiliary and t.name in data.target_like]
    scale = data.target_scale
    fits = data.target_fits
    accumulators = {
        t.name: t.kind_spec.accumulator(t, scale.get(t.name), fits.get(t.name)) for t in chosen
    }
    # each batch's loss times what it divides by; the whole's from the summed units and rows
    loss_sum = dict.fromkeys(accumulators, 0.0)
    units = {name: torch.zeros(2, dtype=torch.float64) for name in accumulators}
    for raw, targets in _outputs(model, data, batch_size, device, processes):
        for task in chosen:
            output, target = raw[task.name], targets[task.name]
            spec = task.kind_spec
            here = torch.tensor(
                [spec.label_count(target), float(spec.label_mask(target).sum())],
                dtype=torch.float64,
            )
            share = float(spec.loss_denominator(here[0], here[1] > 0))
            if share:
                loss_sum[task.name] += float(task.compute_loss(output, target)) * share
                units[task.name] += here
            accumulators[task.name].update(output, target)

    def mean_loss(task: Task) -> float:
        count, rows = units[task.name]
        whole = float(task.kind_spec.loss_denominator(count, rows > 0))
        return loss_sum[task.name] / whole if whole else NO_LABELS

    metrics: TaskMetrics = {
        t.name: {"loss": mean_loss(t), **accumulators[t.name].compute()} for t in chosen
    }
    if summaries:
        ordered: TaskMetrics = {}
        for name, values in metrics.items():
            ordered[name] = values
            if parts := accumulators[name].breakdown():  # a multilabel task's labels, after it
                ordered[f"{name}{PER_LABEL}"] = parts
        metrics = {**ordered, **family_summaries(chosen, metrics, accumulators)}
    return metrics


def task_families(tasks: Sequence[Task]) -> dict[str, list[Task]]:
    """Tasks made from one column (each a `where` on that column alone, of one kind with
    the same metrics and target columns: one target, predicted per group), by column; families
    of at least two tasks."""
    families: dict[str, list[Task]] = {}
    for task in tasks:
        if task.where is not None and len(task.where) == 1 and not task.auxiliary:
            families.setdefault(next(iter(task.where)), []).append(task)

    def alike(t: Task) -> tuple[object, ...]:
        return t.kind, tuple(m.name for m in t.metric_objects()), t.target_columns

    return {
        column: members
        for column, members in families.items()
        if len(members) > 1 and len({alike(t) for t in members}) == 1
    }


def family_summaries(
    tasks: Sequence[Task], metrics: TaskMetrics, accumulators: dict[str, Any]
) -> TaskMetrics:
    """The task mean and the pooled metrics of each family of `tasks` (see `evaluate`)."""
    out: TaskMetrics = {}
    for column, members in task_families(tasks).items():
        names = [m.name for m in members[0].metric_objects()]
        mean: dict[str, float] = {}
        for name in names:
            values = [metrics[t.name][name] for t in members]
            defined = [float(v) for v in values if not isinstance(v, Undefined)]
            mean[name] = float(np.mean(defined)) if defined else NO_LABELS
        out[f"{column}: task mean"] = mean
        pooled = pooled_metrics(members, [accumulators[t.name] for t in members])
        if pooled is not None:
            out[f"{column}{POOLED}"] = pooled
    return out


def pooled_metrics(members: Sequence[Task], accumulators: Sequence[Any]) -> dict[str, float] | None:
    """The metrics of all the rows of `members` (tasks made from one column) scored together,
    each row by its own task's predictions in `accumulators` (None when one of them does not
    keep its rows)."""
    if not all(isinstance(a, Concatenated) for a in accumulators):
        return None
    pooled = Concatenated(members[0], None)
    for a in accumulators:
        pooled.predictions += a.predictions
        pooled.truths += a.truths
    return pooled.compute()


def _outputs(
    model: MultiTaskNet,
    data: DataSource,
    batch_size: int,
    device: torch.device,
    processes: Processes | None,
) -> Iterator[tuple[dict[str, Tensor], dict[str, Tensor]]]:
    """(raw head outputs on the CPU, targets) for the rows of `data`, `batch_size` at a time;
    in a distributed run every process gets every row's outputs (each computed its share, as
    one process would: teacher-forced heads read their targets)."""
    if processes is not None:  # only its share's rows are read (not every image or clip)
        share = processes.share(torch.arange(len(data)))
        mine = list(_outputs(model, Rows(data, share), batch_size, device, None))
        for batches in processes.gather(mine):  # in rank order: the rows' order
            yield from cast(list[tuple[dict[str, Tensor], dict[str, Tensor]]], batches)
        return
    if len(data) == 0:
        empty = data.to_memory()
        yield predict_raw(model, empty.x, batch_size, device), dict(empty.targets)
        return
    model.eval()
    with torch.no_grad():
        for batch in data.chunks(batch_size):
            targets = {k: v.to(device) for k, v in batch.targets.items()}
            with teaching(model, targets):
                out = model(batch.x.to(device))
            yield {k: v.float().cpu() for k, v in out.items()}, batch.targets


def flatten(metrics: TaskMetrics, prefix: str) -> dict[str, float]:
    """{"val/churn/auc": ..., "val/loss": sum of the task losses that could be computed}"""
    flat = {f"{prefix}/{t}/{m}": float(v) for t, ms in metrics.items() for m, v in ms.items()}
    losses = [ms["loss"] for ms in metrics.values() if not isinstance(ms["loss"], Undefined)]
    flat[f"{prefix}/loss"] = float(np.sum(losses))
    return flat
