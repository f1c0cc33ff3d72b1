"""Task kinds: what each kind brings by default (output size, loss, label mask, metrics).

A kind turns raw head outputs into a loss over labelled elements only and into predictions
(probabilities for classification) for metrics and `predict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from polytask.tasks._losses import ElementLoss, bce, cross_entropy, huber, l1, mse

TaskKind = Literal["binary", "multiclass", "multilabel", "regression"]
TASK_KINDS: tuple[str, ...] = ("binary", "multiclass", "multilabel", "regression")
IGNORE_INDEX = -100
"""Class targets equal to this value are missing labels (as in `torch.nn.CrossEntropyLoss`)."""


def label_mask(kind: str, target: Tensor) -> Tensor:
    """Boolean mask of labelled elements: NaN, and for classes the ignore value, are missing.

    For binary, multiclass and regression targets the mask has one entry per row; for multilabel
    it has the target's shape (one entry per label element).
    """
    if target.is_floating_point():
        mask = ~torch.isnan(target)
        if kind in ("binary", "multilabel"):
            mask &= target != IGNORE_INDEX
    else:
        mask = target != IGNORE_INDEX
    if kind != "multilabel" and mask.ndim > 1:
        mask = mask.reshape(mask.shape[0], -1).all(dim=1)
    return mask


LOSSES: dict[str, ElementLoss] = {
    "bce": bce,
    "cross_entropy": cross_entropy,
    "mse": mse,
    "l1": l1,
    "huber": huber,
}
"""The standard element-wise losses with default parameters (all by name: `losses.SPECS`)."""

DEFAULT_LOSS: dict[str, str] = {
    "binary": "bce",
    "multiclass": "cross_entropy",
    "multilabel": "bce",
    "regression": "mse",
}


@dataclass(frozen=True)
class KindSpec:
    """How a kind shapes head outputs and turns them into predictions."""

    squeeze: bool
    """Single-output heads (binary, regression) return shape (N,) instead of (N, 1)."""
    to_prediction: Callable[[Tensor], Tensor]


KINDS: dict[str, KindSpec] = {
    "binary": KindSpec(squeeze=True, to_prediction=torch.sigmoid),
    "multiclass": KindSpec(squeeze=False, to_prediction=lambda z: torch.softmax(z, dim=-1)),
    "multilabel": KindSpec(squeeze=False, to_prediction=torch.sigmoid),
    "regression": KindSpec(squeeze=True, to_prediction=lambda z: z),
}
