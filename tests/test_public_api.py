"""The public surface: every name the README, the docs and the error messages send users to is
importable from a public module (no `_private` path), and each package lists what it exports."""

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import torch

import polytask
from polytask import TaskData, hard_sharing_mlp

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "polytask"
DOTTED = re.compile(r"(?<![/.\w])polytask(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
IMPORT = re.compile(r"^\s*from (polytask[\w.]*) import \(?([\w, ]+)\)?", re.M)


def _resolve(dotted: str) -> object:
    """The object `dotted` names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise AssertionError(f"{dotted} names no module")


def _mentions_in_docs() -> set[str]:
    found: set[str] = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        found.update(m.rstrip(".") for m in DOTTED.findall(text))
        for module, names in IMPORT.findall(text):
            found.update(f"{module}.{n.strip()}" for n in names.split(",") if n.strip())
    return found


def _mentions_in_messages() -> set[str]:
    """Dotted names inside the string literals of the package's code (error messages)."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node in _docstrings(path):
                    continue
                found.update(m.rstrip(".") for m in DOTTED.findall(node.value))
    return found


_DOCSTRINGS: dict[Path, set[ast.AST]] = {}


def _docstrings(path: Path) -> set[ast.AST]:
    if path not in _DOCSTRINGS:
        nodes: set[ast.AST] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                nodes.add(body[0].value)
        _DOCSTRINGS[path] = nodes
    return _DOCSTRINGS[path]


@pytest.mark.parametrize("dotted", sorted(_mentions_in_docs() | _mentions_in_messages()))
def test_every_mentioned_name_is_public_and_importable(dotted):
    assert not any(
        part.startswith("_") and not part.startswith("__") for part in dotted.split(".")
    ), f"{dotted} is a private path: export the name from a public package instead"
    _resolve(dotted)


def test_public_packages_list_their_exports_and_each_export_exists():
    for info in pkgutil.walk_packages(polytask.__path__, "polytask."):
        name = info.name
        if any(part.startswith("_") for part in name.split(".")) or name.endswith(".engine"):
            continue  # private modules, and the deprecated engine path
        module = importlib.import_module(name)
        assert info.ispkg, f"{name} is a public module: make it private (_{name.split('.')[-1]})"
        exported = getattr(module, "__all__", None)
        assert exported, f"{name} has no __all__"
        for item in exported:
            assert hasattr(module, item), f"{name}.__all__ lists {item}, which it lacks"


def test_the_old_engine_path_still_works_with_a_deprecation_warning():
    import sys

    sys.modules.pop("polytask.balancers.engine", None)
    with pytest.warns(DeprecationWarning, match="polytask.gradients"):
        engine = importlib.import_module("polytask.balancers.engine")
    from polytask.gradients import backward

    assert engine.backward is backward
    with pytest.warns(DeprecationWarning, match="moved to polytask.gradients.backward"):
        from polytask.balancers import backward as old
    assert old is backward


def test_argument_errors_name_the_problem_without_dumping_the_tensors():
    """Found by trying the Python API: a TaskData whose targets have fewer rows than x said so,
    then printed every tensor it was given (pydantic's input_value)."""

    x = torch.randn(50, 3)
    with pytest.raises(ValueError, match=r"targets must have 50 rows like x; got \{'a': 40\}") as e:
        TaskData(x, {"a": torch.randn(40)})
    assert "tensor(" not in str(e.value) and "input_value" not in str(e.value)
    with pytest.raises(ValueError, match="in_dim") as e:
        hard_sharing_mlp(in_dim=x, tasks=[])  # type: ignore[arg-type]
    assert "tensor(" not in str(e.value)
