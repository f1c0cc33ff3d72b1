"""Regression tasks: one value per row, trained on standardised targets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import mean_absolute_error, r2_score
from torch import Tensor

from polytask.tasks._columns import DataError, mean_std, numeric_values
from polytask.tasks._kinds._base import TargetFit, TaskKind, numeric_targets
from polytask.tasks._losses import standard_losses
from polytask.tasks._metrics import Metric

if TYPE_CHECKING:
    from polytask.tasks._task import Task


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(mean_absolute_error(y, p))


def r2(y: np.ndarray, p: np.ndarray) -> float:
    return float(r2_score(y, p)) if len(y) > 1 else float("nan")


class RegressionKind(TaskKind):
    """A number per row (missing: NaN): targets are standardised with the training mean and
    std, and predictions and metrics are reported in the original units (the loss stays on the
    standardised targets: `loss_units`)."""

    losses = standard_losses("mse", "l1", "huber")
    metrics: ClassVar[Mapping[str, Metric]] = {
        "rmse": Metric("rmse", rmse, False),
        "mae": Metric("mae", mae, False),
        "r2": Metric("r2", r2, True),
    }
    loss_units = "standardised"

    def predict(self, output: Tensor) -> Tensor:
        return output

    def fit_target(self, task: Task, df: pd.DataFrame) -> TargetFit:
        what = f"task {task.name!r}: target {task.target_columns[0]!r}"
        y = numeric_values(df, task.target_columns[0], what)
        if np.isnan(y).all():
            raise DataError(f"{what} has no numeric label in the training rows")
        return TargetFit(scale=mean_std(y))

    def encode_target(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> Tensor:
        if fit.scale is None:
            raise ValueError(
                f"task {task.name!r}: its target scale is unknown; fit the TabularPreprocessor "
                "with this task first"
            )
        mean, std = fit.scale
        return torch.tensor((numeric_targets(task, df)[:, 0] - mean) / std, dtype=torch.float32)
