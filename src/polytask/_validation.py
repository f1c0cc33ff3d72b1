"""Argument checking for the public Python API: a wrong type gets pydantic's message naming the
argument, instead of an AttributeError deep inside torch."""

from __future__ import annotations

from pydantic import ConfigDict, ValidationError, validate_call

API_CONFIG = ConfigDict(arbitrary_types_allowed=True, hide_input_in_errors=True)

checked = validate_call(config=API_CONFIG)
"""Decorator: validate a public function's (or `__init__`'s) arguments against its hints."""


def describe_validation_error(err: ValidationError) -> str:
    """pydantic's errors as 'where: what' sentences, without its error types and URLs."""
    lines = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if where else msg)
    return "; ".join(dict.fromkeys(lines))
