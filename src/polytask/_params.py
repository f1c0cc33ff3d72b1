"""Registry look-ups and parameter checks shared by the registries (balancers, architectures):
a name is looked up with a did-you-mean hint, and a config's parameters are validated against
the signature of what they are passed to, so that a bad value fails before anything runs."""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

T = TypeVar("T")
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def lookup(kind: str, name: str, table: Mapping[str, T]) -> T:
    """`table[name]`, or a ValueError naming the closest registered name and all of them."""
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    own = "" if close else OWN
    raise ValueError(f"unknown {kind} {name!r}{hint}; allowed: {', '.join(sorted(table))}{own}")


OWN = (
    " (one of your own? register it in your code, docs/extending.md, and on the command line "
    "load that code first: polytask --import MODULE ...)"
)
"""What an unknown registry name's message adds when no registered name is close."""


def signature_params(fn: Callable[..., Any], skip: int = 0) -> dict[str, inspect.Parameter]:
    """The parameters a config may set on `fn` (a function, or a class: its constructor): those
    that can be passed by keyword, after `self` and the first `skip` (what the caller passes
    itself, e.g. a builder's features and tasks)."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = [p for p in inspect.signature(target).parameters.values() if p.name != "self"]
    return {p.name: p for p in params[skip:] if p.kind in _KEYWORD}


@functools.cache
def _params_model(fn: Callable[..., Any], skip: int) -> type[BaseModel]:
    """A pydantic model of `fn`'s configurable parameters (types and constraints from its
    annotations, defaults from its signature); unknown keys are refused."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    hints = typing.get_type_hints(target, include_extras=True)
    fields: dict[str, Any] = {
        k: (hints.get(k, Any), ... if p.default is inspect.Parameter.empty else p.default)
        for k, p in signature_params(fn, skip).items()
    }
    name = getattr(fn, "__qualname__", "params")
    return create_model(f"{name}_params", __config__=ConfigDict(extra="forbid"), **fields)


def check_params(
    kind: str,
    name: str,
    fn: Callable[..., Any],
    params: Mapping[str, Any],
    skip: int = 0,
    unknown_hint: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """`params` validated against `fn`'s signature (see `signature_params` for `skip`): every
    configurable parameter's value, the default where not given. Raises one ValueError naming
    each bad parameter and listing the allowed ones; an unknown key gets `unknown_hint(key)` where
    that says something (e.g. which other thing takes it), else a did-you-mean."""
    model = _params_model(fn, skip)
    allowed = signature_params(fn, skip)
    try:
        checked = model(**params)
    except ValidationError as err:
        problems = "; ".join(_problem(e, name, list(allowed), unknown_hint) for e in err.errors())
        listed = ", ".join(allowed) or "none"
        raise ValueError(f"{kind} {name!r}: {problems} (its parameters: {listed})") from None
    return {k: getattr(checked, k) for k in model.model_fields}


def _problem(
    error: Any, name: str, allowed: list[str], unknown_hint: Callable[[str], str | None] | None
) -> str:
    """One validation error as "parameter: what is wrong", with a hint for an unknown key."""
    where = ".".join(str(x) for x in error["loc"]) or name
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown parameter"  # pydantic's "Extra inputs are not permitted"
        key = str(error["loc"][0])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = unknown_hint(key) if unknown_hint is not None else None
        if hint:
            message += f"; {hint}"
        elif close:
            message += f" (did you mean {close[0]!r}?)"
    return f"{where}: {message}"
