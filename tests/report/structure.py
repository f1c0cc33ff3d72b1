"""A structural check of a report page with the standard library's HTML parser: its sections,
its plots and what each plot's SVG holds, and every resource it would load."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

LOADS = ("src", "href", "xlink:href", "poster", "data", "action", "srcset")


@dataclass
class Plot:
    key: str
    drawn: str | None = None
    svgs: int = 0
    paths: int = 0
    marks: int = 0
    """Paths, markers or images inside an element whose id holds `series-` (the data)."""


@dataclass
class Page:
    sections: dict[str, str] = field(default_factory=dict)
    """Section id → class (present or absent)."""
    plots: list[Plot] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    """Every src/href-like attribute value, and each <link>/<iframe>/<object> tag."""
    scripts: int = 0
    body: dict[str, str] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, in plot figure, in series)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        in_plot = bool(self.stack and self.stack[-1][1])
        in_series = bool(self.stack and self.stack[-1][2])
        if tag == "section":
            self.page.sections[a.get("id", "")] = a.get("class", "")
        if tag == "body":
            self.page.body = a
        if tag == "script":
            self.page.scripts += 1
        if tag in ("link", "iframe", "object", "embed", "base"):
            self.page.resources.append(f"<{tag}>")
        self.page.resources += [a[k] for k in LOADS if k in a]
        if tag == "figure" and "plot" in a.get("class", "").split():
            self.page.plots.append(Plot(a.get("data-plot", ""), a.get("data-drawn")))
            in_plot = True
        if in_plot:
            plot = self.page.plots[-1]
            plot.svgs += tag == "svg"
            plot.paths += tag == "path"
            in_series = in_series or "series-" in a.get("id", "")
            plot.marks += in_series and tag in ("path", "use", "image")
        if tag not in ("path", "use", "meta", "br", "img", "input", "stop", "rect", "image"):
            self.stack.append((tag, in_plot, in_series))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if self.stack and self.stack[-1][0] == tag:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if any(t == tag for t, _, _ in self.stack):
            while self.stack.pop()[0] != tag:
                pass

    def handle_data(self, data: str) -> None:
        if not (self.stack and self.stack[-1][0] in ("script", "style")):
            self.page.text.append(data)


def parse(html: str) -> Page:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser.page


def external(page: Page) -> list[str]:
    """What the page would fetch from elsewhere: anything but in-page anchors and data: URIs."""
    return [r for r in page.resources if not (r.startswith("#") or r.startswith("data:"))]
