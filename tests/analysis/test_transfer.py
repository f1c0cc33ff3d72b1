import json
import math

import numpy as np
import pytest

from polytask import Task
from polytask.analysis import ComparisonResult, transfer_test


def test_a_consistent_drop_is_flagged_with_the_hand_computed_p_value():
    # Relative changes -10%, -20%, -30%: mean -0.2, sd 0.1, t = -0.2 / (0.1 / √3) = -2√3 with
    # 2 degrees of freedom, where the t CDF is 1/2 + t / (2 √(2 + t²)): p = 1/2 − √(3/14).
    golden = 0.5 - math.sqrt(3 / 14)  # 0.03709
    up = transfer_test("acc", [0.9, 0.8, 0.7], [1.0, 1.0, 1.0], higher_is_better=True)
    down = transfer_test("rmse", [2.2, 2.4, 2.6], [2.0, 2.0, 2.0], higher_is_better=False)
    for test in (up, down):
        assert test.p_value == pytest.approx(golden, rel=1e-9)
        assert test.flagged and test.reason is None
        assert test.mean_change_pct == pytest.approx(-20.0)
        assert any("upgrad" in s for s in test.suggestions)
        assert any("--groups auto" in s for s in test.suggestions)
        assert any("tower" in s for s in test.suggestions)
    # At alpha 0.01 the same drop is not enough.
    assert not transfer_test("acc", [0.9, 0.8, 0.7], [1.0] * 3, True, alpha=0.01).flagged


def test_two_seeds_hand_computed():
    # Changes -10%, -30%: t = -0.2 / (0.1414 / √2) = -2 with 1 degree of freedom (Cauchy):
    # p = 1/2 + atan(-2) / π.
    test = transfer_test("r", [1.1, 1.3], [1.0, 1.0], higher_is_better=False)
    assert test.p_value == pytest.approx(0.5 - math.atan(2) / math.pi, rel=1e-9)
    assert not test.flagged  # 0.148: two seeds that far apart are not evidence


def test_quiet_on_noise_and_on_improvements():
    stl = [0.80, 0.81, 0.79, 0.80, 0.82]
    noise = transfer_test("a", [0.81, 0.80, 0.80, 0.79, 0.83], stl, True)
    better = transfer_test("a", [0.85, 0.88, 0.84, 0.86, 0.90], stl, True)
    assert noise.p_value is not None and noise.p_value > 0.2 and not noise.flagged
    assert better.p_value is not None and better.p_value > 0.99 and not better.flagged
    assert noise.suggestions == better.suggestions == ()


def test_a_consistent_drop_over_many_noisy_seeds_fires():
    rng = np.random.default_rng(0)
    stl = 1.0 + 0.05 * rng.standard_normal(8)
    mtl = stl * (1 + 0.05 + 0.02 * rng.standard_normal(8))  # rmse 5% worse, noisy
    assert transfer_test("r", mtl, stl, higher_is_better=False).flagged


@pytest.mark.parametrize(
    ("mtl", "stl", "reason"),
    [
        ([0.7], [0.8], "needs at least 2 seeds"),
        ([0.7, 0.7, 0.7], [0.8, 0.8, 0.8], "every seed changed by the same amount"),
        ([0.7, math.nan], [0.8, 0.8], "undefined in some seed"),
        ([0.7, 0.6], [0.0, 0.8], "single-task metric is 0"),
    ],
)
def test_no_test_without_a_spread_to_test_against(mtl, stl, reason):
    test = transfer_test("a", mtl, stl, higher_is_better=True)
    assert test.p_value is None and not test.flagged and reason in str(test.reason)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        transfer_test("a", [1, 2], [1, 2], True, alpha=0)
    with pytest.raises(ValueError, match="2 multi-task but 1 single-task"):
        transfer_test("a", [1, 2], [1], True)
    with pytest.raises(ValueError, match="alpha"):
        ComparisonResult([Task("a", "binary")], alpha=1.5)


