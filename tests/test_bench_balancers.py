"""The balancer grid (benchmarks/balancers.py) end to end on Parkinsons new patients, in a
small form (2 seeds that each hold out other patients, 2 epochs, 2 balancers): it reads the
shared data set, so it skips, saying why, where that is absent."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "balancers.py"
PARKINSONS = ROOT.parent / "shared" / "datasets" / "parkinsons" / "parkinsons.csv.gz"


@pytest.mark.skipif(not PARKINSONS.is_file(), reason=f"the Parkinsons set is not at {PARKINSONS}")
def test_grid_writes_a_table_with_delta_m_and_a_plot(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "parkinsons-new-patient", "--seeds", "2", "--epochs", "2",
         "--balancers", "ew", "pcgrad", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "balancers_parkinsons_new_patient.md").read_text()
    assert "each seed its own split" in text and "commit " in text
    rows = dict(re.findall(r"^\| (.+?) \| ([\d.]+) ± [\d.]+ \|", text, flags=re.M))
    assert set(rows) == {"single-task (one model per task)", "MTL hard_sharing + ew",
                         "MTL hard_sharing + pcgrad"}  # fmt: skip
    assert all(2 < float(mae) < 20 for mae in rows.values())  # motor UPDRS MAE, points
    assert re.search(r"^\| MTL hard_sharing \+ pcgrad \|.*\| -?[\d.]+ ± [\d.]+ \| \d+ \|$", text,
                     flags=re.M)  # fmt: skip
    svg = (tmp_path / "balancers_parkinsons_new_patient.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and ">pcgrad<" in svg and "<text" in svg
    (tmp_path / "balancers_parkinsons_new_patient.svg").unlink()
    again = subprocess.run(
        [sys.executable, str(SCRIPT), "parkinsons-new-patient", "--replot", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    redrawn = (tmp_path / "balancers_parkinsons_new_patient.svg").read_text()
    assert ">pcgrad<" in redrawn and ">ew<" in redrawn  # from the table alone
