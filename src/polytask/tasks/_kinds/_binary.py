"""Binary tasks: one logit per row, predictions P(class 1) = σ(logit)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from torch import Tensor

from polytask.tasks._columns import (
    DataError,
    class_indices,
    class_key,
    class_values,
    unseen_classes,
    warn_spellings,
)
from polytask.tasks._kinds._base import IGNORE_INDEX, TargetFit, TaskKind
from polytask.tasks._losses import standard_losses
from polytask.tasks._metrics import Metric, Undefined

if TYPE_CHECKING:
    from polytask.tasks._task import Task


def hard_labels(y: np.ndarray) -> np.ndarray:
    """0/1 labels of binary targets; a target given as a probability is scored as the label it
    rounds to (y ≥ 0.5), as a prediction is (sklearn refuses such targets, and truncation made
    0.9 a 0)."""
    return (np.asarray(y) >= 0.5).astype(int)


def binary_auc(y: np.ndarray, p: np.ndarray) -> float:
    y = hard_labels(y)
    if len(np.unique(y)) < 2:
        return Undefined("one class only")  # AUC needs both classes
    return float(roc_auc_score(y, p))


def binary_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(accuracy_score(hard_labels(y), (p >= 0.5).astype(int)))


def binary_f1(y: np.ndarray, p: np.ndarray) -> float:
    y = hard_labels(y)
    if not y.any():  # recall has no positives to find: 0 would read as a miss
        return Undefined("no positive rows")
    return float(f1_score(y, (p >= 0.5).astype(int), zero_division=0.0))


class BinaryKind(TaskKind):
    """Two classes: labels 0/1 (or any two values, ordered as numbers or else as text) become
    0.0 / 1.0 targets (missing: NaN or -100); `predict` writes the label (column `<task>`) and
    the probability of the second, positive class (`<task>_prob`)."""

    served_meaning = "probability of the positive class (the second of `classes`), shape (batch,)"
    classic = "class"

    def classic_output(self, task: Task, values: np.ndarray) -> Tensor:
        """The logit of the positive class."""
        p = np.clip(values[:, 1], 1e-7, 1 - 1e-7)
        return torch.as_tensor(np.log(p / (1 - p)), dtype=torch.float32)

    losses = standard_losses("bce", "gce", "sce")
    loss_options: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "gce": {"binary": True},
        "sce": {"binary": True},
    }
    metrics: ClassVar[Mapping[str, Metric]] = {
        "auc": Metric("auc", binary_auc, True),
        "accuracy": Metric("accuracy", binary_accuracy, True),
        "f1": Metric("f1", binary_f1, True),
    }

    def predict(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output)

    def element_mask(self, target: Tensor) -> Tensor:
        """Float targets may also mark a missing label with `IGNORE_INDEX`."""
        return super().element_mask(target) & (target != IGNORE_INDEX)

    def check_output(self, task: Task, output: Tensor, target: Tensor) -> None:
        """Also refuse targets shaped unlike the outputs ((rows, 1) against (rows,)) and, where
        checking costs no device sync (CPU), labels outside [0, 1] (1 and 2, or −1 and 1):
        binary cross-entropy takes them without a word and trains on nonsense."""
        super().check_output(task, output, target)
        if output.shape != target.shape:
            fix = "y.reshape(-1)" if target.numel() == output.numel() else "one label per row"
            raise ValueError(
                f"task {task.name!r} (binary): targets of shape {tuple(target.shape)} for "
                f"outputs of shape {tuple(output.shape)}; give the targets the outputs' shape "
                f"({fix})"
            )
        custom = task.loss is not None and not isinstance(task.loss, str)
        if target.device.type == "cpu" and not custom:
            labels = target[self.element_mask(target)]
            bad = labels[(labels < 0) | (labels > 1)]
            if bad.numel():
                shown = sorted({int(v) if float(v).is_integer() else float(v) for v in bad})[:5]
                raise ValueError(
                    f"task {task.name!r} (binary): labels {shown} outside 0 to 1; give 0 and 1 "
                    "(or probabilities between them), NaN or -100 where missing (a table's two "
                    "labels, whatever they are, are turned into 0 and 1 by its preprocessor)"
                )

    def fit_target(self, task: Task, df: pd.DataFrame) -> TargetFit:
        found = class_values(df[task.target_columns[0]], IGNORE_INDEX)
        if {class_key(v) for v in found} <= {"0", "1"}:
            return TargetFit(classes=[0, 1])
        if len(found) < 2:
            raise DataError(
                f"task {task.name!r} is binary but its training rows hold one class only "
                f"({found}): both classes must occur in them"
            )
        if len(found) > 2:
            raise DataError(
                f"task {task.name!r} is binary but its target has {len(found)} classes "
                f"({found[:10]}); {_other_kind(found)}"
            )
        warn_spellings(task.name, found)
        return TargetFit(classes=found)

    def unseen_labels(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> list[Any]:
        return unseen_classes(df[task.target_columns[0]], fit.class_list(task), IGNORE_INDEX)

    def encode_target(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> Tensor:
        idx = class_indices(df[task.target_columns[0]], fit.class_list(task), IGNORE_INDEX)
        y = torch.tensor(idx, dtype=torch.float32)
        return torch.where(y == IGNORE_INDEX, torch.nan, y)

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """One class in every labelled row: AUC is undefined."""
        y = target[self.label_mask(target)]
        if not len(y) or bool((y != y[0]).any()):
            return super().degenerate(task, target, fit)
        label = fit.class_list(task)[int(y[0])]
        return f"every labelled row is class {label!r}, so its AUC is undefined"

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        classes = fit.class_list(task)
        return {
            task.name: [classes[int(i)] for i in (prediction >= 0.5).astype(int)],
            f"{task.name}_prob": prediction,
        }


def _other_kind(found: list[object]) -> str:
    """The kind to suggest for a target that is not two classes: regression for numbers on a
    scale (fractions, or more distinct values than categories usually have), else multiclass."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in found)
    fractions = numbers and any(not float(v).is_integer() for v in found)  # type: ignore[arg-type]
    if numbers and (fractions or len(found) > 20):
        return "use kind: regression (its values are numbers on a scale), or kind: multiclass"
    return "use kind: multiclass"