def test_comparison_rows_json_and_table_carry_the_flag(tmp_path):
    import io

    from polytask.cli._render import comparison_table, make_console

    result = ComparisonResult([Task("hurt", "regression"), Task("fine", "binary")], alpha=0.05)
    for seed, (hurt, fine) in enumerate([(2.2, 0.81), (2.4, 0.80), (2.6, 0.82)]):
        result.add(seed, {"hurt": hurt, "fine": fine}, {"hurt": 2.0, "fine": 0.80})
    rows = {r["task"]: r for r in result.summary()}
    assert rows["hurt"]["negative_transfer"] and not rows["fine"]["negative_transfer"]
    assert rows["hurt"]["transfer_p"] == pytest.approx(0.5 - math.sqrt(3 / 14))
    assert rows["fine"]["suggestions"] == []
    result.to_json(tmp_path / "c.json")
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["alpha"] == 0.05 and saved["tasks"][0]["negative_transfer"] is True
    out = io.StringIO()
    make_console(file=out).print(comparison_table(result))
    lines = out.getvalue().splitlines()
    assert "⚠ p=0.037" in next(line for line in lines if line.startswith("│ hurt"))
    assert "⚠" not in next(line for line in lines if line.startswith("│ fine"))
    (warning,) = [line for line in lines if line.startswith("⚠ hurt: worse with the other")]
    assert "by 20% (seeds' std 10%) (one-sided" in warning  # the size beside the p-value
    assert any("polytask compare CONFIG --groups auto" in line for line in lines)


def test_a_significant_but_tiny_drop_says_the_seeds_barely_differ():
    import io

    from polytask.cli._render import comparison_table, make_console

    result = ComparisonResult([Task("a", "regression")])
    for seed, mtl in enumerate([10.090, 10.091, 10.092]):  # nearly deterministic fits
        result.add(seed, {"a": mtl}, {"a": 10.0})
    out = io.StringIO()
    make_console(file=out).print(comparison_table(result))
    (warning,) = [line for line in out.getvalue().splitlines() if line.startswith("⚠ a:")]
    assert "by 0.91% (seeds' std 0.010%): the seeds barely differ" in warning
    large = ComparisonResult([Task("a", "regression")])
    for seed, mtl in enumerate([12.29, 12.30, 12.31]):  # a 23% drop: not "a small change"
        large.add(seed, {"a": mtl}, {"a": 10.0})
    out = io.StringIO()
    make_console(file=out).print(comparison_table(large))
    (warning,) = [line for line in out.getvalue().splitlines() if line.startswith("⚠ a:")]
    assert "by 23% (seeds' std" in warning and "barely differ" not in warning


def test_a_consistent_drop_under_the_negligible_size_is_named_not_flagged():
    import io

    from polytask.cli._render import comparison_table, make_console

    # AUC 0.99636 alone, 0.99588 with the others (a fresh user's run): -0.048%, p tiny
    stl, mtl = [0.99636, 0.99640, 0.99632], [0.99588, 0.99590, 0.99587]
    test = transfer_test("e", mtl, stl, higher_is_better=True)
    assert test.p_value is not None and test.p_value < 0.01
    assert not test.flagged and test.suggestions == ()
    assert test.reason is not None and "worse by 0.048% (p=" in test.reason
    assert "under 0.5%: too small to call negative transfer" in test.reason
    assert transfer_test("e", mtl, stl, True, negligible_pct=0.01).flagged  # a stricter user
    result = ComparisonResult([Task("e", "binary")])
    for seed, (m, s) in enumerate(zip(mtl, stl, strict=True)):
        result.add(seed, {"e": m}, {"e": s})
    out = io.StringIO()
    make_console(file=out).print(comparison_table(result))
    text = out.getvalue()
    assert "⚠" not in text and "MTL worse? worse by 0.048%" in text


def test_one_seed_table_says_why_there_is_no_test():
    import io

    from polytask.cli._render import comparison_table, make_console

    result = ComparisonResult([Task("a", "regression")])
    result.add(0, {"a": 1.0}, {"a": 2.0})
    out = io.StringIO()
    make_console(file=out).print(comparison_table(result))
    assert "MTL worse? not tested: needs at least 2 seeds" in out.getvalue()


