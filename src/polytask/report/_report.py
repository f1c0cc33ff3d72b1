"""Build a run folder's report from its sections and write it as one HTML file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from polytask._files import write_text_atomic
from polytask._version import __version__
from polytask.report._html import page, paragraph
from polytask.report._run import RunData, read_run
from polytask.report._sections import SECTIONS, Section

REPORT_FILE = "report.html"
"""The report's name in its run folder."""


@dataclass(frozen=True)
class Report:
    """A run's report: its sections in page order (present or saying why absent)."""

    run: RunData
    sections: tuple[Section, ...]

    @property
    def plots(self) -> tuple[str, ...]:
        """Every plot's `data-plot` key, in page order."""
        return tuple(key for s in self.sections for key in s.plots)

    @property
    def absent(self) -> tuple[str, ...]:
        """The titles of the sections whose data the folder lacks."""
        return tuple(s.title for s in self.sections if s.absent is not None)

    def html(self) -> str:
        """The whole page: no external resource, every text escaped."""
        tasks = self.run.tasks
        size = self.run.size
        model = f"model: {size.model}; " if size is not None and size.model else ""
        intro = paragraph(
            f"Run folder {self.run.folder.resolve()}; {model}tasks: "
            f"{', '.join(tasks) or 'none found'}; {len(self.plots)} plots. Written by polytask "
            f"{__version__}."
        )
        if self.absent:
            intro += paragraph("Not in this folder: " + ", ".join(self.absent) + ".", "absent")
        nav = [(s.key, s.title, s.absent is None) for s in self.sections]
        body = "\n".join(s.html() for s in self.sections)
        return page(f"polytask report: {self.run.folder.resolve().name}", intro, nav, body)


def build_report(run_dir: str | Path, measure_size: bool = True) -> Report:
    """The report of `run_dir` (a folder of `polytask train` or `compare`); refuses a folder
    with nothing of a run. `measure_size`: load model.pt to count its parameters."""
    run = read_run(run_dir, measure_size=measure_size)
    return Report(run, tuple(section(run) for section in SECTIONS))


def write_report(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write the report of `run_dir` to `path` (default RUN_DIR/report.html), atomically;
    returns the path written."""
    report = build_report(run_dir)
    out = Path(path) if path is not None else Path(run_dir) / REPORT_FILE
    write_text_atomic(out, report.html())
    return out
