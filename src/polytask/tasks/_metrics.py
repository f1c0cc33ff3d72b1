"""Evaluation metrics: a name, a function of (targets, predictions) and the better direction.

Metric functions receive NumPy arrays that are already masked (rows without a label removed),
except for multilabel tasks, whose targets keep NaN at missing elements so each label column can
be masked on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)

MetricFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Metric:
    """A named metric; `higher_is_better` decides the sign in Δm and in early stopping."""

    name: str
    fn: MetricFn
    higher_is_better: bool

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        if len(y_true) == 0 or not np.all(np.isfinite(y_pred)):
            return float("nan")  # no labels, or a diverged model: the metric is undefined
        return float(self.fn(y_true, y_pred))


def _auc_binary(y: np.ndarray, p: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")  # AUC is undefined with one class present
    return float(roc_auc_score(y, p))


def _acc_binary(y: np.ndarray, p: np.ndarray) -> float:
    return float(accuracy_score(y.astype(int), (p >= 0.5).astype(int)))


def _f1_binary(y: np.ndarray, p: np.ndarray) -> float:
    return float(f1_score(y.astype(int), (p >= 0.5).astype(int), zero_division=0.0))


def _acc_multiclass(y: np.ndarray, p: np.ndarray) -> float:
    return float(accuracy_score(y, p.argmax(axis=1)))


def _macro_f1_multiclass(y: np.ndarray, p: np.ndarray) -> float:
    labels = np.arange(p.shape[1])
    pred = p.argmax(axis=1)
    present = np.union1d(np.unique(y), np.unique(pred))
    return float(
        f1_score(
            y, pred, labels=labels[np.isin(labels, present)], average="macro", zero_division=0.0
        )
    )


def _per_label(
    y: np.ndarray, p: np.ndarray, fn: Callable[[np.ndarray, np.ndarray], float]
) -> float:
    values = []
    for j in range(y.shape[1]):
        keep = ~np.isnan(y[:, j])
        if keep.any():
            values.append(fn(y[keep, j], p[keep, j]))
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _macro_f1_multilabel(y: np.ndarray, p: np.ndarray) -> float:
    return _per_label(y, p, _f1_binary)


def _macro_auc_multilabel(y: np.ndarray, p: np.ndarray) -> float:
    return _per_label(y, p, _auc_binary)


def _acc_multilabel(y: np.ndarray, p: np.ndarray) -> float:
    keep = ~np.isnan(y)
    return float(((p >= 0.5) == (y == 1))[keep].mean()) if keep.any() else float("nan")


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - p) ** 2)))


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    return float(r2_score(y, p)) if len(y) > 1 else float("nan")


METRICS: dict[str, dict[str, Metric]] = {
    "binary": {
        "auc": Metric("auc", _auc_binary, True),
        "accuracy": Metric("accuracy", _acc_binary, True),
        "f1": Metric("f1", _f1_binary, True),
    },
    "multiclass": {
        "macro_f1": Metric("macro_f1", _macro_f1_multiclass, True),
        "accuracy": Metric("accuracy", _acc_multiclass, True),
    },
    "multilabel": {
        "macro_f1": Metric("macro_f1", _macro_f1_multilabel, True),
        "macro_auc": Metric("macro_auc", _macro_auc_multilabel, True),
        "accuracy": Metric("accuracy", _acc_multilabel, True),
    },
    "regression": {
        "rmse": Metric("rmse", _rmse, False),
        "mae": Metric("mae", lambda y, p: float(mean_absolute_error(y, p)), False),
        "r2": Metric("r2", _r2, True),
    },
}
"""Built-in metrics by task kind; the first of each kind is its default primary metric."""
