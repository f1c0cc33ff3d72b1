"""Evaluation: per-task losses and metrics over a whole data set, in original units."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from polytask.data._tensors import TaskData
from polytask.models._base import MultiTaskNet
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


def shared_predict_raw(
    model: MultiTaskNet,
    x: Tensor,
    batch_size: int,
    device: torch.device,
    processes: Processes | None = None,
) -> dict[str, Tensor]:
    """`predict_raw`, with the rows shared among the processes of a distributed run and the
    outputs gathered in row order on every process."""
    if processes is None:
        return predict_raw(model, x, batch_size, device)
    rows = processes.share(torch.arange(x.shape[0]))
    mine = predict_raw(model, x[rows], batch_size, device)
    parts = processes.gather(mine)
    return {k: torch.cat([part[k] for part in parts]) for k in mine}  # type: ignore[index]


def evaluate(
    model: MultiTaskNet,
    tasks: Sequence[Task],
    data: TaskData,
    batch_size: int,
    device: torch.device,
    processes: Processes | None = None,
) -> TaskMetrics:
    """Each task's loss and metrics on the rows of `data` that label it (tasks `data` has no
    targets for, and auxiliary tasks, are left out); a value that cannot be computed is
    `Undefined`, with the reason (e.g. no labelled rows, one class only). With `processes`,
    each evaluates its share of the rows and the metrics are computed on all of them."""
    raw = shared_predict_raw(model, data.x, batch_size, device, processes)
    result: TaskMetrics = {}
    for task in tasks:
        if task.auxiliary or task.name not in data.targets:
            continue
        target, kind = data.targets[task.name], task.kind_spec
        labelled = bool(task.mask(target).any())
        loss = float(task.compute_loss(raw[task.name], target)) if labelled else NO_LABELS
        scale = data.target_scale.get(task.name)
        pred, truth = kind.prediction(raw[task.name], scale), kind.truth(target, scale)
        result[task.name] = {"loss": loss, **task.evaluate(pred, truth)}
    return result


def flatten(metrics: TaskMetrics, prefix: str) -> dict[str, float]:
    """{"val/churn/auc": ..., "val/loss": sum of the task losses that could be computed}"""
    flat = {f"{prefix}/{t}/{m}": float(v) for t, ms in metrics.items() for m, v in ms.items()}
    losses = [ms["loss"] for ms in metrics.values() if not isinstance(ms["loss"], Undefined)]
    flat[f"{prefix}/loss"] = float(np.sum(losses))
    return flat
