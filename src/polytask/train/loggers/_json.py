"""The history of evaluations as `metrics.json` in the run folder (always on with a run folder)."""

from __future__ import annotations

import json
from pathlib import Path

from polytask.train.loggers._base import HistoryFile


class JSONLogger(HistoryFile):
    """`RUN_DIR/metrics.json`: the list of evaluation logs, one object per evaluation."""

    file_name = "metrics.json"

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.rows, indent=1))
