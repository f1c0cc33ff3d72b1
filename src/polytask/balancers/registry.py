"""Balancers by name. Adding a method: one file and one line in `BALANCERS`."""

from __future__ import annotations

import inspect
import typing
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from polytask.balancers.base import Balancer
from polytask.balancers.dwa import DynamicWeightAverage
from polytask.balancers.equal import EqualWeights
from polytask.balancers.fixed import FixedWeights
from polytask.balancers.uncertainty import UncertaintyWeighting

BALANCERS: dict[str, type[Balancer]] = {
    "ew": EqualWeights,
    "fixed": FixedWeights,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
}


def balancer_params(name: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters a balancer accepts."""
    sig = inspect.signature(BALANCERS[name].__init__)
    return {k: p for k, p in sig.parameters.items() if k != "self"}


def make_balancer(name: str, **params: Any) -> Balancer:
    """Build a balancer by name, validating its parameters with a message that names the fix."""
    if name not in BALANCERS:
        raise ValueError(f"unknown balancer {name!r}; allowed: {', '.join(sorted(BALANCERS))}")
    hints = typing.get_type_hints(BALANCERS[name].__init__)
    fields: dict[str, Any] = {
        k: (
            hints.get(k, Any),
            ... if p.default is inspect.Parameter.empty else p.default,
        )
        for k, p in balancer_params(name).items()
    }
    model = create_model(f"{name}_params", __config__=ConfigDict(extra="forbid"), **fields)
    try:
        checked = model(**params)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or name}: {e['msg']}" for e in err.errors()
        )
        allowed = ", ".join(balancer_params(name)) or "none"
        raise ValueError(f"balancer {name!r}: {problems} (its parameters: {allowed})") from None
    return BALANCERS[name](**{k: getattr(checked, k) for k in fields})
