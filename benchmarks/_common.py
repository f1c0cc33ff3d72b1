"""What the benchmark scripts share: the commit their results name, and plots as SVG files
(text kept as text, the same ids on every run: the same numbers write the same file)."""

from __future__ import annotations

import io
import sys
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


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from tables_common import commit  # noqa: E402  (one home: read once, when the run starts)

__all__ = ["commit", "svg"]
