"""Whom a message speaks to: under the command line it names CLI flags and config fields, from
Python it names the calls and arguments (a CLI user cannot pass `strict=False`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_CLI: ContextVar[str | None] = ContextVar("polytask_command_line", default=None)


@contextlib.contextmanager
def command_line(command: str = "train") -> Iterator[None]:
    """Messages raised or logged inside speak to a user of `polytask COMMAND`."""
    token = _CLI.set(command)
    try:
        yield
    finally:
        _CLI.reset(token)


def for_user(python: str, cli: str) -> str:
    """`cli` inside `command_line()`, else `python`."""
    return cli if _CLI.get() is not None else python


def cli_command() -> str | None:
    """The `polytask` subcommand running (None from Python)."""
    return _CLI.get()
