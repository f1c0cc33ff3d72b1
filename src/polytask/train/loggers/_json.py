"""The history of evaluations as `metrics.json` in the run folder (always on with a run folder)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from polytask._files import json_text
from polytask.train.loggers._base import HistoryFile


class JSONLogger(HistoryFile):
    """`RUN_DIR/metrics.json`: the list of evaluation logs, one object per evaluation."""

    file_name = "metrics.json"

    def write(self, path: Path) -> None:
        path.write_text(json_text(self.rows, indent=1))

    def append(self, path: Path, row: Mapping[str, float]) -> bool:
        item = json_text([row], indent=1)[2:-2]  # as `write` indents it inside the list
        with path.open("r+b") as f:
            f.seek(-2, 2)
            if f.read(2) != b"\n]":
                return False
            f.seek(-2, 2)
            f.write(f",\n{item}\n]".encode())
        return True
