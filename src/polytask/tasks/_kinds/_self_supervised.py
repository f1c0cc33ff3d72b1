"""Self-supervised task kinds: the targets come from the inputs, so every row (labelled for no
other task or not) trains them. The base class holds what they share; each built-in one
(`reconstruction`, `denoising`, `contrastive`) is a file of its own.

The protocol is one method, `derive(task, x, generator)`: from a batch's input rows it returns
the inputs the task is trained on (corrupted rows, augmented views) and their targets. The step
appends those inputs to the batch as rows of their own, so the other tasks see the clean rows
and every gradient mode reads one forward pass; randomness comes from `generator`, seeded from
the training seed and the step, so a resumed run draws the same corruptions.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polytask.tasks._kinds._base import (
    EOS_ID,
    Derived,
    TargetFit,
    TaskKind,
    element_loss_mean,
)
from polytask.tasks._losses import ElementLoss, standard_losses
from polytask.tasks._metrics import Metric, Undefined

if TYPE_CHECKING:
    from polytask.tasks._task import Task


def every_row(rows: int) -> Tensor:
    """The targets a data set holds for a self-supervised task: a 0 per row, i.e. every row
    labelled (its real targets are derived from the inputs at each step)."""
    return torch.zeros(rows)


def uniform(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """U(0, 1) draws of `shape`, drawn on the CPU (so a run draws the same on every device) and
    moved to `like`'s device and dtype."""
    return torch.rand(tuple(shape), generator=generator).to(like.device, like.dtype)


def normal(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """N(0, 1) draws of `shape`, drawn on the CPU and moved to `like`'s device and dtype."""
    return torch.randn(tuple(shape), generator=generator).to(like.device, like.dtype)


def masked(x: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
    """A random `rate` of the values of `x` that hold something, True where drawn: padding
    (NaN samples after a clip's end, token id 0 after a text's) is never drawn, so a corrupted
    row keeps its length; nor are a text's first token and its [BOS] / [EOS] marks, which
    `pool: first` and the decoder read."""
    drawn = torch.rand(tuple(x.shape), generator=generator).to(x.device) < rate
    if x.is_floating_point():
        return drawn & ~torch.isnan(x)
    words = x > EOS_ID  # not PAD_ID, BOS_ID, EOS_ID
    words[..., 0] = False
    return drawn & words


def require_values(task: Task, x: Tensor) -> None:
    """Refuse inputs of token ids for a task that corrupts and predicts input values."""
    if not x.is_floating_point():
        raise ValueError(
            f"task {task.name!r}: a {task.kind} task adds noise to and predicts input values, "
            f"but the inputs are token ids ({x.dtype}), which have no such values: on text "
            "use a 'contrastive' task (its views drop tokens), or leave this task out"
        )


class SelfSupervisedKind(TaskKind):
    """A kind whose targets are derived from the inputs (`derive`, the one method to write):
    no target column, every row labelled, always auxiliary (trained, never reported).

    A new one is a subclass with `losses`, `metrics` and `derive` (plus `out_features` when its
    head's output is not one value), registered like any kind: `KINDS["name"] = MyKind()`.
    """

    derives_targets = True
    served_meaning = "nothing: an auxiliary task is trained, never served"

    @abstractmethod
    def derive(self, task: Task, x: Tensor, generator: torch.Generator | None) -> Derived:
        """The inputs and targets the task trains on, from a batch's input rows `x`."""

    def validate(self, task: Task) -> None:
        given = [f for f in ("target", "num_classes") if getattr(task, f) is not None]
        if given:
            raise ValueError(
                f"task {task.name!r}: a {task.kind} task derives its targets from the inputs, "
                f"so it takes no {' or '.join(given)}: remove {'them' if len(given) > 1 else 'it'}"
            )
        for name, value in (task.kind_params or {}).items():
            if not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
                raise ValueError(
                    f"task {task.name!r}: kind_params {name} must be a finite number >= 0, "
                    f"got {value}"
                )

    def target_columns(self, task: Task) -> tuple[str, ...]:
        return ()

    def predict(self, output: Tensor) -> Tensor:
        return output

    def encode_target(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> Tensor:
        return every_row(len(df))

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        return None

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        return {}


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    """Root mean squared error over the elements that count (not NaN in `y`)."""
    keep = ~np.isnan(y)
    if not keep.any():
        return Undefined("no masked elements")
    return float(np.sqrt(np.mean((y[keep] - p.reshape(y.shape)[keep]) ** 2)))


class InputReconstructionKind(SelfSupervisedKind):
    """Kinds whose head predicts the (clean) input values of each row, flattened: the head has
    `features` outputs (the values in one input row; `TabularPreprocessor.resolve_tasks` fills
    it in), and the loss (mse by default) counts the target elements that are not NaN."""

    losses = standard_losses("mse", "l1", "huber")
    metrics: ClassVar[Mapping[str, Metric]] = {"rmse": Metric("rmse", _rmse, False)}
    squeeze = False

    def out_features(self, task: Task) -> int:
        features = int(self.param(task, "features"))
        if features < 1:
            raise ValueError(
                f"task {task.name!r}: the number of input values it reconstructs is unknown: "
                "fit a TabularPreprocessor and take the task from its resolve_tasks, or set "
                "kind_params={'features': D} (D: the values in one input row)"
            )
        return features

    def resolve(self, task: Task, fit: TargetFit) -> Task:
        given = int(self.param(task, "features"))
        if fit.inputs is None or given == fit.inputs:
            return task
        if given:
            raise ValueError(
                f"task {task.name!r}: kind_params features is {given}, but an encoded input row "
                f"holds {fit.inputs} values: remove it (it is filled in from the data)"
            )
        params = {**(task.kind_params or {}), "features": fit.inputs}
        return dataclasses.replace(task, kind_params=params)

    def label_mask(self, target: Tensor) -> Tensor:
        """Element by element: only the target values that are not NaN count."""
        return self.element_mask(target)

    def loss(self, fn: ElementLoss, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Mean of `fn` over the elements that count."""
        return element_loss_mean(fn, output, target, mask)

    def evaluate(
        self, metrics: Sequence[Metric], predictions: np.ndarray, targets: np.ndarray
    ) -> dict[str, float]:
        return {m.name: m(targets, predictions) for m in metrics}
