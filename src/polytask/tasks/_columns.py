"""Reading table columns as numbers or class labels, with errors that name the bad rows.

Shared by the task kinds (target fitting and encoding) and `TabularPreprocessor` (features);
it lives here so that task kinds need not import `polytask.data`, which imports the tasks.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


class DataError(ValueError):
    """The data do not fit the declared features or tasks."""


class DataWarning(UserWarning):
    """The data train, but some task learns little from them or some metric is undefined
    (e.g. one class only, a constant target, no labels in a split)."""


def json_scalar(v: Any) -> Any:
    """A NumPy scalar as the Python value JSON can store (others unchanged)."""
    return v.item() if isinstance(v, np.generic) else v


def class_key(v: Any) -> str:
    """One spelling per label, so that 1, 1.0 and "1" name the same class."""
    v = json_scalar(v)
    if isinstance(v, int | float) and float(v).is_integer():
        return str(int(v))
    return str(v)


def more_rows(n: int, how: str = "like it") -> str:
    """` (N more rows HOW)` after the first row a message names; empty when there is none."""
    return f" ({n} more row{'s' * (n > 1)} {how})" if n > 0 else ""


def row_labels(mask: np.ndarray | pd.Series, index: pd.Index) -> str:
    """`row 7` or `rows 7, 9, ...`: the first few row labels where `mask` holds, for error
    messages."""
    rows = list(index[np.asarray(mask)])
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return f"row {shown}" if len(rows) == 1 else f"rows {shown}"


def numeric_values(df: pd.DataFrame, col: str, what: str, hint: str = "") -> np.ndarray:
    """Column `col` as float64 (missing: NaN); non-numeric cells (`hint` says what to do) or
    infinite ones are an error."""
    column = df[col]
    if column.dtype.kind in "fiu":  # already numbers: no parsing (a served row's few µs)
        out = column.to_numpy(dtype=float, na_value=np.nan)
    else:
        values = pd.to_numeric(column, errors="coerce")
        bad = column.notna() & values.isna()
        if bad.any():
            example = df.loc[bad, col].iloc[0]
            raise DataError(
                f"{what} holds non-numeric values (e.g. {example!r}; "
                f"{row_labels(bad, df.index)})" + (f"; {hint}" if hint else "")
            )
        out = values.to_numpy(dtype=float)
    infinite = np.isinf(out)
    if infinite.any():
        raise DataError(
            f"{what} holds infinite values ({row_labels(infinite, df.index)}); replace them "
            "with finite numbers or leave the cells empty (missing)"
        )
    return out


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the non-missing values without overflow: computed on
    values divided by the largest magnitude, so any finite float64 column is standardised."""
    present = values[~np.isnan(values)]
    scale = float(np.abs(present).max()) or 1.0
    scaled = present / scale
    mean, std = float(scaled.mean()) * scale, float(scaled.std()) * scale
    return mean, std if std > 0 else 1.0


def class_values(column: pd.Series, ignore: int) -> list[Any]:
    """The distinct labels of `column`, one per spelling, sorted as numbers when every one is
    a number (2 before 10: as text, a binary task of labels 2 and 10 took 2 as its positive
    class), else as text; missing cells and the `ignore` value (a missing class label) are left
    out. Whole numbers read as floats (a column of integers with blank cells) are ints again,
    so that a class is named 1, not 1.0."""
    values = column.dropna()
    values = values[values.map(class_key) != str(ignore)]
    found = list({class_key(v): json_scalar(v) for v in values.unique()}.values())
    if all(v.is_integer() for v in found if isinstance(v, float)):  # ints read with blanks
        found = [int(v) if isinstance(v, float) else v for v in found]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in found):
        return sorted(found)
    return sorted(found, key=str)


def class_indices(column: pd.Series, classes: list[Any], ignore: int) -> list[int]:
    """Each cell's index in `classes`; missing cells and unseen labels become `ignore`."""
    lookup = {class_key(c): i for i, c in enumerate(classes)}
    return [lookup.get(class_key(v), ignore) if pd.notna(v) else ignore for v in column]


def unseen_classes(column: pd.Series, classes: list[Any], ignore: int) -> list[Any]:
    """The labels of `column` (one per row) that are not among `classes`: missing cells and
    the `ignore` value are not labels."""
    known = {class_key(c) for c in classes} | {str(ignore)}
    return [json_scalar(v) for v in column if pd.notna(v) and class_key(v) not in known]


def warn_spellings(task: str, classes: list[Any]) -> None:
    """A `DataWarning` for class labels that differ only in case or surrounding spaces
    ('Positive' and 'positive'): they become separate classes, which is rarely meant."""
    seen: dict[str, list[Any]] = {}
    for c in classes:
        if isinstance(c, str):
            seen.setdefault(c.strip().casefold(), []).append(c)
    alike = [group for group in seen.values() if len(group) > 1]
    if alike:
        warnings.warn(
            f"task {task!r}: classes {alike[0]} differ only in case or spaces, so they are "
            f"separate classes{f' ({len(alike)} such groups)' if len(alike) > 1 else ''}; "
            "correct the labels if they mean one class",
            DataWarning,
            stacklevel=3,
        )


def listed_columns(names: Sequence[Any], most: int = 40) -> str:
    """A table's column names for a message: the first `most`, then how many more."""
    shown = ", ".join(map(str, list(names)[:most]))
    return shown + (f" ... and {len(names) - most} more" if len(names) > most else "")


def check_columns(
    frame: pd.DataFrame | Sequence[str], columns: Sequence[str], what: str, where: str | None
) -> None:
    """Refuse `columns` that `frame` (a table, or its column names) lacks, naming the nearest
    column it has and listing them (`where`: the file, or None for "the data")."""
    names = list(frame.columns if isinstance(frame, pd.DataFrame) else frame)
    present = set(names)  # hashed: a wide table is checked on every served request
    missing = [c for c in columns if c not in present]
    if missing:
        listed = str(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        near = _nearest(missing[0], names)
        shown = listed_columns(names)
        found = (
            f"{where}: {what} {listed} not found"
            if where
            else f"{what} {listed} not found in the data"
        )
        raise DataError(f"{found}{near}; its columns are: {shown}")


def _nearest(wanted: Any, names: Sequence[Any]) -> str:
    """A hint naming the column `wanted` probably meant: the same name of another type (the
    number 1 for "1"), the same name in other case, a close spelling, or the columns whose
    names hold it; "" when none."""
    same = [n for n in names if str(n) == str(wanted)]
    if same:
        return f" (the data's column is {same[0]!r} of type {type(same[0]).__name__})"
    folded = {str(n).lower(): n for n in names}
    close = difflib.get_close_matches(str(wanted).lower(), list(folded), n=1, cutoff=0.8)
    if close:
        return f" (did you mean {folded[close[0]]!r}?)"
    part = str(wanted).lower()  # a shortened name: offer for offer_accepted
    holding = [str(n) for n in names if part and part in str(n).lower()]
    if holding:
        more = f" and {len(holding) - 5} more" if len(holding) > 5 else ""
        return f" (columns with {str(wanted)!r} in their name: {', '.join(holding[:5])}{more})"
    return ""
