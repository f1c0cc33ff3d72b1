"""polytask's data warnings on the command line: one `warning: ...` line each."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from polytask.tasks._columns import DataWarning


@contextlib.contextmanager
def data_warnings_to_stderr() -> Iterator[None]:
    """Show each `DataWarning` as `warning: MESSAGE` on stderr (others as Python shows them)."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> Any:
            if issubclass(category, DataWarning):
                print(f"warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        warnings.simplefilter("always", DataWarning)
        yield
