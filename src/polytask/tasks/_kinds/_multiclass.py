"""Multiclass tasks: one logit per class, predictions softmax probabilities."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import Tensor

from polytask.tasks._columns import (
    DataError,
    DataWarning,
    class_indices,
    class_values,
    unseen_classes,
    warn_spellings,
)
from polytask.tasks._kinds._base import IGNORE_INDEX, Scale, TargetFit, TaskKind
from polytask.tasks._losses import standard_losses
from polytask.tasks._metrics import Metric

if TYPE_CHECKING:
    from polytask.tasks._task import Task


def multiclass_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(accuracy_score(y, p.argmax(axis=1)))


def multiclass_macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    labels = np.arange(p.shape[1])
    pred = p.argmax(axis=1)
    present = np.union1d(np.unique(y), np.unique(pred))
    return float(
        f1_score(
            y, pred, labels=labels[np.isin(labels, present)], average="macro", zero_division=0.0
        )
    )


class MulticlassKind(TaskKind):
    """One of `num_classes` classes (>= 2; read from the training rows when unset): labels become
    class indices 0..num_classes-1 (missing or unseen: -100); `predict` writes the label (column
    `<task>`) and one probability column per class (`<task>_prob_<class>`)."""

    served_meaning = "probability of each class in `classes` order, shape (batch, classes)"
    classic = "class"

    def classic_output(self, task: Task, values: np.ndarray) -> Tensor:
        """Log probabilities (softmax gives them back)."""
        return torch.as_tensor(np.log(np.clip(values, 1e-9, 1.0)), dtype=torch.float32)

    losses = standard_losses("cross_entropy", "gce", "sce")
    loss_options: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "gce": {"binary": False},
        "sce": {"binary": False},
    }
    metrics: ClassVar[Mapping[str, Metric]] = {
        "macro_f1": Metric("macro_f1", multiclass_macro_f1, True),
        "accuracy": Metric("accuracy", multiclass_accuracy, True),
    }
    squeeze = False

    def validate(self, task: Task) -> None:
        if task.num_classes is not None and task.num_classes < 2:
            raise ValueError(
                f"task {task.name!r}: a multiclass task needs num_classes >= 2 "
                f"(got {task.num_classes})"
            )

    def out_features(self, task: Task) -> int:
        if task.num_classes is None:
            raise ValueError(
                f"task {task.name!r}: num_classes is unknown; set it, or fit a "
                "TabularPreprocessor, which reads the classes from the training data"
            )
        return task.num_classes

    def predict(self, output: Tensor) -> Tensor:
        return torch.softmax(output, dim=-1)

    def element_mask(self, target: Tensor) -> Tensor:
        """Float targets may also mark a missing label with `IGNORE_INDEX` (as integers do)."""
        return super().element_mask(target) & (target != IGNORE_INDEX)

    def check_output(self, task: Task, output: Tensor, target: Tensor) -> None:
        """Also refuse targets that are not one class index per row (one-hot rows, a (rows, 1)
        column) and, where checking costs no device sync (CPU), indices outside the classes:
        the loss's own errors name neither the task nor the fix."""
        super().check_output(task, output, target)
        custom = task.loss is not None and not isinstance(task.loss, str)
        if custom and target.is_floating_point() and target.shape == output.shape:
            return  # class probabilities (distillation, mixup) for the user's own loss
        if target.shape != output.shape[:-1]:
            fix = (
                "y.argmax(1) of one-hot rows; class probabilities need a loss of your own"
                if target.shape == output.shape
                else "y.reshape(-1)"
                if target.numel() == output.shape[0]
                else f"shape {tuple(output.shape[:-1])}"
            )
            raise ValueError(
                f"task {task.name!r} (multiclass): targets of shape {tuple(target.shape)} for "
                f"outputs of shape {tuple(output.shape)}; give one class index per row "
                f"({fix}), -100 where missing"
            )
        if target.device.type == "cpu":
            labels = target[self.element_mask(target)]
            outside = (labels < 0) | (labels >= output.shape[-1])
            if labels.is_floating_point():  # integers are whole by type
                outside |= labels != labels.round()
            bad = labels[outside]
            if bad.numel():
                shown = [int(v) if float(v).is_integer() else v for v in sorted(set(bad.tolist()))][
                    :5
                ]
                raise ValueError(
                    f"task {task.name!r} (multiclass): class indices {shown} outside 0 to "
                    f"{output.shape[-1] - 1} (its {output.shape[-1]} classes); mark a missing "
                    "label with -100 (or NaN in float targets), or set num_classes"
                )

    def fit_target(self, task: Task, df: pd.DataFrame) -> TargetFit:
        found = class_values(df[task.target_columns[0]], IGNORE_INDEX)
        if task.num_classes is not None:
            ints = all(isinstance(v, int | float) and float(v).is_integer() for v in found)
            if ints and all(0 <= v < task.num_classes for v in found):
                return TargetFit(classes=list(range(task.num_classes)))
            listed = ", ".join(map(repr, found[:10])) + (" ..." if len(found) > 10 else "")
            if len(found) > task.num_classes:
                raise DataError(
                    f"task {task.name!r}: num_classes is {task.num_classes} but the training "
                    f"rows hold {len(found)} classes ({listed}): remove num_classes (it is read "
                    "from the data)"
                )
            if len(found) < task.num_classes:  # an output no label names: never learnt
                raise DataError(
                    f"task {task.name!r}: num_classes is {task.num_classes} but the training "
                    f"rows hold {len(found)} classes ({listed}), and classes given by name are "
                    "read from the training rows, so the other outputs would name no class: "
                    "remove num_classes, or give the labels as class indices 0 to "
                    f"{task.num_classes - 1} to keep classes the training rows lack"
                )
        if len(found) < 2:
            raise DataError(
                f"task {task.name!r}: multiclass target needs at least 2 classes in the "
                "training rows"
            )
        warn_spellings(task.name, found)
        numbers = [v for v in found if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) == len(found) and any(not float(v).is_integer() for v in numbers):
            scale = "kind_params output: value" if task.kind == "sequence" else "kind: regression"
            shown = sorted(numbers)[:5]
            warnings.warn(
                f"task {task.name!r}: {len(found)} classes from a column of numbers with "
                f"fractions ({shown}{' ...' if len(found) > 5 else ''}): each value is a class "
                f"of its own; for a number on a scale use {scale}",
                DataWarning,
                stacklevel=2,
            )
        return TargetFit(classes=found)

    def resolve(self, task: Task, fit: TargetFit) -> Task:
        """`num_classes` from the classes seen in training, when the task leaves it unset."""
        if task.num_classes is not None:
            return task
        return dataclasses.replace(task, num_classes=len(fit.class_list(task)))

    def unseen_labels(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> list[Any]:
        return unseen_classes(df[task.target_columns[0]], fit.class_list(task), IGNORE_INDEX)

    def encode_target(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> Tensor:
        idx = class_indices(df[task.target_columns[0]], fit.class_list(task), IGNORE_INDEX)
        return torch.tensor(idx, dtype=torch.long)

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """One class in every labelled row."""
        y = target[self.label_mask(target)]
        if not len(y) or bool((y != y[0]).any()):
            return super().degenerate(task, target, fit)
        classes = fit.class_list(task)
        return f"every labelled row is class {classes[int(y[0])]!r} (one of {len(classes)})"

    def truth(self, target: Tensor, scale: Scale | None) -> np.ndarray:
        """Class indices as they are (missing: -100)."""
        return target.numpy()

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        classes = fit.class_list(task)
        out: dict[str, Any] = {task.name: [classes[int(i)] for i in prediction.argmax(axis=1)]}
        for j, c in enumerate(classes):
            out[f"{task.name}_prob_{c}"] = prediction[:, j]
        return out
