"""Self-supervised tasks' inputs and targets for a training batch, asked of their kinds.

A task whose kind derives its targets from the inputs (`TaskKind.derives_targets`) gets, per
step, its own input rows from `TaskKind.derive` (e.g. the batch with features masked), appended
after the batch's clean rows: one forward pass serves every task and every gradient mode, while
each task's loss reads only its own rows (`Batch.rows`). The draws come from a generator seeded
by the training seed and the step, so an interrupted and resumed run corrupts alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from polytask.data._tensors import Batch
from polytask.tasks._task import Task


def auxiliary_logs(logs: dict[str, float], tasks: Sequence[Task]) -> dict[str, float]:
    """`logs` with auxiliary tasks' training logs moved to `auxiliary/TASK/loss`, `.../weight`
    and `.../grad_norm` (from `train/TASK/loss`, `weight/TASK` and `grad_norm/TASK`), so that
    whatever reads the reported tasks' logs (reports, tables) leaves them out."""
    moved = {
        old: f"auxiliary/{t.name}/{what}"
        for t in tasks
        if t.auxiliary
        for old, what in (
            (f"train/{t.name}/loss", "loss"),
            (f"weight/{t.name}", "weight"),
            (f"grad_norm/{t.name}", "grad_norm"),
        )
    }
    return {moved.get(k, k): v for k, v in logs.items()}


def logged_auxiliary(history: Iterable[Mapping[str, float]]) -> set[str]:
    """The auxiliary tasks of a run, from the `auxiliary/TASK/...` logs `auxiliary_logs`
    wrote into its history."""
    return {k.split("/")[1] for row in history for k in row if k.startswith("auxiliary/")}


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of a step's derived inputs: one stream per (training seed, step)."""
    return torch.Generator().manual_seed(((seed & 0xFFFFFFFF) << 31 | step) & (2**63 - 1))


def derive_batch(
    batch: Batch, tasks: Sequence[Task], generator: torch.Generator | None = None
) -> Batch:
    """`batch` with each self-supervised task's derived inputs appended to `x` (rows of its
    own) and its targets replaced by the derived ones, drawn from `generator` (torch's global
    one when None); the batch itself when no task derives its targets or it was derived."""
    derived = [t for t in tasks if t.kind_spec.derives_targets and t.name not in batch.rows]
    if not derived:
        return batch
    n = batch.x.shape[0]
    parts, targets = [batch.x], dict(batch.targets)
    rows = {t.name: slice(0, n) for t in tasks} | dict(batch.rows)
    start = n
    for task in derived:
        labelled = task.mask(batch.targets[task.name]).reshape(n, -1).any(1)
        x = batch.x if bool(labelled.all()) else batch.x[labelled]
        made = task.kind_spec.derive(task, x, generator)
        if made.inputs.shape[1:] != batch.x.shape[1:] or len(made.target) != len(made.inputs):
            raise ValueError(
                f"task {task.name!r}: {type(task.kind_spec).__name__}.derive must return inputs "
                f"shaped like the batch's rows {tuple(batch.x.shape[1:])} and one target per "
                f"input row; got inputs {tuple(made.inputs.shape)}, target "
                f"{tuple(made.target.shape)}"
            )
        parts.append(made.inputs.to(batch.x.dtype))
        rows[task.name] = slice(start, start + len(made.inputs))
        targets[task.name] = made.target
        start += len(made.inputs)
    return Batch(torch.cat(parts), targets, rows)
