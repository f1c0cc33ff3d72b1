"""The report rendered in headless Chromium: its own script marks each plot drawn when its SVG
has a size on the page and drawn data marks; the dumped DOM is read back. Skipped where no
browser is installed (the structural checks in test_report.py run everywhere)."""

import subprocess
from pathlib import Path

import pytest

from tests.report.structure import parse

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _render(page: Path, profile: Path) -> str:
    """The DOM after load, as Chromium dumps it."""
    done = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(
    not CHROMIUM.is_file(), reason=f"no browser at {CHROMIUM}: apt install chromium"
)
def test_every_plot_is_drawn_in_a_browser(trained, tmp_path):
    page = trained[0] / "report.html"
    plots = [p.key for p in parse(page.read_text()).plots]
    dom = parse(_render(page, tmp_path / "profile"))
    assert [p.key for p in dom.plots] == plots and len(plots) == 9
    not_drawn = [p.key for p in dom.plots if p.drawn != "true"]
    assert not_drawn == []
    assert dom.body["data-plots-drawn"] == dom.body["data-plots"] == str(len(plots))
