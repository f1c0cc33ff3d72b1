"""Task kinds: what each kind brings by default (output size, loss, label mask, metrics).

A kind turns raw head outputs into a loss over labelled elements only and into predictions
(probabilities for classification) for metrics and `predict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

TaskKind = Literal["binary", "multiclass", "multilabel", "regression"]
TASK_KINDS: tuple[str, ...] = ("binary", "multiclass", "multilabel", "regression")
IGNORE_INDEX = -100
"""Class targets equal to this value are missing labels (as in `torch.nn.CrossEntropyLoss`)."""

ElementLoss = Callable[[Tensor, Tensor], Tensor]
"""Maps (predictions, targets) of labelled rows to per-element losses (no reduction)."""


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


def _bce(pred: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype), reduction="none")


def _ce(pred: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(pred, target.long(), reduction="none")


def _mse(pred: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(pred, target.to(pred.dtype), reduction="none")


def _l1(pred: Tensor, target: Tensor) -> Tensor:
    return F.l1_loss(pred, target.to(pred.dtype), reduction="none")


def _huber(pred: Tensor, target: Tensor) -> Tensor:
    return F.huber_loss(pred, target.to(pred.dtype), reduction="none")


LOSSES: dict[str, ElementLoss] = {
    "bce": _bce,
    "cross_entropy": _ce,
    "mse": _mse,
    "l1": _l1,
    "huber": _huber,
}
"""Built-in element-wise losses, selectable by name in a `Task` or a YAML config."""

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
