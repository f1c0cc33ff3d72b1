"""Your own components on the command line: `polytask --import MODULE` imports a module (or a
.py file) that registers balancers, task kinds, architectures, ... before the command runs, as
`import MODULE` does in Python before `make_balancer` or `FittedModel.load`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

IMPORTS_ENV = "POLYTASK_IMPORTS"
"""The `--import` modules, for processes the command starts (`serve --workers`), joined by
`os.pathsep`."""


def import_extensions(specs: Sequence[str]) -> None:
    """Import each of `specs`: a file path ending in .py, or a module name found on the Python
    path or in the working folder. ValueError says which one failed and why."""
    for spec in specs:
        try:
            if spec.endswith(".py") or os.sep in spec or "/" in spec:
                _import_file(Path(spec))
            else:
                if os.getcwd() not in sys.path and "" not in sys.path:
                    sys.path.append(os.getcwd())  # as `python -m` would find it
                importlib.import_module(spec)
        except ModuleNotFoundError as err:
            if err.name != spec:  # the module itself imports something missing
                raise ValueError(f"--import {spec}: {err}") from err
            raise ValueError(
                f"--import {spec}: no module named {spec!r} on the Python path or in "
                f"{os.getcwd()}: give a module name, or the file (--import path/to/{spec}.py)"
            ) from None


def _import_file(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"--import {path}: no such file")
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so that pickles and dataclasses can find it again
    spec.loader.exec_module(module)


def imports_from_environment() -> None:
    """Import what `IMPORTS_ENV` lists (in a process `polytask serve` started)."""
    listed = os.environ.get(IMPORTS_ENV, "")
    import_extensions([s for s in listed.split(os.pathsep) if s])
