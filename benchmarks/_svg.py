"""Benchmark plots as SVG files: text kept as text (small, selectable) and the same ids on
every run, so that a rerun with the same numbers writes the same file."""

from __future__ import annotations

import io
from collections.abc import Callable
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
