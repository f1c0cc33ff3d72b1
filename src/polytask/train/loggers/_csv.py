"""The history of evaluations as `metrics.csv` in the run folder (always on with a run folder)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from polytask.train.loggers._base import HistoryFile


class CSVLogger(HistoryFile):
    """`RUN_DIR/metrics.csv`: one row per evaluation, a column per log key (the union over the
    rows, in order of first appearance)."""

    file_name = "metrics.csv"

    def write(self, path: Path) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def append(self, path: Path, row: Mapping[str, float]) -> bool:
        earlier = {k for r in self.rows[:-1] for k in r}
        if not earlier.issuperset(row):  # a new column: the header changes
            return False
        columns = list(dict.fromkeys(k for r in self.rows[:-1] for k in r))
        with path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=columns).writerow(row)
        return True
