"""The serving-cost benchmark (benchmarks/serving.py) end to end, in its --quick form."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the benchmark serves over HTTP (the serve extra)")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serving.py"


@pytest.mark.slow
def test_quick_serving_benchmark_writes_sensible_results(tmp_path):
    out = tmp_path / "serving.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Serving cost")
    assert "| 2 | in-process (torch) | 1 | 1 model |" in text
    assert "| 2 | HTTP | 64 | 2 models |" in text
    assert "## Ratios (K models / one model)" in text
    result = json.loads(out.with_suffix(".json").read_text())
    rows = result["rows"]
    paths = {r["path"] for r in rows}
    assert paths == {"in-process (torch)", "HTTP", "HTTP, K requests concurrent"}
    assert len(rows) == 3 * 2 * 2  # paths × sides × request sizes
    for r in rows:
        assert r["k"] == 2 and r["n"] >= 10
        assert 0 < r["p50_ms"] <= r["p99_ms"] < 60_000
        assert r["rows_per_s"] > 0
        assert 100 < r["rss_mb"] < 20_000  # a process with torch, or two
        if r["side"] == "k":
            assert r["cost_ratio"] > 0
    in_process = [r for r in rows if r["path"] == "in-process (torch)"]
    for r in in_process:
        assert 0 < r["rss_increment_mb"] < r["rss_mb"]
        assert r["param_bytes"] > 0
    one, two = (
        next(r for r in in_process if r["side"] == side and r["rows"] == 1) for side in ("one", "k")
    )
    assert two["param_bytes"] > one["param_bytes"]  # two trunks against one
    http = [r for r in rows if r["path"] == "HTTP" and r["rows"] == 1]
    one, two = (next(r for r in http if r["side"] == side) for side in ("one", "k"))
    assert two["rss_mb"] > 1.5 * one["rss_mb"]  # two server processes against one
