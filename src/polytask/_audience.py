"""Whom a message speaks to: under the command line it names CLI flags and config fields, from
Python it names the calls and arguments (a CLI user cannot pass `strict=False`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_CLI: ContextVar[bool] = ContextVar("polytask_command_line", default=False)


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """Messages raised or logged inside speak to a user of the `polytask` command."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def for_user(python: str, cli: str) -> str:
    """`cli` inside `command_line()`, else `python`."""
    return cli if _CLI.get() else python
