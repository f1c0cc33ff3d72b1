"""The QM9 suite (benchmarks/qm9.py) end to end on a few hundred molecules: it reads the pip
package qm9pack's files, so it skips, saying why, where that is not installed. Its docs table
(the short summary between markers) from kept runs, without the package."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "qm9.py"
sys.path.insert(0, str(SCRIPT.parent))

import qm9  # noqa: E402


def _runs() -> dict[tuple[int, str], dict[str, float]]:
    """Two seeds of single-task models (MAE 1 on seed 0, 2 on seed 1), EW on both seeds at 1.5
    times them (Δm −50) and UW on seed 0 only, at 1.1 times them (Δm −10)."""
    runs: dict[tuple[int, str], dict[str, float]] = {}
    for seed, scale in ((0, 1.0), (1, 2.0)):
        for name in qm9.TARGETS:
            runs[(seed, f"{qm9.SINGLE_EACH} {name}")] = {name: scale, "seconds": 10.0}
        runs[(seed, "MTL hard_sharing + ew")] = {
            **{name: 1.5 * scale for name in qm9.TARGETS},
            "seconds": 5.0 + seed,
        }
    runs[(0, "MTL hard_sharing + uncertainty")] = {
        **{name: 1.1 for name in qm9.TARGETS},
        "seconds": 4.0,
    }
    return runs


def test_docs_summary_ranks_by_delta_m_and_counts_each_rows_seeds(tmp_path):
    labels = ["MTL hard_sharing + ew", "MTL hard_sharing + uncertainty"]
    text = qm9.summary(qm9.rows_of(_runs(), [0, 1], labels))
    lines = text.splitlines()
    assert lines[0].startswith("| model | seeds | mu (D) |") and lines[1] == "|---" * 9 + "|"
    single, uw, ew = ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    assert single[:3] == ["single-task", "2", "1.5 ± 0.7"] and single[-1] == "110"
    assert uw[:3] == ["UW", "1", "1.1"] and uw[-2:] == ["−10.0", "4"]  # one seed: no spread
    assert ew[:3] == ["EW", "2", "2.25 ± 1"] and ew[-2:] == ["−50.0 ± 0.0", "6"]

    doc = tmp_path / "guide.md"
    doc.write_text("before\n<!-- qm9-full -->\nold table\n<!-- /qm9-full -->\nafter\n")
    qm9.fill_docs(doc, "qm9-full", text)
    assert doc.read_text() == f"before\n<!-- qm9-full -->\n\n{text}\n<!-- /qm9-full -->\nafter\n"
    qm9.fill_docs(doc, "qm9-full", text)  # again: the same file, nothing doubled
    assert doc.read_text().count("| EW |") == 1
    with pytest.raises(SystemExit, match=re.escape("no <!-- qm9-quick --> ... <!-- /qm9-quick")):
        qm9.fill_docs(doc, "qm9-quick", text)


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
