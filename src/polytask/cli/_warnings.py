"""polytask's warnings on the command line: one `warning: ...` line each (a library's own,
torch's say, as Python shows them)."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from polytask.tasks._columns import DataWarning


@contextlib.contextmanager
def data_warnings_to_stderr() -> Iterator[None]:
    """Show each `DataWarning`, and any warning polytask's code raises, as `warning: MESSAGE`
    on stderr (others as Python shows them)."""
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
            if issubclass(category, DataWarning) or _ours(filename):
                print(f"warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        warnings.simplefilter("always", DataWarning)
        yield


def _ours(filename: str) -> bool:
    """Whether a warning was raised from polytask's own code (its file is in the package)."""
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False


_PACKAGE = Path(__file__).resolve().parents[1]
