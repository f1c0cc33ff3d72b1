"""The built-in data sets a config names with `data.builtin`: one line per generator.

Each entry is a frame maker (its keyword arguments are `data.options`) and the feature columns
of the frames it makes for those options (numeric, categorical); nothing else names them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from polytask.data._synthetic import (
    CUSTOMER_CATEGORICAL,
    customer_feature_names,
    family_feature_names,
    grouped_feature_names,
    low_rank_feature_names,
    make_customers,
    make_grouped_frame,
    make_low_rank,
    make_many_tasks,
    make_task_family,
    many_tasks_feature_names,
)


@dataclass(frozen=True)
class BuiltinData:
    """A built-in data set: `make(**options)` draws its rows; `numeric(**options)` and
    `categorical` are its feature columns (the numeric ones may depend on the options)."""

    make: Callable[..., pd.DataFrame]
    numeric: Callable[..., list[str]]
    categorical: tuple[str, ...] = ()


BUILTINS: dict[str, BuiltinData] = {
    "customers": BuiltinData(make_customers, customer_feature_names, (*CUSTOMER_CATEGORICAL,)),
    "groups": BuiltinData(make_grouped_frame, grouped_feature_names),
    "task_family": BuiltinData(make_task_family, family_feature_names),
    "low_rank": BuiltinData(make_low_rank, low_rank_feature_names),
    "many_tasks": BuiltinData(make_many_tasks, many_tasks_feature_names),
}


def builtin_data(name: str) -> BuiltinData:
    """The built-in data set `name`; an unknown name is refused with the nearest one."""
    if name not in BUILTINS:
        close = difflib.get_close_matches(name, BUILTINS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown built-in data set {name!r}{hint}; built-in: {', '.join(BUILTINS)}"
        )
    return BUILTINS[name]


def builtin_features(name: str, options: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The numeric and categorical feature columns of built-in `name` made with `options`."""
    data = builtin_data(name)
    return tuple(data.numeric(**options)), data.categorical
