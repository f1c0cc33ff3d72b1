"""Tabular data: feature and target encoding fitted on the training rows, saved with the model.

Numeric features are standardised (missing values become the training mean), those listed as
`log` after taking their logarithm (positive, right-skewed measures); categorical
features are one-hot encoded over the training categories (unseen or missing: all zeros).
Targets are fitted and encoded by each task's kind (`TaskKind.fit_target` / `encode_target`):
e.g. class labels map to class indices, regression targets are standardised.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pandas.api.types import is_numeric_dtype

from polytask._files import require_file
from polytask.data._tensors import TaskData
from polytask.tasks._columns import (
    DataError,
    DataWarning,
    check_columns,
    class_key,
    json_scalar,
    mean_std,
    numeric_values,
    row_labels,
)
from polytask.tasks._kinds import TargetFit
from polytask.tasks._task import Task

log = logging.getLogger("polytask")

_MAX_STANDARDISED = 1e6
"""Features further than this many training standard deviations are refused, not passed on:
the network's outputs for them would overflow or be meaningless."""


def read_csv(path: str | Path, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV (or .csv.gz) file, with a clear error when it is missing, unreadable or empty;
    `text_columns` as written (pandas reads "07" as 7 and "3.10" as 3.1 in a column of
    numbers: texts and transcripts must stay as they are)."""
    path = require_file(path, "data file", DataError)
    try:
        if text_columns:
            header = pd.read_csv(path, nrows=0).columns
            kept = {c: str for c in text_columns if c in header}
            df = pd.read_csv(path, dtype=kept or None)
        else:
            df = pd.read_csv(path)
    except UnicodeDecodeError as err:
        raise DataError(
            f"cannot read {path} as CSV: {err}; polytask reads comma-separated text in UTF-8 "
            "(.csv, .csv.gz): save it so (a Parquet or Excel file too)"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
        raise DataError(f"cannot read {path} as CSV: {err}") from None
    if df.empty:
        raise DataError(f"data file {path} has no rows")
    only = str(df.columns[0]) if len(df.columns) == 1 else ""
    for mark, name in ((";", "semicolons"), ("\t", "tabs")):
        if mark in only:
            raise DataError(
                f"data file {path} reads as one column, {only[:60]!r}: its fields look "
                f"separated by {name}, and polytask reads comma-separated files: save it with "
                "commas"
            )
    _refuse_repeated_header(path, df.columns)
    _warn_missing_words(path, df)
    return df


def _refuse_repeated_header(path: Path, columns: pd.Index) -> None:
    """A name given to two columns: pandas renames the second ("age.1"), and a config naming
    "age" would read the first, whichever was meant, without a word. The header is read as
    written only where such a renamed column is among `columns`."""
    names = set(map(str, columns))
    renamed = (re.fullmatch(r"(.+)\.\d+", n) for n in names)
    if not any(m is not None and m.group(1) in names for m in renamed):
        return
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]
    written = [str(v) for v in header]
    twice = sorted({n for n in written if written.count(n) > 1})
    if twice:
        raise DataError(
            f"data file {path} names {len(twice)} column(s) twice or more ({twice[:5]}): "
            "pandas would read the second as 'NAME.1' and a config naming NAME the first; "
            "give each column its own name"
        )


NA_WORDS = frozenset({"NA", "N/A", "n/a", "None", "NULL", "null"})
"""Words pandas reads as a missing value that may be values of a text column (NA: North
America; a level None); its others (nan, NaN, #N/A, ...) only mark a missing value."""


def _warn_missing_words(path: Path, df: pd.DataFrame) -> None:
    """Warn where a text column lost cells to pandas' missing-value words ("NA", "None", ...):
    in a column of numbers they mean missing, in one of text they may be values (NA: North
    America), which would be encoded as missing without a word."""
    text = [c for c in df.columns if not is_numeric_dtype(df[c]) and df[c].isna().any()]
    if not text:
        return
    try:
        raw = pd.read_csv(path, usecols=text, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError):  # e.g. a name pandas renamed (a repeated one)
        return
    for column in text:
        words = raw[column][raw[column].isin(NA_WORDS)]
        if len(words):
            shown = ", ".join(repr(w) for w in sorted(set(words))[:3])
            warnings.warn(
                f"{path}: column {column!r} holds {len(words)} cell(s) of {shown}, read as "
                "missing values; if they are values of the column (NA: North America), "
                "write them otherwise in the file",
                DataWarning,
                stacklevel=3,
            )


def feature_list_problem(
    numeric: Sequence[str], categorical: Sequence[str], log: Sequence[str] = ()
) -> str | None:
    """What is wrong with the feature lists (a column listed twice, as both numeric and
    categorical, or in `log` but not numeric), or None."""
    for name, columns in (("numeric", numeric), ("categorical", categorical), ("log", log)):
        twice = sorted({c for c in columns if list(columns).count(c) > 1})
        if twice:
            return f"{name} features list {twice} more than once: list each column once"
    both = sorted(set(numeric) & set(categorical))
    if both:
        return (
            f"columns {both} are listed as both numeric and categorical features: list each under "
            "one of them (numeric: standardised, categorical: one-hot encoded per value)"
        )
    categorical_too = [c for c in log if c in categorical]
    if categorical_too:
        return (
            f"features.log lists {categorical_too}, which are categorical features: a logarithm "
            "is taken of numeric columns only; drop them from log"
        )
    stray = [c for c in log if c not in numeric]
    if stray:
        return (
            f"features.log lists {stray}, which are not numeric features: a logarithm is taken "
            "of numeric columns only; add them to features.numeric or drop them from log"
        )
    return None


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
    log: tuple[str, ...] = ()
    """Numeric columns read as their natural logarithm (`means` and `stds` are of the log)."""

    @property
    def log_mask(self) -> list[bool]:
        """For each numeric column (in order), whether it is read as its logarithm."""
        return [c in self.log for c in self.numeric]

    @property
    def in_dim(self) -> int:
        return len(self.numeric) + sum(len(c) for c in self.categories)

    @property
    def model_input(self) -> list[str]:
        """What an architecture builder is given: the encoded feature names."""
        return self.feature_names

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
        log: Sequence[str] = (),
    ) -> TabularPreprocessor:
        """Learn the encoding from training rows only; `log`: numeric columns whose logarithm
        is standardised instead of the value."""
        for name, given in (("numeric", numeric), ("categorical", categorical), ("log", log)):
            if isinstance(given, str):  # tuple() would split it into letters
                raise DataError(f"{name} takes a list of column names, e.g. [{given!r}]")
        numeric, categorical, log = tuple(numeric), tuple(categorical), tuple(log)
        if not numeric and not categorical:
            raise DataError("no feature columns given: name at least one numeric or categorical")
        problem = feature_list_problem(numeric, categorical, log)
        if problem:
            raise DataError(problem)
        check_columns(df, numeric, "numeric feature columns", None)
        check_columns(df, categorical, "categorical feature columns", None)
        targets = {c for t in tasks for c in t.target_columns}
        overlap = sorted(targets & (set(numeric) | set(categorical)))
        if overlap:
            raise DataError(f"columns {overlap} are both a feature and a task target")
        means, stds = [], []
        for col in numeric:
            values = numeric_values(
                df, col, f"numeric feature {col!r}", "list it under categorical features instead"
            )
            if np.isnan(values).all():
                raise DataError(
                    f"numeric feature {col!r} has no numeric value in the training rows"
                )
            if col in log:
                _check_positive(df, [col], values[:, None])
                values = np.log(values)
            mean, std = mean_std(values)
            means.append(mean)
            stds.append(std)
        categories = tuple(_distinct(df[c].dropna().unique()) for c in categorical)
        classes: dict[str, list[Any]] = {}
        scale: dict[str, tuple[float, float]] = {}
        for task in tasks:
            check_columns(df, task.target_columns, f"task {task.name!r}: target columns", None)
            fit = task.fit_target(df)
            if fit.classes is not None:
                classes[task.name] = fit.classes
            if fit.scale is not None:
                scale[task.name] = fit.scale
        return cls(numeric, categorical, tuple(means), tuple(stds), categories, classes, scale, log)

    def target_fit(self, task: Task) -> TargetFit:
        """What fitting learned about `task`'s targets (classes, or standardisation scale),
        and the size of an encoded input row (what a task reconstructing its input predicts)."""
        return TargetFit(self.classes.get(task.name), self.target_scale.get(task.name), self.in_dim)

    def resolve_tasks(self, tasks: Sequence[Task]) -> list[Task]:
        """Fill in what the training data settle (e.g. multiclass `num_classes`)."""
        return [t.kind_spec.resolve(t, self.target_fit(t)) for t in tasks]

    def raw_features(self, df: pd.DataFrame) -> np.ndarray:
        """The feature columns before encoding, one float column each, as an exported graph takes
        them (`polytask.serve`): numeric values (missing: NaN), then each categorical column's
        index among its training categories (missing or unseen: -1). Checked as
        `transform_features` checks them. Columns in `log` stay as given (their logarithm is
        taken by `encode_raw`) and must be positive."""
        check_columns(df, self.numeric + self.categorical, "feature columns", None)
        out = np.full((len(df), len(self.numeric) + len(self.categorical)), -1.0)
        for j, col in enumerate(self.numeric):
            what = f"numeric feature {col!r}"
            out[:, j] = numeric_values(df, col, what, "correct them or leave them empty")
        logged = np.array(self.log_mask, dtype=bool)
        names = [c for c, is_log in zip(self.numeric, logged, strict=True) if is_log]
        _check_positive(df, names, out[:, : len(self.numeric)][:, logged])
        for j, (col, mean, std) in enumerate(zip(self.numeric, self.means, self.stds, strict=True)):
            read = np.log(out[:, j]) if logged[j] else out[:, j]
            too_far = np.abs((read - mean) / std) > _MAX_STANDARDISED
            if too_far.any():
                raise DataError(
                    f"numeric feature {col!r} is more than {_MAX_STANDARDISED:.0e} standard "
                    f"deviations from its training mean in {row_labels(too_far, df.index)} "
                    f"(training mean {mean:.4g}, std {std:.4g}): check its units"
                )
        for j, (col, cats) in enumerate(zip(self.categorical, self.categories, strict=True)):
            lookup = {category_key(c): i for i, c in enumerate(cats)}
            unseen: dict[str, int] = {}
            for row, value in enumerate(df[col].to_numpy()):
                if pd.isna(value):
                    continue
                index = lookup.get(category_key(value))
                if index is None:
                    unseen[str(value)] = unseen.get(str(value), 0) + 1
                else:
                    out[row, len(self.numeric) + j] = index
            if unseen:
                log.warning(
                    "categorical feature %r: %d row%s hold%s categories not seen in training "
                    "(%s); they are encoded like a missing value",
                    col,
                    sum(unseen.values()),
                    *(("", "s") if sum(unseen.values()) == 1 else ("s", "")),
                    ", ".join(map(repr, list(unseen)[:5])),
                )
        return out

    def encode_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """`raw_features` → the model's input: numeric columns standardised (missing: 0, the
        training mean; `log` columns' logarithm), categorical indices one-hot (-1: all zeros).
        Traceable tensor ops only, so that an exported graph carries this step inside it."""
        n = len(self.numeric)
        blocks = []
        if n:
            mean = torch.tensor(self.means, dtype=raw.dtype)
            std = torch.tensor(self.stds, dtype=raw.dtype)
            values = raw[:, :n]
            if self.log:
                logged = torch.tensor(self.log_mask)
                tiny = torch.finfo(raw.dtype).tiny  # a served non-positive value: very negative
                values = torch.where(logged, torch.log(values.clamp_min(tiny)), values)
            z = (values - mean) / std
            blocks.append(torch.where(torch.isnan(z), torch.zeros_like(z), z))
        for j, cats in enumerate(self.categories):
            index = raw[:, n + j : n + j + 1]
            blocks.append((index == torch.arange(len(cats), dtype=raw.dtype)).to(raw.dtype))
        return torch.cat(blocks, dim=1)

    def typical_numeric(self, z: np.ndarray | None = None) -> np.ndarray:
        """Numeric feature values `z` training standard deviations from the training means (by
        default at them; columns in `numeric`'s order), as a table holds them: examples for
        tracing and checks."""
        values = np.asarray(self.means) + (0.0 if z is None else np.asarray(z)) * np.asarray(
            self.stds
        )
        logged = np.asarray(self.log_mask, dtype=bool)
        values[..., logged] = np.exp(values[..., logged])  # not all: a large mean overflows
        return values

    def transform_features(self, df: pd.DataFrame) -> torch.Tensor:
        """The model's input for the rows of `df` (see `raw_features` and `encode_raw`)."""
        raw = torch.from_numpy(self.raw_features(df))
        return self.encode_raw(raw).to(torch.float32)

    def transform_target(self, task: Task, df: pd.DataFrame) -> torch.Tensor:
        """The targets of `task` in `df`, encoded by its kind as the loss takes them."""
        check_columns(df, task.target_columns, f"task {task.name!r}: target columns", None)
        return task.encode_target(df, self.target_fit(task))

    def transform(self, df: pd.DataFrame, tasks: Sequence[Task]) -> TaskData:
        """Encode features and every task's targets of `df`."""
        targets = {t.name: self.transform_target(t, df) for t in tasks}
        scale = {t.name: self.target_scale[t.name] for t in tasks if t.name in self.target_scale}
        return TaskData(self.transform_features(df), targets, scale)

    def source(
        self,
        frame: pd.DataFrame,
        base: str | Path | None = None,
        tasks: Sequence[Task] = (),
        where: str | None = None,
    ) -> TaskData:
        """`transform` (the encoding's common form, see `polytask.app.Encoding`): table rows
        name no files, so `base` and `where` are not needed."""
        return self.transform(frame, tasks)

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
            log=tuple(d.get("log", ())),
        )


