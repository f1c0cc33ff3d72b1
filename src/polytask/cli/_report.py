"""`polytask report RUN_DIR`, and the report `train` and `compare` write when they finish.

Only the standard library is imported up front (as in `_main`): the report's modules load when
a report is written."""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

Command = Callable[[argparse.Namespace, Console], None]
REPORTING = ("train", "compare")
"""The commands that write RUN_DIR/report.html when they finish (unless --no-report)."""

log = logging.getLogger("polytask.report")


def cmd_report(args: argparse.Namespace, console: Console) -> None:
    """Write the report of a run folder; print the path written."""
    from polytask.report import REPORT_FILE, write_report

    folder = Path(args.target)
    if folder.is_file() and folder.suffix in (".json", ".csv", ".pt"):  # a file of the run
        folder = folder.parent
    out = Path(args.out) if args.out else folder / REPORT_FILE
    if out.is_dir():
        raise ValueError(f"-o {out} is a folder: give a file name, e.g. {out / REPORT_FILE}")
    if out.exists() and out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(  # a run's results or a config would be replaced by the report
            f"-o {out} exists and is not an HTML file: the report would replace it; give a "
            f"new .html path, e.g. {out.with_suffix('.html')}"
        )
    args.run_dir = out.parent  # where it writes, for the messages
    path = write_report(folder, out)
    console.print(str(path), soft_wrap=True, highlight=False)


def automatic_report(folder: str | Path) -> Path | None:
    """The report `train` and `compare` write when they finish (`None`: none written)."""
    from polytask.report import write_report

    return write_report(folder)


def with_report(command: Command) -> Command:
    """`command`, then the report of its run folder (`args.run_dir`) unless --no-report; a
    report that fails is a warning, never the command's failure."""

    @functools.wraps(command)
    def run(args: argparse.Namespace, console: Console) -> None:
        command(args, console)
        folder = getattr(args, "run_dir", None)
        if getattr(args, "no_report", False) or folder is None:
            return
        try:
            path = automatic_report(folder)
        except Exception as err:  # the run itself succeeded: keep its exit status
            log.warning("no report written for %s: %s", folder, err)
            return
        if path is None:
            return
        console.print(f"report: {path}", soft_wrap=True, highlight=False)

    return run


def add_report_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `report` command; and --no-report on the `train` and `compare` parsers already in
    `sub`, whose commands then write a report when they finish."""
    for name in REPORTING:
        parser: argparse.ArgumentParser = sub.choices[name]
        parser.add_argument(
            "--no-report",
            action="store_true",
            help="do not write report.html into the run folder at the end",
        )
        parser.set_defaults(func=with_report(parser.get_default("func")))
    report = sub.add_parser(
        "report",
        parents=[common],
        help="one self-contained HTML page of a run: curves, weights, conflict, MTL vs single-task",
    )
    report.add_argument("target", help="run folder of `polytask train` or `polytask compare`")
    report.add_argument("-o", "--out", help="the HTML file to write (default RUN_DIR/report.html)")
    report.set_defaults(func=cmd_report)
    return report