@pytest.mark.slow
def test_sharing_a_narrow_trunk_harms_a_lone_task_and_helps_a_scarce_one():
    """Planted groups (`make_grouped_regression`): g0_a and g0_b are variants of one function,
    g0_b with 5% of its labels (its group mate teaches it the features: helped); g1_a is alone
    in its group and competes with them for an 8-unit trunk (harmed). Measured over seeds 0-2
    (test RMSE, single-task → multi-task), 20 epochs at lr 7e-3: g0_b +7% (p 0.92), g1_a −39%
    (p 0.018); seeds 3-5 and 6-8: g0_b +10%, +2%; g1_a −66% (p 0.009), −116% (p 0.029). At 30
    epochs, lr 5e-3: g0_b 0.83 → 0.74 (+11%, p 0.93), g1_a 0.33 → 0.45 (−35%, p 0.011)."""
    from polytask.analysis import compare_with_single_task
    from polytask.app import DataConfig, ModelConfig, RunConfig, load_frame, prepare
    from polytask.data import grouped_task_names
    from polytask.train import TrainConfig

    names = grouped_task_names((2, 1))
    config = RunConfig(
        data=DataConfig(builtin="groups", options={"n": 2000, "group_sizes": [2, 1]}),
        tasks=tuple(Task(n, "regression") for n in names),
        model=ModelConfig(hidden=(8,)),
        training=TrainConfig(epochs=20, lr=7e-3, batch_size=64, progress=False),
    )
    frame = load_frame(config)
    frame.loc[np.random.default_rng(0).random(len(frame)) < 0.95, "g0_b"] = np.nan
    data = prepare(config, frame)
    rows = {r["task"]: r for r in compare_with_single_task(config, data, [0, 1, 2]).summary()}
    assert rows["g1_a"]["negative_transfer"], rows["g1_a"]
    assert any("tower" in s for s in rows["g1_a"]["suggestions"])  # hard_sharing without one
    assert rows["g0_b"]["delta_pct_mean"] > 0 and not rows["g0_b"]["negative_transfer"]


def test_suggestions_leave_out_what_the_model_already_has():
    from polytask.analysis._transfer import suggestions

    plain = suggestions()
    assert plain[0].startswith("a balancer for conflicting gradients: balancer: {name: upgrad}")
    assert any("tower" in s for s in plain)
    used = suggestions("upgrad", offer_tower=False)
    assert used[0] == (
        "another balancer for conflicting gradients: balancer: {name: cagrad} (or nash_mtl)"
    )
    assert not any("tower" in s for s in used) and len(used) == len(plain) - 1
    flagged = transfer_test("acc", [0.9, 0.8, 0.7], [1.0] * 3, True, advice=used)
    assert flagged.suggestions == used


@pytest.mark.parametrize(
    ("model", "balancer", "tower", "first"),
    [
        ({}, "ew", True, "a balancer for conflicting gradients: balancer: {name: upgrad}"),
        ({"tower": (16,)}, "upgrad", False, "another balancer"),
        ({"architecture": "esmm"}, "ew", False, "a balancer"),  # towers by default
        ({"architecture": "esmm", "tower": ()}, "ew", True, "a balancer"),
        ({"architecture": "cross_stitch"}, "cagrad", False, "another balancer"),  # no tower
    ],
)
def test_advice_fits_the_config_s_architecture_and_balancer(model, balancer, tower, first):
    from polytask.analysis._baselines import advice_for
    from polytask.app import BalancerConfig, ModelConfig, RunConfig

    config = RunConfig(
        data={"builtin": "customers"}, tasks=(Task("churn", "binary"), Task("ltv", "regression")),
        model=ModelConfig(**model), balancer=BalancerConfig(balancer),
    )  # fmt: skip
    advice = advice_for(config)
    assert advice[0].startswith(first) and f"{{name: {balancer}}}" not in advice[0]
    assert any("tower" in s for s in advice) == tower
