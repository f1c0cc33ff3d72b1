"""Regression tasks: one value per row, trained on standardised targets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import mean_absolute_error, r2_score
from torch import Tensor

from polytask.tasks._columns import DataError, mean_std, numeric_values, row_labels
from polytask.tasks._kinds._base import TargetFit, TaskKind, numeric_targets, unscale
from polytask.tasks._losses import standard_losses
from polytask.tasks._metrics import Metric, Undefined

if TYPE_CHECKING:
    from polytask.tasks._task import Task


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(mean_absolute_error(y, p))


def r2(y: np.ndarray, p: np.ndarray) -> float:
    if len(y) < 2:
        return Undefined("needs 2 labelled rows")
    if bool((y == y[0]).all()):
        return Undefined("constant target")  # no variance to explain
    return float(r2_score(y, p))


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _refuse_float32_overflow(values: np.ndarray, df: pd.DataFrame, what: str, after: str) -> None:
    """A regression target beyond float32's range (±3.4e38) would be trained on and reported
    as infinity: refuse it, naming the rows."""
    too_big = np.abs(values) > _FLOAT32_MAX
    if too_big.any():
        raise DataError(
            f"{what} holds values beyond the float32 range (±3.4e38){after} in "
            f"{row_labels(too_big, df.index)}: rescale the column (e.g. other units) or correct "
            "those cells"
        )


class RegressionKind(TaskKind):
    """A number per row (missing: NaN): targets are standardised with the training mean and
    std, and predictions and metrics are reported in the original units (the loss stays on the
    standardised targets: `loss_units`)."""

    served_meaning = "the predicted value in the target's original units, shape (batch,)"

    losses = standard_losses("mse", "l1", "huber")
    metrics: ClassVar[Mapping[str, Metric]] = {
        "rmse": Metric("rmse", rmse, False),
        "mae": Metric("mae", mae, False),
        "r2": Metric("r2", r2, True),
    }
    loss_units = "standardised"
    classic = "value"

    def classic_output(self, task: Task, values: np.ndarray) -> Tensor:
        """The predicted standardised values, one column per target."""
        out = torch.as_tensor(values, dtype=torch.float32).reshape(len(values), -1)
        return task.shape_output(out)

    def predict(self, output: Tensor) -> Tensor:
        return output

    def check_output(self, task: Task, output: Tensor, target: Tensor) -> None:
        """Also refuse targets shaped unlike the outputs ((rows, 1) against (rows,)): an
        element-wise loss would broadcast them to rows × rows and train on nonsense."""
        super().check_output(task, output, target)
        if output.shape != target.shape:
            fix = "y.reshape(-1)" if output.ndim == 1 else f"shape (rows, {output.shape[-1]})"
            raise ValueError(
                f"task {task.name!r} (regression): targets of shape {tuple(target.shape)} for "
                f"outputs of shape {tuple(output.shape)}; give the targets the outputs' shape "
                f"({fix})"
            )

    def fit_target(self, task: Task, df: pd.DataFrame) -> TargetFit:
        what = f"task {task.name!r}: target {task.target_columns[0]!r}"
        y = numeric_values(
            df, task.target_columns[0], what,
            "a regression target is a number; for labels use kind multiclass (or binary)",
        )  # fmt: skip
        if np.isnan(y).all():
            raise DataError(f"{what} has no numeric label in the training rows")
        _refuse_float32_overflow(y, df, what, "")
        return TargetFit(scale=mean_std(y))

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """One value in every labelled row: nothing to learn, r2 undefined."""
        y = target[self.label_mask(target)]
        if not len(y) or bool((y != y[0]).any()):
            return super().degenerate(task, target, fit)
        value = float(unscale(y[:1], fit.scale)[0])
        if len(y) == 1:
            return f"one labelled row (value {value:.6g}), so its r2 is undefined"
        return f"every labelled value is {value:.6g}, so its r2 is undefined"

    def encode_target(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> Tensor:
        if fit.scale is None:
            raise ValueError(
                f"task {task.name!r}: its target scale is unknown; fit the TabularPreprocessor "
                "with this task first"
            )
        mean, std = fit.scale
        y = numeric_targets(task, df)[:, 0]
        what = f"task {task.name!r}: target {task.target_columns[0]!r}"
        _refuse_float32_overflow(y, df, what, "")
        z = (y - mean) / std
        _refuse_float32_overflow(
            z, df, what, f" once standardised with the training mean {mean:.4g} and std {std:.4g}"
        )
        return torch.tensor(z, dtype=torch.float32)
