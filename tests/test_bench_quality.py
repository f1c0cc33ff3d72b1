"""The quality benchmark (benchmarks/quality.py) end to end on one School split, in its quick
form: it reads the shared data set, so it skips, saying why, where that is absent."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "quality.py"
SCHOOL = ROOT.parent / "shared" / "datasets" / "school" / "school.csv.gz"


@pytest.mark.slow
@pytest.mark.skipif(not SCHOOL.is_file(), reason=f"the School data set is not at {SCHOOL}")
def test_quick_school_suite_writes_a_table_beside_the_classic_rows(tmp_path):
    out = tmp_path / "school.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--suite", "school", "--splits", "1", "--quick",
         "--out", str(out), "--models", "hard_sharing (64-64), EW", "coupling by CV"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Quality: school") and "Commit `" in text
    rows = dict(re.findall(r"^\| (.+?) \| ([-\d.]+) ± [\d.]+ \|", text, flags=re.M))
    assert set(rows) == {
        "classic: linear per task",
        "classic: boosting, school_id as a feature",
        "classic: pooled linear (school_id ignored)",
        "classic: forest per task",
        "polytask hard_sharing (64-64), EW",
        "polytask mean_regularised, linear, L-BFGS, coupling by CV",
    }  # the models asked for, and every classic one
    assert "coupling by CV: mean_regularised" in text and "(chosen per split: [coupling" in text
    assert 25 < float(rows["classic: linear per task"]) < 40  # explained variance, %
    assert 20 < float(rows["polytask hard_sharing (64-64), EW"]) < 45
    assert "pooled ridge + free school intercepts: 37.1 ± 0.9" in text


def test_a_partial_rerun_keeps_the_other_rows_marked_and_sorted():
    sys.path.insert(0, str(SCRIPT.parent))
    from quality import merge

    head = "# Quality: school\n\nCommit `{}`; ...\n\n| model | ev | t | s |\n|---|---|---|---|\n"
    old = (head.format("abc1234") + "| polytask a | 37.00 ± 0.50 | 9.9 ± 0.1 | 5 |\n"
           "| classic: b | 33.00 ± 1.00 | 10 ± 0.1 | 1 |\n"
           "\nSettings of the polytask models:\n\n- polytask a: x\n")  # fmt: skip
    new = (head.format("def5678") + "| polytask c | 35.00 ± 0.20 | 9.9 ± 0.1 | 5 |\n"
           "\nSettings of the polytask models:\n\n- polytask c: y\n")  # fmt: skip
    text = merge(old, new, higher_first=True)
    rows = re.findall(r"^\| (.+?) \| ([-\d.]+) ±", text, flags=re.M)
    assert [n for n, _ in rows] == ["polytask a (kept from `abc1234`)", "polytask c",
                                    "classic: b (kept from `abc1234`)"]  # fmt: skip
    assert "Commit `def5678`" in text
    assert "- polytask a: x" in text and "- polytask c: y" in text
    assert merge(old, old, higher_first=True) == old  # a full rerun keeps nothing
    low = merge(old, new, higher_first=False)  # MAE: the lowest first
    assert re.findall(r"^\| (.+?) \|", low, flags=re.M)[1] == "classic: b (kept from `abc1234`)"
    again = merge(text, new.replace("def5678", "9999999"), higher_first=True)  # a second rerun
    names = re.findall(r"^\| (.+?) \| [-\d.]+ ±", again, flags=re.M)
    assert names == ["polytask a (kept from `abc1234`)", "polytask c",
                     "classic: b (kept from `abc1234`)"]  # fmt: skip
    assert again.count("- polytask a: x") == 1


def test_blend_figures_are_the_pooled_and_task_mean_errors_by_hand():
    sys.path.insert(0, str(SCRIPT.parent))
    import numpy as np
    from quality import _apply, _figures

    from polytask.app import ModelConfig

    a = (np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]))  # errors 0, 1, 2
    b = (np.array([5.0]), np.array([1.0]))  # error 4
    pooled, task_mean = _figures({"a": a, "b": b}, "mae")
    assert pooled == pytest.approx(7 / 4) and task_mean == pytest.approx((1 + 4) / 2)
    c = (np.array([0.0, 2.0]), np.array([0.0, 4.0]))  # errors 0, 2; targets' squares about
    ev, rmse = _figures({"c": c}, "rmse")  # their mean 2 + 2 = 8
    assert ev == pytest.approx(100 * (1 - 4 / 8)) and rmse == pytest.approx(np.sqrt(2))
    model, log, weight = _apply(ModelConfig("multilevel", {"hidden": ()}),
                                {"covariance": "full", "log": True, "forest": 0.25})  # fmt: skip
    assert model.params == {"hidden": (), "covariance": "full"} and log and weight == 0.25
