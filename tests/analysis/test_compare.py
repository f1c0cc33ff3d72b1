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


def test_a_task_no_model_learns_is_called_out_against_the_constant_prediction():
    """Noise task: every model within 2% of the way from the constant to a perfect score."""
    tasks = [Task("a", "binary"), Task("r", "regression"), Task("n", "regression")]
    res = ComparisonResult(tasks, constant={"a": 0.5, "r": 2.0, "n": 5.0})
    res.add(0, {"a": 0.505, "r": 1.0, "n": 5.05}, {"a": 0.508, "r": 1.2, "n": 5.02})
    res.classic = {"linear per task": {"a": 0.509, "r": 1.1, "n": 4.95}}
    # a: best 0.509 closes 0.009 / 0.5 = 1.8% of the way to AUC 1; n: 0.05 / 5.0 = 1%
    assert set(res.no_signal()) == {"a", "n"}
    assert "constant 5" in res.no_signal()["n"] and "linear per task 4.95" in res.no_signal()["n"]
    res.classic = {"linear per task": {"a": 0.511, "r": 1.1, "n": 4.85}}  # 2.2% and 3%
    assert res.no_signal() == {}
    rows = {r["task"]: r for r in res.summary()}
    assert rows["n"]["constant"] == 5.0 and rows["n"]["no_signal"] is None
    assert ComparisonResult(tasks).no_signal() == {}  # no constant measured: nothing said


def test_many_tasks_from_a_column_count_the_ones_no_model_learns_in_one_line():
    from polytask.cli._render import MANY_TASKS, comparison_table, make_console

    n = MANY_TASKS + 5
    tasks = [Task(f"s{i}", "regression", target="y", where={"school": i}) for i in range(n)]
    res = ComparisonResult(tasks, constant={t.name: 2.0 for t in tasks})
    noise = {"s3", "s7"}  # within 2% of the constant; the others 10% better
    res.add(0, *({t.name: 1.99 if t.name in noise else 1.8 for t in tasks} for _ in range(2)))
    console = make_console()
    with console.capture() as captured:
        console.print(comparison_table(res))
    assert "≈ 2 of them (s3, s7): no model predicts better than a constant" in captured.get()
