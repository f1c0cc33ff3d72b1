"""The `Task` spec: a frozen description of one task of a multi-task model."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from dataclasses import field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ConfigDict, field_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from polytask._audience import for_user
from polytask.tasks._columns import DataError, listed_columns
from polytask.tasks._kinds import TargetFit, TaskKind
from polytask.tasks._losses import ElementLoss, check_loss
from polytask.tasks._metrics import Metric
from polytask.tasks._registry import KINDS, check_loss_name, kind_named, unknown_kind

if TYPE_CHECKING:
    from polytask.models.encoders import Features

HeadFactory = Callable[[int, int], nn.Module]
"""Builds a head from (input features, output size)."""


def linear_head(in_features: int, out_features: int) -> nn.Module:
    """The default head: one linear layer from the shared representation."""
    return nn.Linear(in_features, out_features)


@dataclass(frozen=True)
class Task:
    """One task: what to predict, from which target, with which loss and metrics.

    `kind` names a registered `TaskKind` (`polytask.tasks.KINDS`: binary, multiclass,
    multilabel, regression, or one you add), which brings defaults (head size, loss, metrics,
    primary metric); each may be overridden. `target` is the target column (defaults to `name`);
    a multilabel task names one column per label. `num_classes` is required for multiclass
    (classes are 0..num_classes-1 after encoding). Missing labels (NaN, or -100 for classes) are
    masked out of this task's loss and metrics only. `loss` by name (one its kind lists, e.g.
    bce, cross_entropy, gce, sce, mse, l1, huber) takes `loss_params` (e.g. {q: 0.7} for gce)
    and, for bce / cross_entropy, `label_smoothing`.

    `auxiliary` tasks are trained like the others but never reported: no metrics, no place in
    Δm, early stopping or predictions; they are there to help the reported tasks. Kinds that
    derive their targets from the inputs (`reconstruction`, `denoising`, `contrastive`) are
    always auxiliary (None: the kind decides). `kind_params` are the kind's own parameters
    (e.g. {mask_rate: 0.3} for reconstruction).

    `where` ({column: value, ...}): the task labels only the rows whose columns hold these
    values; its target is missing on the others (one task per school of one score column:
    `tasks_from_column`).
    """

    name: str
    kind: str
    target: str | tuple[str, ...] | None = None
    num_classes: int | None = None
    loss: str | ElementLoss | None = None
    loss_params: dict[str, float] | None = None
    label_smoothing: float = 0.0
    metrics: tuple[str | Metric, ...] | None = None
    primary_metric: str | None = None
    auxiliary: bool | None = None
    kind_params: dict[str, int | float | str | list[Any]] | None = None
    where: dict[str, int | float | str | bool] | None = None
    head: HeadFactory | None = field(default=None, compare=False)

    __pydantic_config__ = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        """Refuse a kind that is not in `KINDS`, suggesting the closest registered one."""
        if kind not in KINDS:
            raise PydanticCustomError("task_kind", "{reason}", {"reason": unknown_kind(kind)})
        return kind

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(
                f"task name {self.name!r} is not valid: use letters, digits, '_' or '-'"
            )
        kind = self.kind_spec
        if isinstance(self.target, list):
            object.__setattr__(self, "target", tuple(self.target))
        if self.auxiliary is None:
            object.__setattr__(self, "auxiliary", kind.derives_targets)
        elif kind.derives_targets and not self.auxiliary:
            raise ValueError(
                f"task {self.name!r}: a {self.kind} task learns from its own inputs and has "
                "nothing to predict or report, so it is always auxiliary: remove auxiliary: false"
            )
        kind.check_params(self)
        columns = self.target_columns
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            raise ValueError(f"task {self.name!r}: target lists columns {twice} more than once")
        kind.validate(self)
        if len(columns) > 1 and not kind.several_columns:  # the rest were never read
            raise ValueError(
                f"task {self.name!r}: a {self.kind} task reads one target column, and target "
                f"lists {len(columns)} ({list(columns)}): make a task of each column, or use "
                "kind multilabel for one label per column"
            )
        if self.where is not None:
            if not self.where:
                raise ValueError(f"task {self.name!r}: where is empty; give {{column: value}}")
            if kind.sequential or kind.derives_targets or kind.dense:
                raise ValueError(
                    f"task {self.name!r}: where selects rows of a table for a task with a "
                    f"label or value per row; a {self.kind} task cannot take it"
                )
            clash = sorted(set(self.where) & set(self.target_columns))
            if clash:
                raise ValueError(f"task {self.name!r}: where names its own target {clash}")
        if self.loss is None or isinstance(self.loss, str):
            name = self.loss or kind.default_loss
            check_loss_name(self.name, self.kind, name)
            check_loss(
                self.name, name, kind.losses[name], self.loss_params or {}, self.label_smoothing
            )
        elif self.loss_params or self.label_smoothing:
            raise ValueError(
                f"task {self.name!r}: loss_params and label_smoothing apply to losses chosen "
                "by name; bind them into the custom loss instead"
            )
        if self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))
            known = kind.metrics
            for m in self.metrics:
                if isinstance(m, str) and m not in known:
                    close = difflib.get_close_matches(m, list(known), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(
                        f"task {self.name!r}: unknown {self.kind} metric {m!r}{hint}; "
                        f"allowed: {', '.join(known)}"
                        + for_user(" (or pass a polytask.Metric)", "")
                    )
        names = [m.name for m in self.metric_objects()]
        if self.primary_metric is not None and self.primary_metric not in names:
            raise ValueError(
                f"task {self.name!r}: primary_metric {self.primary_metric!r} is not one of its "
                f"metrics ({', '.join(names)})"
            )

    @functools.cached_property
    def kind_spec(self) -> TaskKind:
        """The registered `TaskKind` object that `kind` names, bound to this task
        (`TaskKind.for_task`); bound once per task, not at every loss of every step."""
        return kind_named(self.kind).for_task(self)

    @property
    def target_columns(self) -> tuple[str, ...]:
        """The data columns this task reads its labels from (none for kinds that derive their
        targets from the inputs)."""
        return self.kind_spec.target_columns(self)

    def labelled_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` with this task's targets missing on the rows `where` leaves out (`df` itself
        without `where`)."""
        if self.where is None:
            return df
        missing = sorted(set(self.where) - set(map(str, df.columns)))
        if missing:
            shown = listed_columns(list(df.columns))
            raise DataError(
                f"task {self.name!r}: the columns {missing} of its where are not in the data; "
                f"its columns are: {shown}"
            )
        keep = np.ones(len(df), dtype=bool)
        for column, value in self.where.items():
            keep &= same_value(df[column], value)
        out = df.copy(deep=False)
        for column in self.target_columns:
            out[column] = df[column].where(keep)
        return out

    def fit_target(self, df: pd.DataFrame) -> TargetFit:
        """What the training rows `df` settle about this task's targets (its kind's
        `fit_target`). A task with `where` is fitted on its target column over all the rows,
        not only its own: tasks made from one column then share one encoding (one scale, one
        class list), so their heads predict in the same units, which is what a shared head
        and mean regularisation rely on."""
        return self.kind_spec.fit_target(self, df)

    def unseen_labels(self, df: pd.DataFrame, fit: TargetFit) -> list[Any]:
        """This task's labels in `df` (its own rows) that `fit` cannot encode, one per row."""
        return self.kind_spec.unseen_labels(self, self.labelled_frame(df), fit)

    def encode_target(self, df: pd.DataFrame, fit: TargetFit) -> Tensor:
        """This task's targets of the rows of `df`, encoded by its kind (missing on the rows
        `where` leaves out)."""
        return self.kind_spec.encode_target(self, self.labelled_frame(df), fit)

    @property
    def out_features(self) -> int:
        """Size of the head's output."""
        return self.kind_spec.out_features(self)

    def build_head(self, features: int | Features) -> nn.Module:
        """A fresh head for this task on top of a representation of `features` (a vector size,
        or an encoder's `Features`: its kind builds a head that fits, see
        `TaskKind.build_head`)."""
        if isinstance(features, int):
            if self.kind_spec.dense:
                raise ValueError(
                    f"task {self.name!r} ({self.kind}) predicts per position of an image, but "
                    f"this model's trunk gives a vector of {features} features: use an encoder "
                    "that keeps the spatial layout (hard_sharing or mtan with encoder cnn, "
                    "resnet_fpn, vit or timm) on image data"
                )
            if self.kind_spec.sequential:
                raise ValueError(
                    f"task {self.name!r} ({self.kind}) predicts per position of a sequence, "
                    f"but this model's trunk gives a vector of {features} features: use a "
                    "sequence encoder (hard_sharing with encoder transformer on text data, or "
                    "audio on audio data)"
                )
            from polytask.models import encoders

            features = encoders.Features(features)  # the kind's head on a vector
        return self.kind_spec.build_head(self, features)

    def shape_output(self, raw: Tensor) -> Tensor:
        """Drop the trailing unit dimension of single-output heads."""
        return self.kind_spec.shape_output(raw)

    def mask(self, target: Tensor) -> Tensor:
        """Which targets are labelled (rows, or elements for multilabel)."""
        return self.kind_spec.label_mask(target)

    def element_loss(self) -> ElementLoss:
        """The per-element loss: the custom one, or the named (default: the kind's) with its
        parameters bound."""
        if self.loss is not None and not isinstance(self.loss, str):
            return self.loss
        kind = self.kind_spec
        return kind.make_loss(
            self.loss or kind.default_loss, self.loss_params or {}, self.label_smoothing
        )

    def compute_loss(self, output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean loss over labelled elements; 0 (still in the graph) when none is labelled.
        `mask` is `self.mask(target)` when the caller already has it."""
        kind = self.kind_spec
        kind.check_output(self, output, target)
        mask = self.mask(target) if mask is None else mask
        return kind.loss(self.element_loss(), output, target, mask)

    def predict(self, output: Tensor) -> Tensor:
        """Predictions for metrics: probabilities for classification, values for regression."""
        return self.kind_spec.predict(output)

    def metric_objects(self) -> tuple[Metric, ...]:
        """The task's metrics: its own choice, or all of its kind's."""
        known = self.kind_spec.metrics
        chosen = self.metrics if self.metrics is not None else tuple(known)
        return tuple(known[m] if isinstance(m, str) else m for m in chosen)

    @property
    def primary(self) -> Metric:
        """The metric that Δm and early stopping on this task use."""
        objs = self.metric_objects()
        name = self.primary_metric or self.kind_spec.default_primary(self)
        return next((m for m in objs if m.name == name), objs[0])

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
            "auxiliary": self.auxiliary,
            "kind_params": self.kind_params,
            "where": self.where,
        }

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """All metrics of this task on labelled rows (element-wise masking for multilabel)."""
        return self.kind_spec.evaluate(self.metric_objects(), predictions, targets)


def same_value(column: pd.Series, value: Any) -> np.ndarray:
    """Which cells of `column` hold `value`: numerically for numbers (5 matches 5.0), else
    as text (a YAML 5 matches a column of "5")."""
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (pd.api.types.is_integer_dtype(column.dtype))
    ):  # exact: ids beyond 2**53 are not floats
        return np.asarray(column.to_numpy() == value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
        if not np.isnan(numbers).all():
            return np.asarray(numbers == float(value))
    return np.asarray(column.astype(str).to_numpy() == str(value))


def reported_tasks(tasks: Sequence[Task]) -> list[Task]:
    """The tasks that are evaluated, compared and predicted: all but the auxiliary ones."""
    return [t for t in tasks if not t.auxiliary]
