"""What the benchmark scripts share: the commit their results name, and plots as SVG files
(text kept as text, the same ids on every run: the same numbers write the same file)."""

from __future__ import annotations

import functools
import io
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

RC: Any = {"svg.fonttype": "none", "svg.hashsalt": "polytask-benchmarks", "font.size": 9}


def svg(draw: Callable[[Figure], None], size: tuple[float, float] = (6.4, 4.0)) -> str:
    """A figure of `size` inches that `draw` fills, rendered to SVG text."""
    with matplotlib.rc_context(RC):
        figure = Figure(figsize=size)
        draw(figure)
        figure.tight_layout()
        out = io.StringIO()
        FigureCanvasSVG(figure).print_svg(out, metadata={"Date": None})
    return out.getvalue()


@functools.cache
def commit() -> str:
    """The repository's short commit hash when the benchmark started ("unknown" outside a git
    checkout; "+changes" where the code differed from it): read once, at import, so that a
    commit made while a long run goes on is not the one its results name."""
    here = Path(__file__).parent
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False, cwd=here)  # fmt: skip
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                              "src", "benchmarks"], capture_output=True, text=True, check=False,
                             cwd=here.parent)  # fmt: skip
    head = done.stdout.strip()
    return head + ("+changes" if head and changed.stdout.strip() else "") if head else "unknown"


commit()
