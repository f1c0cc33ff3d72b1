"""Many tasks from one column: one task per value of a column (a school's students, a patient's
visits, a region's customers), all reading the same target column on their own rows — the
classic multi-task setting, declared in one line of a config:

    tasks: {from_column: school_id, target: exam_score, kind: regression}
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Literal

import pandas as pd
from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass

from polytask.tasks._columns import DataError, DataWarning, check_columns, json_scalar
from polytask.tasks._task import Task, same_value


@dataclass(frozen=True)
class TaskColumn:
    """One task per value of `from_column`, each a `kind` task on `target` restricted to its
    own rows (`Task.where`), named by `name` ("{column}_{value}", e.g. school_id_17).

    A value labelling fewer than `min_rows` rows (rows with a target) cannot be split and
    scored: refused, naming the values (`too_few: refuse`), or left out with a warning
    (`drop`). The other fields apply to every task as in a task's own spec."""

    from_column: str
    target: str
    kind: str
    name: str = "{column}_{value}"
    min_rows: int = 10
    too_few: Literal["refuse", "drop"] = "refuse"
    num_classes: int | None = None
    loss: str | None = None
    loss_params: dict[str, float] | None = None
    label_smoothing: float = 0.0
    metrics: tuple[str, ...] | None = None
    primary_metric: str | None = None
    kind_params: dict[str, int | float | str | list[Any]] | None = None

    __pydantic_config__ = ConfigDict(extra="forbid")

    def __post_init__(self) -> None:
        if self.min_rows < 1:
            raise ValueError(f"tasks.min_rows must be at least 1, got {self.min_rows}")
        if "{value}" not in self.name:
            raise ValueError(
                f"tasks.name {self.name!r} must contain {{value}} (each task is named by its "
                "value), e.g. '{column}_{value}' or 'school{value}'"
            )
        if self.from_column == self.target:
            raise ValueError("tasks.from_column and tasks.target name the same column")
        # the shared settings checked once, on a task like those that will be made
        try:
            Task("check", self.kind, **self._task_fields(), where={self.from_column: 0})
        except ValidationError as error:
            said = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
            raise ValueError(
                said.replace("task 'check'", f"the tasks made from {self.from_column!r}")
            ) from None

    def _task_fields(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "num_classes": self.num_classes,
            "loss": self.loss,
            "loss_params": self.loss_params,
            "label_smoothing": self.label_smoothing,
            "metrics": self.metrics,
            "primary_metric": self.primary_metric,
            "kind_params": self.kind_params,
        }

    @property
    def columns(self) -> list[str]:
        """The data columns the tasks are made from."""
        return [self.from_column, self.target]

    def tasks(self, frame: pd.DataFrame, where: str = "the data") -> tuple[Task, ...]:
        """The tasks of `frame` (its `from_column` and `target` columns): one per value that
        labels at least `min_rows` rows, in sorted order of the values."""
        for field, name in (("from_column", self.from_column), ("target", self.target)):
            check_columns(frame, [name], f"tasks.{field} column", where)
        column = frame[self.from_column]
        if pd.api.types.is_float_dtype(column.dtype) and bool((column.abs() > 2**53).any()):
            raise DataError(
                f"{where}: {self.from_column!r} holds ids beyond 2**53 as floats (a blank "
                "cell makes pandas read a column of ids as floats), which round distinct ids "
                "into one task: fill its blank cells, or write the ids as text (a letter "
                "before each)"
            )
        targeted, named = frame[self.target].notna().to_numpy(), column.notna().to_numpy()
        labelled = targeted & named
        for count, what in (
            (int((targeted & ~named).sum()), f"a {self.target!r} target but no "
             f"{self.from_column!r} value: they train no task"),
            (int((named & ~targeted).sum()), f"no {self.target!r} target: they label no task "
             "and are split apart from each value's labelled rows"),
        ):  # fmt: skip
            if count:
                said = f"{where}: {count} row{'s' * (count > 1)} with {what}"
                warnings.warn(said, DataWarning, stacklevel=2)
        values = sorted(
            {_whole(json_scalar(v)) for v in column[labelled].unique()},
            key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)),
        )
        if not values:
            raise DataError(
                f"{where}: no row has both a {self.from_column!r} value and a {self.target!r} "
                "target: no task to make"
            )
        counts = {v: int((same_value(column, v) & labelled).sum()) for v in values}
        few = [v for v in values if counts[v] < self.min_rows]
        if len(few) == len(values) and len(values) > int(labelled.sum()) / 2:
            raise DataError(  # e.g. a measurement, not an id: most rows a value of their own
                f"{where}: the {len(values)} values of {self.from_column!r} label "
                f"{int(labelled.sum())} rows, none of them {self.min_rows} or more: "
                f"tasks.from_column names the column whose values are the tasks (a school, "
                "patient or store id), one value shared by many rows"
            )
        if few and self.too_few == "refuse":
            listed = ", ".join(f"{v} ({counts[v]})" for v in few[:10])
            more = f" and {len(few) - 10} more" if len(few) > 10 else ""
            raise DataError(
                f"{where}: {len(few)} value{'s' if len(few) > 1 else ''} of "
                f"{self.from_column!r} label{'' if len(few) > 1 else 's'} fewer than "
                f"{self.min_rows} rows (rows: {listed}{more}), too few to train, validate and "
                "test a task on: set tasks.too_few: drop to leave them out, or lower "
                "tasks.min_rows"
            )
        if few:
            warnings.warn(
                f"{where}: left out the {len(few)} values of {self.from_column!r} with fewer "
                f"than {self.min_rows} labelled rows ({', '.join(map(str, few[:10]))}"
                f"{' ...' if len(few) > 10 else ''}); their {sum(counts[v] for v in few):,} "
                "labelled rows train no task (they stay in the data's `rows:` counts)",
                DataWarning,
                stacklevel=2,
            )
        kept = [v for v in values if counts[v] >= self.min_rows]
        names = [self._name(v) for v in kept]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DataError(
                f"{where}: values of {self.from_column!r} give the same task name {twice[:3]} "
                f"once made valid with tasks.name {self.name!r}: choose a name that tells them "
                "apart"
            )
        fields = self._task_fields()
        return tuple(
            Task(name, self.kind, **fields, where={self.from_column: value})
            for name, value in zip(names, kept, strict=True)
        )

    def _name(self, value: Any) -> str:
        raw = self.name.format(column=self.from_column, value=value)
        return re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_") or "task"


def _whole(value: Any) -> Any:
    """A float that is a whole number as an int (ids read with NaN elsewhere become floats)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def task_family(tasks: list[Task] | tuple[Task, ...]) -> str | None:
    """The column all of `tasks` were made from (each a `where` on that one column), or None."""
    columns = {tuple(t.where) if t.where else None for t in tasks}
    if len(columns) != 1:
        return None
    only = columns.pop()
    return only[0] if only is not None and len(only) == 1 else None
