import math

import pytest

from polytask import Task
from polytask.analysis import ComparisonResult, delta_m


def test_delta_m_hand_computed():
    # acc 0.8 -> 0.88 is +10%; rmse 2.0 -> 2.5 is 25% worse -> mean -7.5%
    dm = delta_m({"a": 0.88, "r": 2.5}, {"a": 0.8, "r": 2.0}, {"a": True, "r": False})
    assert dm == pytest.approx(-7.5)
    assert delta_m({"r": 1.5}, {"r": 2.0}, {"r": False}) == pytest.approx(25.0)


def test_delta_m_leaves_out_a_zero_baseline_with_a_warning():
    """BLEU 0 after a short run must not throw a whole comparison away."""
    with pytest.warns(UserWarning, match="undefined"):
        dm = delta_m({"r": 1.0, "a": 0.9}, {"r": 0.0, "a": 0.6}, {"r": False, "a": True})
    assert dm == pytest.approx(50.0)  # the other task only: +0.3 / 0.6
    with pytest.warns(UserWarning, match="undefined"):
        assert math.isnan(delta_m({"r": 1.0}, {"r": 0.0}, {"r": False}))


def test_summary_mean_and_std_over_seeds():
    tasks = [Task("a", "binary"), Task("r", "regression")]
    res = ComparisonResult(tasks)
    res.add(0, {"a": 0.9, "r": 1.0}, {"a": 0.8, "r": 2.0})
    res.add(1, {"a": 0.7, "r": 3.0}, {"a": 0.8, "r": 2.0})
    rows = {r["task"]: r for r in res.summary()}
    assert rows["a"]["mtl_mean"] == pytest.approx(0.8)
    assert rows["a"]["mtl_std"] == pytest.approx(math.sqrt(0.02))
    assert rows["r"]["delta_pct_mean"] == pytest.approx(0.0)
    assert res.delta_m_per_seed() == pytest.approx([(12.5 + 50) / 2, (-12.5 - 50) / 2])
