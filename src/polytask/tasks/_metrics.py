"""Evaluation metrics: a name, a function of (targets, predictions) and the better direction.

Metric functions receive NumPy arrays that are already masked (rows without a label removed),
except where a kind masks element by element (multilabel): its targets keep NaN at missing
elements so each label column can be masked on its own. Each task kind lists its metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]


class Undefined(float):
    """A value that could not be computed: NaN (it stays a float everywhere) with the reason,
    e.g. `Undefined("one class only")` for an AUC; tables show the reason."""

    reason: str

    def __new__(cls, reason: str) -> Undefined:
        value = super().__new__(cls, math.nan)
        value.reason = reason
        return value

    def __reduce__(self) -> tuple[type[Undefined], tuple[str]]:
        return Undefined, (self.reason,)

    def __repr__(self) -> str:
        return f"Undefined({self.reason!r})"


PYCOCOTOOLS = ("pycocotools", "pip install 'polytask[vision]'")
"""What COCO's metrics (box mAP, keypoint OKS AP) compute with: `Metric.needs`."""


@dataclass(frozen=True)
class Metric:
    """A named metric; `higher_is_better` decides the sign in Δm and in early stopping;
    `needs`: an optional package it computes with and how to install it (checked before
    training: `missing_package`)."""

    name: str
    fn: MetricFn
    higher_is_better: bool
    needs: tuple[str, str] | None = None

    def missing_package(self) -> str | None:
        """What to install for this metric when its package is absent (None: nothing)."""
        if self.needs is None:
            return None
        import importlib.util

        module, install = self.needs
        return None if importlib.util.find_spec(module) is not None else install

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        if len(y_true) == 0:
            return Undefined("no labelled rows")
        if not np.all(np.isfinite(y_pred)):
            return Undefined("predictions not finite")  # a diverged model
        value = self.fn(y_true, y_pred)
        return value if isinstance(value, Undefined) else float(value)
