"""Adaptation strategies by name. Adding one: its file (an `AdaptStrategy` subclass whose
constructor's keyword parameters are its settings) and one line in `STRATEGIES`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from polytask._params import check_params, lookup, signature_params
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


def taken_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `params` that strategy `name` takes (several strategies compared side by
    side share one set of settings: l2sp's strength, ...)."""
    return {k: v for k, v in params.items() if k in signature_params(STRATEGIES[name])}


def strategy_for(names: Sequence[str], params: Mapping[str, Any]) -> str:
    """The first of `names` that takes every one of `params` (the strategy whose settings
    they are); refused, naming the strategies and their settings, when none does."""
    for name in names:
        if set(params) <= set(signature_params(STRATEGIES[name])):
            return name
    takes = "; ".join(f"{n}: {', '.join(signature_params(STRATEGIES[n])) or 'none'}" for n in names)
    raise ValueError(
        f"no strategy of {', '.join(names)} takes every setting of {sorted(params)} (their "
        f"settings: {takes}): give a strategy that takes them (--strategy l2sp)"
    )


def make_strategy(name: str, **params: Any) -> AdaptStrategy:
    """A fresh strategy `name` with its settings validated."""
    return STRATEGIES[name](**check_strategy(name, params))
