"""`ExportFormat`: how one file format writes a `ServingGraph` and runs what it wrote."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from polytask.serve._graph import ServingGraph

Runner = Callable[[np.ndarray], list[np.ndarray]]
"""Raw feature rows (float32, (N, features)) → one array per task output, in graph order."""


class FormatUnavailable(ValueError):
    """The format needs a package that is not installed (the message names the pip extra)."""


class ExportFormat(ABC):
    """One export format. Adding one: a file with a subclass and one line in `FORMATS`.

    `write` saves the graph (batch size dynamic) to `path`; `load` runs a saved file;
    `quantize` (optional) writes a dynamically int8-quantised copy for CPU serving."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    """The file name the graph is saved under in the export folder."""
    needs: ClassVar[tuple[str, ...]] = ()
    """Python modules the format imports (checked before any work)."""
    extra: ClassVar[str | None] = None
    """The pip extra that installs `needs`."""
    quantizable: ClassVar[bool] = False

    def check_available(self) -> None:
        """Refuse early, naming the install command, when a needed package is missing."""
        import importlib.util

        missing = [m for m in self.needs if importlib.util.find_spec(m) is None]
        if missing:
            raise FormatUnavailable(
                f"export format {self.name!r} needs {', '.join(missing)}: "
                f"pip install 'polytask[{self.extra}]'"
            )

    @abstractmethod
    def write(self, graph: ServingGraph, path: Path) -> None:
        """Save `graph` (in eval mode, batch dimension dynamic) to `path`."""

    @abstractmethod
    def load(self, path: Path) -> Runner:
        """A runner of the file at `path` (no Python code is loaded from it)."""

    def quantize(self, graph: ServingGraph, source: Path, path: Path) -> None:
        """Write an int8 dynamically quantised copy of the export at `source` to `path`."""
        raise ValueError(
            f"export format {self.name!r} has no int8 quantisation; use onnx or torchscript"
        )
