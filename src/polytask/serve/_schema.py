"""The input and output schema of a served model, and validation of JSON rows against it."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from polytask.data._tabular import TabularPreprocessor
from polytask.tasks._task import Task


def input_schema(pre: TabularPreprocessor) -> list[dict[str, Any]]:
    """One entry per feature column a request must give: its name, type and what is allowed
    (a `log` column: positive numbers, its training mean and std those of the logarithm)."""
    numeric = [
        {"name": c, "type": "number", "nullable": True, "training_mean": m, "training_std": s}
        | ({"log": True, "exclusive_minimum": 0} if c in pre.log else {})
        for c, m, s in zip(pre.numeric, pre.means, pre.stds, strict=True)
    ]
    categorical = [
        {"name": c, "type": "category", "nullable": True, "categories": list(cats)}
        for c, cats in zip(pre.categorical, pre.categories, strict=True)
    ]
    return numeric + categorical


def output_schema(tasks: Sequence[Task], pre: TabularPreprocessor) -> list[dict[str, Any]]:
    """One entry per task: its kind, classes and what its graph output holds."""
    out = []
    for task in tasks:
        fit = pre.target_fit(task)
        entry: dict[str, Any] = {"name": task.name, "kind": task.kind}
        if fit.classes is not None:
            entry["classes"] = fit.classes
        labels = task.kind_spec.output_labels(task)
        if labels is not None:
            entry["labels"] = labels
        entry["meaning"] = task.kind_spec.served_meaning
        out.append(entry)
    return out


class RowError(ValueError):
    """A request row that does not fit the input schema; `loc` names where."""

    def __init__(self, loc: list[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def rows_frame(rows: Any, pre: TabularPreprocessor, max_rows: int) -> pd.DataFrame:
    """`rows` (a list of JSON objects, one per row) as a frame of the model's feature columns;
    a RowError names the first problem: a missing or unknown field, or a value of the wrong
    type (numbers for numeric features; strings, numbers or booleans for categories; null for
    a missing value)."""
    if not isinstance(rows, list):
        raise RowError(["rows"], "must be a list of objects, one per row")
    if not rows:
        raise RowError(["rows"], "must hold at least one row")
    if len(rows) > max_rows:
        raise RowError(["rows"], f"holds {len(rows)} rows; at most {max_rows} per request")
    numeric, categorical = set(pre.numeric), set(pre.categorical)
    columns = [*pre.numeric, *pre.categorical]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RowError(["rows", i], "must be an object of feature values")
        missing = [c for c in columns if c not in row]
        unknown = [k for k in row if k not in numeric and k not in categorical]
        if missing:
            spelt = difflib.get_close_matches(missing[0], [str(k) for k in unknown], n=1)
            raise RowError(
                ["rows", i, missing[0]],
                f"field {missing[0]!r} is missing"
                + (f" (the row has {spelt[0]!r}: a misspelling?)" if spelt else "")
                + f" (give null for an unknown value); every row needs: {', '.join(columns)}",
            )
        if unknown:
            raise RowError(
                ["rows", i, str(unknown[0])],
                f"unknown field {unknown[0]!r}; the model reads: {', '.join(columns)}",
            )
        for name, value in row.items():
            if value is None:
                continue
            if name in numeric:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                if not ok or not _finite(value):
                    shown = repr(value) if len(repr(value)) < 40 else f"{repr(value)[:30]}..."
                    raise RowError(
                        ["rows", i, name],
                        f"field {name!r} must be a finite number or null, got {shown}",
                    )
            elif not isinstance(value, str | int | float | bool):
                raise RowError(
                    ["rows", i, name],
                    f"field {name!r} must be a category (string, number or boolean) or null, "
                    f"got {type(value).__name__}",
                )
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for name in pre.numeric:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return frame


def _finite(value: float) -> bool:
    """A finite number a float holds (a JSON integer like 10**400 is too large for one)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
