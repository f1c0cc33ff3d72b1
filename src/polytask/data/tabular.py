"""Tabular data: feature and target encoding fitted on the training rows, saved with the model.

Numeric features are standardised (missing values become the training mean); categorical
features are one-hot encoded over the training categories (unseen or missing: all zeros).
Targets: binary and multiclass labels map to class indices (missing: -100, or NaN for binary),
multilabel columns stay 0/1 with NaN, regression targets are standardised and NaN when missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from polytask.data.tensors import TaskData
from polytask.tasks.kinds import IGNORE_INDEX
from polytask.tasks.task import Task


class DataError(ValueError):
    """The data do not fit the declared features or tasks."""


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV (or .csv.gz) file, with a clear error when it is missing, unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise DataError(f"cannot read {path} as CSV: {err}") from None
    if df.empty:
        raise DataError(f"data file {path} has no rows")
    return df


def _json_scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _class_key(v: Any) -> str:
    """One spelling per label, so that 1, 1.0 and "1" name the same class."""
    v = _json_scalar(v)
    if isinstance(v, int | float) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _check_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        shown = ", ".join(map(str, df.columns[:40]))
        raise DataError(f"{what} {missing} not found in the data; its columns are: {shown}")


@dataclass(frozen=True)
class TabularPreprocessor:
    """Fitted encoding of features and targets; `to_dict` / `from_dict` round-trip through JSON."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    categories: tuple[tuple[Any, ...], ...]
    classes: dict[str, list[Any]]
    target_scale: dict[str, tuple[float, float]]

    @property
    def in_dim(self) -> int:
        return len(self.numeric) + sum(len(c) for c in self.categories)

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        for col, cats in zip(self.categorical, self.categories, strict=True):
            names += [f"{col}={c}" for c in cats]
        return names

    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        numeric: Sequence[str],
        categorical: Sequence[str],
        tasks: Sequence[Task],
    ) -> TabularPreprocessor:
        """Learn the encoding from training rows only."""
        numeric, categorical = tuple(numeric), tuple(categorical)
        if not numeric and not categorical:
            raise DataError("no feature columns given: name at least one numeric or categorical")
        _check_columns(df, numeric, "numeric feature columns")
        _check_columns(df, categorical, "categorical feature columns")
        targets = {c for t in tasks for c in t.target_columns}
        overlap = sorted(targets & (set(numeric) | set(categorical)))
        if overlap:
            raise DataError(f"columns {overlap} are both a feature and a task target")
        means, stds = [], []
        for col in numeric:
            values = pd.to_numeric(df[col], errors="coerce")
            bad = df[col].notna() & values.isna()
            if bad.any():
                example = df.loc[bad, col].iloc[0]
                raise DataError(
                    f"numeric feature {col!r} holds non-numeric values (e.g. {example!r}); "
                    "list it under categorical features instead"
                )
            if values.isna().all():
                raise DataError(
                    f"numeric feature {col!r} has no numeric value in the training rows"
                )
            means.append(float(values.mean()))
            std = float(values.std(ddof=0))
            stds.append(std if std > 0 and np.isfinite(std) else 1.0)
        categories = tuple(
            tuple(sorted(map(_json_scalar, df[c].dropna().unique()), key=str)) for c in categorical
        )
        classes: dict[str, list[Any]] = {}
        scale: dict[str, tuple[float, float]] = {}
        for task in tasks:
            _check_columns(df, task.target_columns, f"task {task.name!r}: target columns")
            column: pd.Series = df[task.target_columns[0]]
            if task.kind in ("binary", "multiclass"):
                classes[task.name] = _fit_classes(task, column)
            elif task.kind == "regression":
                y = pd.Series(pd.to_numeric(column, errors="coerce"))
                if y.notna().sum() == 0:
                    raise DataError(
                        f"task {task.name!r}: target {task.target_columns[0]!r} has no numeric "
                        "label in the training rows"
                    )
                std = float(y.std(ddof=0))
                scale[task.name] = (float(y.mean()), std if std > 0 else 1.0)
        return cls(numeric, categorical, tuple(means), tuple(stds), categories, classes, scale)

    def resolve_tasks(self, tasks: Sequence[Task]) -> list[Task]:
        """Fill in `num_classes` of multiclass tasks from the classes seen in training."""
        return [
            dataclasses.replace(t, num_classes=len(self.classes[t.name]))
            if t.kind == "multiclass" and t.num_classes is None
            else t
            for t in tasks
        ]

    def transform_features(self, df: pd.DataFrame) -> torch.Tensor:
        _check_columns(df, self.numeric + self.categorical, "feature columns")
        blocks = []
        if self.numeric:
            num = df[list(self.numeric)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
            num = (num - np.array(self.means)) / np.array(self.stds)
            blocks.append(np.nan_to_num(num, nan=0.0, posinf=0.0, neginf=0.0))
        for col, cats in zip(self.categorical, self.categories, strict=True):
            lookup = {str(c): i for i, c in enumerate(cats)}
            onehot = np.zeros((len(df), len(cats)))
            for row, value in enumerate(df[col].to_numpy()):
                j = lookup.get(str(_json_scalar(value))) if pd.notna(value) else None
                if j is not None:
                    onehot[row, j] = 1.0
            blocks.append(onehot)
        return torch.tensor(np.concatenate(blocks, axis=1), dtype=torch.float32)

    def transform_target(self, task: Task, df: pd.DataFrame) -> torch.Tensor:
        _check_columns(df, task.target_columns, f"task {task.name!r}: target columns")
        if task.kind in ("binary", "multiclass"):
            lookup = {_class_key(c): i for i, c in enumerate(self.classes[task.name])}
            raw = df[task.target_columns[0]].to_numpy()
            idx = [
                lookup.get(_class_key(v), IGNORE_INDEX) if pd.notna(v) else IGNORE_INDEX
                for v in raw
            ]
            if task.kind == "binary":
                y = torch.tensor(idx, dtype=torch.float32)
                return torch.where(y == IGNORE_INDEX, torch.nan, y)
            return torch.tensor(idx, dtype=torch.long)
        cols = list(task.target_columns)
        values = df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        if task.kind == "multilabel":
            values = np.where(values == IGNORE_INDEX, np.nan, values)
            bad = ~np.isnan(values) & ~np.isin(values, (0.0, 1.0))
            if bad.any():
                raise DataError(f"task {task.name!r}: multilabel targets must be 0, 1 or missing")
            return torch.tensor(values, dtype=torch.float32)
        mean, std = self.target_scale[task.name]
        return torch.tensor((values[:, 0] - mean) / std, dtype=torch.float32)

    def transform(self, df: pd.DataFrame, tasks: Sequence[Task]) -> TaskData:
        """Encode features and every task's targets of `df`."""
        targets = {t.name: self.transform_target(t, df) for t in tasks}
        scale = {t.name: self.target_scale[t.name] for t in tasks if t.name in self.target_scale}
        return TaskData(self.transform_features(df), targets, scale)

    def decode_labels(self, task: Task, index: np.ndarray) -> list[Any]:
        """Class indices back to the original labels."""
        classes = self.classes[task.name]
        return [classes[int(i)] for i in index]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TabularPreprocessor:
        return cls(
            numeric=tuple(d["numeric"]),
            categorical=tuple(d["categorical"]),
            means=tuple(d["means"]),
            stds=tuple(d["stds"]),
            categories=tuple(tuple(c) for c in d["categories"]),
            classes={k: list(v) for k, v in d["classes"].items()},
            target_scale={k: (float(v[0]), float(v[1])) for k, v in d["target_scale"].items()},
        )


def _fit_classes(task: Task, col: pd.Series) -> list[Any]:
    values = col.dropna()
    values = values[values.map(_class_key) != str(IGNORE_INDEX)]
    found = sorted({_class_key(v): _json_scalar(v) for v in values.unique()}.values(), key=str)
    if task.kind == "binary":
        if {_class_key(v) for v in found} <= {"0", "1"}:
            return [0, 1]
        if len(found) != 2:
            raise DataError(
                f"task {task.name!r} is binary but its target has {len(found)} classes "
                f"({found[:10]}); use kind: multiclass"
            )
        return found
    if task.num_classes is not None:
        ints = all(isinstance(v, int | float) and float(v).is_integer() for v in found)
        if ints and all(0 <= v < task.num_classes for v in found):
            return list(range(task.num_classes))
        if len(found) > task.num_classes:
            raise DataError(
                f"task {task.name!r}: num_classes is {task.num_classes} but the training rows "
                f"hold {len(found)} classes"
            )
    if len(found) < 2:
        raise DataError(
            f"task {task.name!r}: multiclass target needs at least 2 classes in the training rows"
        )
    return found
