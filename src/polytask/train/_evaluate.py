"""Evaluation: per-task losses and metrics over a whole data set, in original units."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from polytask.data._tensors import TaskData
from polytask.models._base import MultiTaskNet
from polytask.tasks._task import Task

TaskMetrics = dict[str, dict[str, float]]
"""{task: {"loss": ..., metric: value}}"""


@torch.no_grad()
def predict_raw(
    model: MultiTaskNet, x: Tensor, batch_size: int, device: torch.device
) -> dict[str, Tensor]:
    """Raw head outputs for all rows, computed in batches, on the CPU."""
    model.eval()
    chunks: dict[str, list[Tensor]] = {}
    for start in range(0, x.shape[0], batch_size):
        out = model(x[start : start + batch_size].to(device))
        for k, v in out.items():
            chunks.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v) for k, v in chunks.items()}


def evaluate(
    model: MultiTaskNet,
    tasks: Sequence[Task],
    data: TaskData,
    batch_size: int,
    device: torch.device,
) -> TaskMetrics:
    """Each task's loss and metrics on the rows of `data` that label it (tasks `data` has no
    targets for are left out)."""
    raw = predict_raw(model, data.x, batch_size, device)
    result: TaskMetrics = {}
    for task in tasks:
        if task.name not in data.targets:
            continue
        target, kind = data.targets[task.name], task.kind_spec
        loss = float(task.compute_loss(raw[task.name], target))
        scale = data.target_scale.get(task.name)
        pred, truth = kind.prediction(raw[task.name], scale), kind.truth(target, scale)
        result[task.name] = {"loss": loss, **task.evaluate(pred, truth)}
    return result


def flatten(metrics: TaskMetrics, prefix: str) -> dict[str, float]:
    """{"val/churn/auc": ..., "val/loss": sum of task losses}"""
    flat = {f"{prefix}/{t}/{m}": v for t, ms in metrics.items() for m, v in ms.items()}
    flat[f"{prefix}/loss"] = float(np.sum([ms["loss"] for ms in metrics.values()]))
    return flat
