"""Multilabel tasks: one logit per label, each label masked on its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polytask.tasks._columns import DataError, row_labels
from polytask.tasks._kinds._base import (
    IGNORE_INDEX,
    TargetFit,
    TaskKind,
    element_loss_mean,
    numeric_targets,
)
from polytask.tasks._kinds._binary import binary_auc, binary_f1
from polytask.tasks._losses import ElementLoss, standard_losses
from polytask.tasks._metrics import Metric, Undefined

if TYPE_CHECKING:
    from polytask.tasks._task import Task


def _per_label(
    y: np.ndarray, p: np.ndarray, fn: Callable[[np.ndarray, np.ndarray], float]
) -> float:
    values = []
    for j in range(y.shape[1]):
        keep = ~np.isnan(y[:, j])
        if keep.any():
            values.append(fn(y[keep, j], p[keep, j]))
    finite = [v for v in values if not np.isnan(v)]
    if finite:
        return float(np.mean(finite))
    reason = next((v.reason for v in values if isinstance(v, Undefined)), "no labelled rows")
    return Undefined(reason if len(values) < 2 else f"every label: {reason}")


def multilabel_macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    return _per_label(y, p, binary_f1)


def multilabel_macro_auc(y: np.ndarray, p: np.ndarray) -> float:
    return _per_label(y, p, binary_auc)


def multilabel_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    keep = ~np.isnan(y)
    if not keep.any():
        return Undefined("no labelled rows")
    return float(((p >= 0.5) == (y >= 0.5))[keep].mean())  # a probability: its rounded label


class MultilabelKind(TaskKind):
    """Several yes/no labels per row, one target column each (`target: [col_a, col_b]`) or
    `num_classes` of them: targets 0/1 (missing: NaN or -100) are masked element by element, so
    a row may label some and not others. Metrics see NaN at missing elements; `predict` writes
    each label's 0/1 prediction (column `<task>_<label>`) and probability (`<task>_prob_<label>`),
    a label being its target column (or its index 0, 1, ... with `num_classes`)."""

    several_columns = True

    served_meaning = "probability of each label, shape (batch, labels)"

    losses = standard_losses("bce")
    metrics: ClassVar[Mapping[str, Metric]] = {
        "macro_f1": Metric("macro_f1", multilabel_macro_f1, True),
        "macro_auc": Metric("macro_auc", multilabel_macro_auc, True),
        "accuracy": Metric("accuracy", multilabel_accuracy, True),
    }
    squeeze = False

    def validate(self, task: Task) -> None:
        if not isinstance(task.target, tuple) and (
            task.num_classes is None or task.num_classes < 1
        ):
            raise ValueError(
                f"task {task.name!r}: a multilabel task names one target column per label "
                "(target: [col_a, col_b, ...]) or sets num_classes"
            )

    def out_features(self, task: Task) -> int:
        if isinstance(task.target, tuple):
            return len(task.target_columns)
        return int(task.num_classes or 0)

    def predict(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output)

    def element_mask(self, target: Tensor) -> Tensor:
        """Float targets may also mark a missing label with `IGNORE_INDEX`."""
        return super().element_mask(target) & (target != IGNORE_INDEX)

    def label_mask(self, target: Tensor) -> Tensor:
        """One entry per label element: each label of a row is masked on its own."""
        return self.element_mask(target)

    def loss(self, fn: ElementLoss, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Mean of `fn` over the labelled elements."""
        return element_loss_mean(fn, output, target, mask)

    def evaluate(
        self, metrics: Sequence[Metric], predictions: np.ndarray, targets: np.ndarray
    ) -> dict[str, float]:
        """Each metric on all rows, with NaN at missing elements (masked per label)."""
        keep = self.label_mask(torch.as_tensor(targets)).numpy()
        y = np.where(keep, targets, np.nan).astype(float)
        return {m.name: m(y, predictions) for m in metrics}

    def breakdown(
        self, task: Task, predictions: np.ndarray, targets: np.ndarray
    ) -> dict[str, float]:
        """Each label's AUC and F1 on its own labelled rows (`auc[label]`, `f1[label]`), as
        multilabel results are read (e.g. one finding's AUC); {} with one label."""
        if predictions.ndim != 2 or predictions.shape[1] < 2:
            return {}
        keep = self.label_mask(torch.as_tensor(targets)).numpy()
        columns = task.target_columns
        named = isinstance(task.target, tuple) and len(columns) == predictions.shape[1]
        out: dict[str, float] = {}
        for name, fn in (("auc", binary_auc), ("f1", binary_f1)):
            for j in range(predictions.shape[1]):
                label = columns[j] if named else j
                rows = keep[:, j]
                out[f"{name}[{label}]"] = (
                    fn(targets[rows, j], predictions[rows, j]) if rows.any()
                    else Undefined("no labelled rows")
                )  # fmt: skip
        return out

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """Labels with one class in every labelled element: left out of macro_auc (and of
        macro_f1 where that class is 0: no positive row for recall to find)."""
        mask, columns = self.element_mask(target), task.target_columns
        name = (lambda j: columns[j]) if len(columns) == target.shape[1] else (lambda j: j)
        one = [j for j in range(target.shape[1])
               if mask[:, j].any() and len(target[:, j][mask[:, j]].unique()) == 1]  # fmt: skip
        if not one or not bool(mask.any()):
            return super().degenerate(task, target, fit)
        said = f"labels {[name(j) for j in one]} have one class only, so macro_auc leaves them out"
        negative = [name(j) for j in one if not bool((target[:, j][mask[:, j]] > 0.5).any())]
        if negative:
            said += f", and macro_f1 those with no positive row ({negative})"
        return said

    def encode_target(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> Tensor:
        values = numeric_targets(task, df)
        values = np.where(values == IGNORE_INDEX, np.nan, values)
        bad = ~np.isnan(values) & ~np.isin(values, (0.0, 1.0))
        if bad.any():
            columns = [c for c, b in zip(task.target_columns, bad.any(0), strict=True) if b]
            shown = sorted({float(v) for v in values[bad]})[:5]
            raise DataError(
                f"task {task.name!r}: multilabel targets must be 0, 1 or missing; columns "
                f"{columns} hold {shown} ({row_labels(bad.any(1), df.index)})"
            )
        return torch.tensor(values, dtype=torch.float32)

    def output_labels(self, task: Task) -> list[Any] | None:
        """The label columns, in the output's order (positions 0, 1, ... for one column)."""
        if isinstance(task.target, tuple):
            return list(task.target_columns)
        return list(range(self.out_features(task)))

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        labels = task.target_columns if isinstance(task.target, tuple) else None
        out: dict[str, Any] = {}
        for j in range(prediction.shape[1]):
            label = labels[j] if labels is not None else j
            out[f"{task.name}_{label}"] = (prediction[:, j] >= 0.5).astype(int)
        for j in range(prediction.shape[1]):
            label = labels[j] if labels is not None else j
            out[f"{task.name}_prob_{label}"] = prediction[:, j]
        return out