def category_key(value: Any) -> str:
    """One spelling per category, so that 2, 2.0 and "2" are one (a column of codes reads as
    floats where a cell is blank, so its dtype changes with the other rows of a file or batch);
    booleans keep theirs."""
    v = json_scalar(value)
    return str(v) if isinstance(v, bool) else class_key(v)


def _distinct(values: Any) -> tuple[Any, ...]:
    """A column's categories, sorted by text, one per `category_key`."""
    kept: dict[str, Any] = {}
    for v in sorted(map(json_scalar, values), key=str):
        kept.setdefault(category_key(v), v)
    return tuple(kept.values())


def _check_positive(df: pd.DataFrame, columns: Sequence[str], values: np.ndarray) -> None:
    """Refuse values of zero or below in `columns` (read as their logarithm), naming every such
    column and its rows; missing values (NaN) pass."""
    problems = []
    for col, column in zip(columns, values.T, strict=True):
        bad = column <= 0  # NaN compares False
        if bad.any():
            problems.append(f"{col!r} ({row_labels(bad, df.index)}; smallest "
                            f"{np.nanmin(column[bad]):.4g})")  # fmt: skip
    if problems:
        raise DataError(
            f"numeric features read as their logarithm (features.log) hold values of zero or "
            f"below: {', '.join(problems)}. A logarithm needs positive values: correct them or "
            "leave them empty (missing); when training, you may instead take the column out of "
            "features.log, or shift it first (e.g. add 1 to counts)"
        )
