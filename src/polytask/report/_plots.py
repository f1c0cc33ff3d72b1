"""The report's plots: matplotlib figures (no pyplot state, no display) rendered to inline SVG.

Each figure's data marks (lines, heatmap cells) carry an element id with `series-`, which the
page's script checks were drawn."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

Series = tuple[str, Sequence[float], Sequence[float]]
"""(label, x values, y values) of one line."""

_RC: Any = {  # matplotlib's stubs type the keys as literals
    "svg.fonttype": "none",  # text as <text>, in the page's font: smaller, selectable
    "svg.hashsalt": "polytask-report",  # the same ids on every run: a reproducible file
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
VECTOR_CELLS = 30
"""Up to this many tasks a heatmap's cells are vector shapes; above, one inline bitmap."""
LEGEND_LINES = 12
"""Up to this many lines a plot has a legend (above, it would hide the plot)."""
_HEADER = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


@dataclass(frozen=True)
class Panel:
    """One axes of a figure: its lines, title and y label; `log` for a log y axis."""

    title: str
    series: Sequence[Series]
    ylabel: str = ""
    log: bool = False


def to_svg(fig: Figure, ids: str) -> str:
    """`fig` as an inline <svg> element (no XML header, doctype or metadata), its element ids
    prefixed with `ids` so that several figures can share one page."""
    buffer = io.StringIO()
    FigureCanvasSVG(fig)  # drawn by the SVG backend directly: no GUI backend, no pyplot
    with matplotlib.rc_context({"svg.hashsalt": _RC["svg.hashsalt"]}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = _METADATA.sub("", _HEADER.sub("", buffer.getvalue(), count=1))
    text = text.replace(' id="', f' id="{ids}').replace("url(#", f"url(#{ids}")
    return text.replace('href="#', f'href="#{ids}').strip()


def _points(xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def line_figure(panels: Sequence[Panel], ids: str, xlabel: str = "step") -> str:
    """Panels side by side, each a set of lines against `xlabel`, as SVG (ids: see `to_svg`)."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(4.2 * len(panels), 3.0))
        fig.subplots_adjust(left=0.15 / len(panels), right=0.98, bottom=0.16, top=0.9, wspace=0.32)
        for index, panel in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), index + 1)
            for number, (label, xs, ys) in enumerate(panel.series):
                x, y = _points(xs, ys)
                marker = "o" if len(x) <= 12 else None
                (line,) = ax.plot(x, y, label=label, marker=marker, markersize=3, linewidth=1.4)
                line.set_gid(f"series-{number}")  # the data marks the page's check looks for
            if panel.log and all(np.all(_points(*s[1:])[1] > 0) for s in panel.series):
                ax.set_yscale("log")
            ax.set_title(panel.title)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(panel.ylabel)
            ax.grid(alpha=0.3)
            if 1 < len(panel.series) <= LEGEND_LINES:
                ax.legend(fontsize=7, ncol=1 + len(panel.series) // 8)
        return to_svg(fig, ids)


def heatmap_figure(matrix: np.ndarray, tasks: Sequence[str], title: str, ids: str) -> str:
    """A K × K matrix (row i, column j) in a diverging colour map centred on 0, as SVG; the
    diagonal does not set the colour scale, and values are written in cells up to K = 12."""
    k = len(tasks)
    values = np.asarray(matrix, dtype=float)
    off = values[~np.eye(k, dtype=bool)]
    off = off[np.isfinite(off)]
    limit = float(np.abs(off).max()) if off.size and np.abs(off).max() > 0 else 1.0
    size = min(2.2 + 0.45 * k, 12.0)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(size + 1.4, size), layout="constrained")
        ax = fig.add_subplot()
        cells = np.ma.masked_invalid(values)
        if k <= VECTOR_CELLS:  # one vector cell per pair
            image: Any = ax.pcolormesh(cells, cmap="RdBu", vmin=-limit, vmax=limit)
            ax.invert_yaxis()
        else:  # one inline bitmap: K² vector cells would make the page heavy
            extent = (0.0, float(k), float(k), 0.0)
            image = ax.imshow(cells, cmap="RdBu", vmin=-limit, vmax=limit, extent=extent)
        image.set_gid("series-0")
        ax.set_aspect("equal")
        fig.colorbar(image, ax=ax, shrink=0.8)
        if k <= 40:
            ax.set_xticks(np.arange(k) + 0.5, list(tasks), rotation=90)
            ax.set_yticks(np.arange(k) + 0.5, list(tasks))
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        if k <= 12:
            for (i, j), v in np.ndenumerate(values):
                if math.isfinite(v):
                    ax.text(j + 0.5, i + 0.5, f"{v:.2g}", ha="center", va="center", fontsize=7)
        ax.set_title(title)
        return to_svg(fig, ids)
