"""Evaluation metrics: a name, a function of (targets, predictions) and the better direction.

Metric functions receive NumPy arrays that are already masked (rows without a label removed),
except where a kind masks element by element (multilabel): its targets keep NaN at missing
elements so each label column can be masked on its own. Each task kind lists its metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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
