"""The QM9 suite (benchmarks/qm9.py) end to end on a few hundred molecules: it reads the pip
package qm9pack's files, so it skips, saying why, where that is not installed."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "qm9.py"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack is not installed")
def test_small_qm9_run_writes_eleven_properties_and_delta_m(tmp_path):
    out = tmp_path / "qm9.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds", "1", "--epochs", "2", "--rows", "400", "100",
         "100", "--balancers", "ew", "--out", str(out)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "400 / 100 / 100 molecules" in text and "Nash-MTL" in text
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert header.count("MAE") == 11
    ew = next(line for line in text.splitlines() if line.startswith("| MTL hard_sharing + ew"))
    cells = [c.strip() for c in ew.strip("|").split("|")]
    assert re.fullmatch(r"-?[\d.]+ ± [\d.]+", cells[-2])  # Δm
    mu = float(cells[1].split(" ± ")[0])
    assert 0.1 < mu < 3.0  # dipole moment MAE in Debye: below its spread (1.5 D)

    # the same settings again with one more balancer: only that one trains, the rest is kept
    again = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds", "1", "--epochs", "2", "--rows", "400", "100",
         "100", "--balancers", "ew", "uncertainty", "--out", str(out)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    trained = [line for line in again.stdout.splitlines() if line.startswith("seed ")]
    assert len(trained) == 1 and trained[0].startswith("seed 0 uncertainty"), trained
    text = out.read_text()
    assert ew in text.splitlines()  # the kept model's row as it was
    assert any(line.startswith("| MTL hard_sharing + uncertainty") for line in text.splitlines())
    kept = (tmp_path / "qm9.runs.csv").read_text().splitlines()
    assert len(kept) == 1 + 11 + 2  # header, the 11 single-task models, EW and UW

    # another seed beside: only seed 1 trains, and the table holds both seeds' runs
    beside = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds", "2", "--seed-from", "1", "--epochs", "2",
         "--rows", "400", "100", "100", "--balancers", "ew", "--out", str(out)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert beside.returncode == 0, beside.stderr[-3000:]
    trained = [line for line in beside.stdout.splitlines() if line.startswith("seed ")]
    assert len(trained) == 12 and all(line.startswith("seed 1 ") for line in trained), trained
    text = out.read_text()
    assert "seeds [0, 1]" in text
    row = next(line for line in text.splitlines() if line.startswith("| MTL hard_sharing + ew"))
    assert row != ew  # its mean now over both seeds

    # the table alone, from the kept runs: nothing trains, every kept balancer is listed
    table = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds", "2", "--epochs", "2", "--rows", "400", "100",
         "100", "--balancers", "ew", "uncertainty", "--table-only", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr[-3000:]
    assert not [line for line in table.stdout.splitlines() if line.startswith("seed ")]
    lines = out.read_text().splitlines()
    assert row in lines and any(
        line.startswith("| MTL hard_sharing + uncertainty") for line in lines
    )
