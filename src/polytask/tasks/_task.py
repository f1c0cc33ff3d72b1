"""The `Task` spec: a frozen description of one task of a multi-task model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field

import numpy as np
import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass
from torch import Tensor, nn

from polytask.tasks._kinds import (
    DEFAULT_LOSS,
    KINDS,
    TASK_KINDS,
    ElementLoss,
    TaskKind,
    label_mask,
)
from polytask.tasks._losses import check_loss, make_loss
from polytask.tasks._metrics import METRICS, Metric

HeadFactory = Callable[[int, int], nn.Module]
"""Builds a head from (input features, output size)."""


def linear_head(in_features: int, out_features: int) -> nn.Module:
    """The default head: one linear layer from the shared representation."""
    return nn.Linear(in_features, out_features)


@dataclass(frozen=True)
class Task:
    """One task: what to predict, from which target, with which loss and metrics.

    `kind` brings defaults (head size, loss, metrics, primary metric); each may be overridden.
    `target` is the target column (defaults to `name`); a multilabel task names one column per
    label. `num_classes` is required for multiclass (classes are 0..num_classes-1 after encoding).
    Missing labels (NaN, or -100 for classes) are masked out of this task's loss and metrics only.
    `loss` by name (see `polytask.tasks.LOSSES`: bce, cross_entropy, gce, sce, mse, l1, huber)
    takes `loss_params` (e.g. {q: 0.7} for gce) and, for bce / cross_entropy, `label_smoothing`.
    """

    name: str
    kind: TaskKind
    target: str | tuple[str, ...] | None = None
    num_classes: int | None = None
    loss: str | ElementLoss | None = None
    loss_params: dict[str, float] | None = None
    label_smoothing: float = 0.0
    metrics: tuple[str | Metric, ...] | None = None
    primary_metric: str | None = None
    head: HeadFactory | None = field(default=None, compare=False)

    __pydantic_config__ = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(
                f"task name {self.name!r} is not valid: use letters, digits, '_' or '-'"
            )
        if self.kind not in TASK_KINDS:
            raise ValueError(
                f"task {self.name!r}: unknown kind {self.kind!r}; allowed: {', '.join(TASK_KINDS)}"
            )
        if isinstance(self.target, list):
            object.__setattr__(self, "target", tuple(self.target))
        if self.kind == "multiclass" and self.num_classes is not None and self.num_classes < 2:
            raise ValueError(
                f"task {self.name!r}: a multiclass task needs num_classes >= 2 "
                f"(got {self.num_classes})"
            )
        if (
            self.kind == "multilabel"
            and not isinstance(self.target, tuple)
            and (self.num_classes is None or self.num_classes < 1)
        ):
            raise ValueError(
                f"task {self.name!r}: a multilabel task names one target column per label "
                "(target: [col_a, col_b, ...]) or sets num_classes"
            )
        if self.loss is None or isinstance(self.loss, str):
            name = self.loss or DEFAULT_LOSS[self.kind]
            check_loss(self.name, name, self.kind, self.loss_params or {}, self.label_smoothing)
        elif self.loss_params or self.label_smoothing:
            raise ValueError(
                f"task {self.name!r}: loss_params and label_smoothing apply to losses chosen "
                "by name; bind them into the custom loss instead"
            )
        if self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))
            known = METRICS[self.kind]
            for m in self.metrics:
                if isinstance(m, str) and m not in known:
                    raise ValueError(
                        f"task {self.name!r}: unknown {self.kind} metric {m!r}; "
                        f"allowed: {', '.join(known)} (or pass a polytask.Metric)"
                    )
        names = [m.name for m in self.metric_objects()]
        if self.primary_metric is not None and self.primary_metric not in names:
            raise ValueError(
                f"task {self.name!r}: primary_metric {self.primary_metric!r} is not one of its "
                f"metrics ({', '.join(names)})"
            )

    @property
    def target_columns(self) -> tuple[str, ...]:
        """The data columns this task reads its labels from."""
        if self.target is None:
            return (self.name,)
        return self.target if isinstance(self.target, tuple) else (self.target,)

    @property
    def out_features(self) -> int:
        """Size of the head's output."""
        if self.kind == "multiclass":
            if self.num_classes is None:
                raise ValueError(
                    f"task {self.name!r}: num_classes is unknown; set it, or fit a "
                    "TabularPreprocessor, which reads the classes from the training data"
                )
            return self.num_classes
        if self.kind == "multilabel":
            return (
                len(self.target_columns)
                if isinstance(self.target, tuple)
                else int(self.num_classes or 0)
            )
        return 1

    def build_head(self, in_features: int) -> nn.Module:
        """A fresh head for this task on top of a representation of `in_features`."""
        factory = self.head or linear_head
        return factory(in_features, self.out_features)

    def shape_output(self, raw: Tensor) -> Tensor:
        """Drop the trailing unit dimension of single-output heads."""
        if KINDS[self.kind].squeeze and raw.ndim == 2 and raw.shape[1] == 1:
            return raw.squeeze(1)
        return raw

    def mask(self, target: Tensor) -> Tensor:
        """Which targets are labelled (rows, or elements for multilabel)."""
        return label_mask(self.kind, target)

    def element_loss(self) -> ElementLoss:
        if self.loss is not None and not isinstance(self.loss, str):
            return self.loss
        name = self.loss or DEFAULT_LOSS[self.kind]
        return make_loss(name, self.kind, self.loss_params or {}, self.label_smoothing)

    def compute_loss(self, output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean loss over labelled elements; 0 (still in the graph) when none is labelled.
        `mask` is `self.mask(target)` when the caller already has it."""
        mask = self.mask(target) if mask is None else mask
        if not bool(mask.any()):
            return output.sum() * 0.0
        if self.kind == "multilabel":
            safe = torch.where(mask, target, torch.zeros_like(target))
            per = self.element_loss()(output, safe)
            return per[mask].mean()
        return self.element_loss()(output[mask], target[mask]).mean()

    def predict(self, output: Tensor) -> Tensor:
        """Predictions for metrics: probabilities for classification, values for regression."""
        return KINDS[self.kind].to_prediction(output)

    def metric_objects(self) -> tuple[Metric, ...]:
        known = METRICS[self.kind]
        chosen = self.metrics if self.metrics is not None else tuple(known)
        return tuple(known[m] if isinstance(m, str) else m for m in chosen)

    @property
    def primary(self) -> Metric:
        """The metric that Δm and early stopping on this task use."""
        objs = self.metric_objects()
        if self.primary_metric is None:
            return objs[0]
        return next(m for m in objs if m.name == self.primary_metric)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly spec; custom loss, metric or head callables cannot be stored."""
        custom = [
            what
            for what, value in (("loss", self.loss), ("head", self.head))
            if value is not None and not isinstance(value, str)
        ] + ["metrics"] * any(not isinstance(m, str) for m in self.metrics or ())
        if custom:
            raise ValueError(
                f"task {self.name!r} uses a custom {custom[0]} that cannot be written to a "
                "checkpoint's metadata; pass the same tasks again when loading"
            )
        return {
            "name": self.name,
            "kind": self.kind,
            "target": list(self.target) if isinstance(self.target, tuple) else self.target,
            "num_classes": self.num_classes,
            "loss": self.loss,
            "loss_params": self.loss_params,
            "label_smoothing": self.label_smoothing,
            "metrics": list(self.metrics) if self.metrics is not None else None,
            "primary_metric": self.primary_metric,
        }

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """All metrics of this task on labelled rows (element-wise masking for multilabel)."""
        tgt = torch.as_tensor(targets)
        if self.kind == "multilabel":
            y = np.where(self.mask(tgt).numpy(), targets, np.nan).astype(float)
            p = predictions
        else:
            keep = self.mask(tgt).numpy()
            y, p = targets[keep], predictions[keep]
        return {m.name: m(y, p) for m in self.metric_objects()}
