"""Adaptation strategies by name. Adding one: its file (an `AdaptStrategy` subclass whose
constructor's keyword parameters are its settings) and one line in `STRATEGIES`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polytask._params import check_params, lookup
from polytask.adapt.strategies._base import AdaptStrategy
from polytask.adapt.strategies._finetune import FineTune
from polytask.adapt.strategies._head_only import HeadOnly
from polytask.adapt.strategies._l2sp import L2SP

STRATEGIES: dict[str, type[AdaptStrategy]] = {
    "head_only": HeadOnly,
    "finetune": FineTune,
    "l2sp": L2SP,
}


def check_strategy(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` validated for strategy `name` (an unknown name or parameter is explained)."""
    return check_params("adaptation strategy", name, lookup("strategy", name, STRATEGIES), params)


def make_strategy(name: str, **params: Any) -> AdaptStrategy:
    """A fresh strategy `name` with its settings validated."""
    return STRATEGIES[name](**check_strategy(name, params))
