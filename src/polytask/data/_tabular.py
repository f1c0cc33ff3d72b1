"""Tabular data: feature and target encoding fitted on the training rows, saved with the model.

Numeric features are standardised (missing values become the training mean); categorical
features are one-hot encoded over the training categories (unseen or missing: all zeros).
Targets: binary and multiclass labels map to class indices (missing: -100, or NaN for binary),
multilabel columns stay 0/1 with NaN, regression targets are standardised and NaN when missing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from polytask.data._tensors import TaskData
from polytask.tasks._kinds import IGNORE_INDEX
from polytask.tasks._task import Task

log = logging.getLogger("polytask")


class DataError(ValueError):
    """The data do not fit the declared features or tasks."""


_MAX_STANDARDISED = 1e6
"""Features further than this many training standard deviations are refused, not passed on:
the network's outputs for them would overflow or be meaningless."""


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


def _rows(mask: np.ndarray | pd.Series, index: pd.Index) -> str:
    """The first few row labels where `mask` holds, for error messages."""
    rows = list(index[np.asarray(mask)])
    return ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def _numeric_values(df: pd.DataFrame, col: str, what: str, hint: str = "") -> np.ndarray:
    """Column `col` as float64 (missing: NaN); non-numeric cells (`hint` says what to do) or
    infinite ones are an error."""
    values = pd.to_numeric(df[col], errors="coerce")
    bad = df[col].notna() & values.isna()
    if bad.any():
        example = df.loc[bad, col].iloc[0]
        raise DataError(
            f"{what} holds non-numeric values (e.g. {example!r}; rows {_rows(bad, df.index)})"
            + (f"; {hint}" if hint else "")
        )
    out = values.to_numpy(dtype=float)
    infinite = np.isinf(out)
    if infinite.any():
        raise DataError(
            f"{what} holds infinite values (rows {_rows(infinite, df.index)}); replace them "
            "with finite numbers or leave the cells empty (missing)"
        )
    return out


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the non-missing values without overflow: computed on
    values divided by the largest magnitude, so any finite float64 column is standardised."""
    present = values[~np.isnan(values)]
    scale = float(np.abs(present).max()) or 1.0
    scaled = present / scale
    mean, std = float(scaled.mean()) * scale, float(scaled.std()) * scale
    return mean, std if std > 0 else 1.0


def _check_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        listed = str(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        shown = ", ".join(map(str, df.columns[:40]))
        raise DataError(f"{what} {listed} not found in the data; its columns are: {shown}")


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
            values = _numeric_values(
                df, col, f"numeric feature {col!r}", "list it under categorical features instead"
            )
            if np.isnan(values).all():
                raise DataError(
                    f"numeric feature {col!r} has no numeric value in the training rows"
                )
            mean, std = _mean_std(values)
            means.append(mean)
            stds.append(std)
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
                what = f"task {task.name!r}: target {task.target_columns[0]!r}"
                y = _numeric_values(df, task.target_columns[0], what)
                if np.isnan(y).all():
                    raise DataError(f"{what} has no numeric label in the training rows")
                scale[task.name] = _mean_std(y)
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
        for col, mean, std in zip(self.numeric, self.means, self.stds, strict=True):
            what = f"numeric feature {col!r}"
            z = (_numeric_values(df, col, what, "correct them or leave them empty") - mean) / std
            too_far = np.abs(z) > _MAX_STANDARDISED
            if too_far.any():
                raise DataError(
                    f"numeric feature {col!r} is more than {_MAX_STANDARDISED:.0e} standard "
                    f"deviations from its training mean in rows {_rows(too_far, df.index)} "
                    f"(training mean {mean:.4g}, std {std:.4g}): check its units"
                )
            blocks.append(np.nan_to_num(z, nan=0.0)[:, None])  # missing: the training mean
        for col, cats in zip(self.categorical, self.categories, strict=True):
            lookup = {str(c): i for i, c in enumerate(cats)}
            onehot = np.zeros((len(df), len(cats)))
            unseen: dict[str, int] = {}
            for row, value in enumerate(df[col].to_numpy()):
                if pd.isna(value):
                    continue
                j = lookup.get(str(_json_scalar(value)))
                if j is None:
                    unseen[str(value)] = unseen.get(str(value), 0) + 1
                else:
                    onehot[row, j] = 1.0
            if unseen:
                log.warning(
                    "categorical feature %r: %d rows hold categories not seen in training (%s); "
                    "they are encoded like a missing value",
                    col,
                    sum(unseen.values()),
                    ", ".join(map(repr, list(unseen)[:5])),
                )
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
        what = f"task {task.name!r}: target"
        values = np.stack([_numeric_values(df, c, f"{what} {c!r}") for c in cols], axis=1)
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
