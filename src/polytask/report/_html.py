"""HTML building blocks of the report: escaped text, tables, plot figures and the page itself
(inline CSS and script; no external resource of any kind)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

_CODE = re.compile(r"`([^`<>]+)`")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2327;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:1.2em 1.5em 3em}
h1{font-size:1.6em;margin:.4em 0 .2em}h2{font-size:1.25em;margin:1.8em 0 .5em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
nav ul{display:flex;flex-wrap:wrap;gap:.3em 1.2em;padding:0;list-style:none}
nav a{color:#2456a6;text-decoration:none}nav li.absent a{color:#888}
table{border-collapse:collapse;margin:.6em 0;background:#fff}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#f0f2f4}.text{text-align:left}
tr.total td{font-weight:600;border-top:2px solid #999}
figure.plot{margin:.8em 0;padding:.4em;background:#fff;border:1px solid #e4e4e4;
display:inline-block;max-width:100%}
figure.plot svg{max-width:100%;height:auto;display:block}
figcaption{font-size:.9em;color:#555;margin-top:.3em;max-width:60em}
p.absent{color:#6b5900;background:#fff8d6;border-left:3px solid #e6c200;padding:.4em .7em}
p.note{color:#555;font-size:.92em}.warn{color:#a33}
code{background:#eef0f2;padding:0 .25em;border-radius:3px}
"""

SCRIPT = """
(function () {
  function drawn(svg) {
    var box = svg.getBoundingClientRect();
    if (!(box.width > 0 && box.height > 0)) return false;
    var marks = svg.querySelectorAll(
      '[id*="series-"] path, [id*="series-"] use, [id*="series-"] image');
    for (var i = 0; i < marks.length; i++) {
      var b = marks[i].getBBox(), r = marks[i].getBoundingClientRect();
      if ((b.width > 0 || b.height > 0) && (r.width > 0 || r.height > 0)) return true;
    }
    return false;
  }
  function check() {
    var plots = document.querySelectorAll("figure.plot"), n = 0;
    for (var i = 0; i < plots.length; i++) {
      var svg = plots[i].querySelector("svg"), ok = svg !== null && drawn(svg);
      plots[i].setAttribute("data-drawn", ok ? "true" : "false");
      if (ok) n++;
    }
    document.body.setAttribute("data-plots", String(plots.length));
    document.body.setAttribute("data-plots-drawn", String(n));
  }
  check();
  window.addEventListener("load", check);
})();
"""
"""Marks each plot `data-drawn="true"` once its SVG has a rendered size and at least one drawn
data mark (a path, marker or image inside an element whose id holds `series-`), and the page's
`data-plots-drawn` with their number: what the headless-browser test reads back."""


def esc(text: object) -> str:
    """`text` as HTML text or attribute value."""
    return html.escape(str(text), quote=True)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    total: Sequence[object] | None = None,
    text_columns: int = 1,
) -> str:
    """An HTML table of escaped cells, the first `text_columns` left-aligned and the others (the
    numbers) right-aligned; `total`: a last, emphasised row (e.g. Δm)."""

    def cells(row: Sequence[object], tag: str) -> str:
        left = ' class="text"'
        return "".join(
            f"<{tag}{left if i < text_columns else ''}>{esc(c)}</{tag}>" for i, c in enumerate(row)
        )

    body = [f"<tr>{cells(row, 'td')}</tr>" for row in rows]
    if total is not None:
        body.append(f'<tr class="total">{cells(total, "td")}</tr>')
    head = cells(headers, "th")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(key: str, svg: str, caption: str) -> str:
    """A plot: its inline SVG (trusted: made by matplotlib) under a stable `data-plot` key."""
    return (
        f'<figure class="plot" data-plot="{esc(key)}">{svg}'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def paragraph(text: str, cls: str = "note") -> str:
    """`text` escaped, its `backquoted` spans (commands, file names) set as code."""
    content = _CODE.sub(r"<code>\1</code>", esc(text))
    return f'<p class="{esc(cls)}">{content}</p>'


def page(title: str, intro: str, nav: Sequence[tuple[str, str, bool]], body: str) -> str:
    """The whole document; `nav`: (anchor, title, present) per section."""
    links = "".join(
        f'<li class="{"present" if present else "absent"}"><a href="#{esc(anchor)}">'
        f"{esc(name)}{'' if present else ' (absent)'}</a></li>"
        for anchor, name, present in nav
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
        f"<body><main><h1>{esc(title)}</h1>{intro}<nav><ul>{links}</ul></nav>\n{body}\n"
        f"</main><script>{SCRIPT}</script></body></html>\n"
    )
