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
    assert text.startswith("# Quality: school (quick smoke run") and "Commit `" in text
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
    colon = old.replace("polytask a", "polytask a: its kind")  # a name that holds ": "
    only = (head.format("fed4321") + "| polytask a: its kind | 37.00 ± 0.50 | 9.9 ± 0.1 | 2 |\n"
            "\nSettings of the polytask models:\n\n- polytask a: its kind: z\n")  # fmt: skip
    rerun = merge(colon, only, True)  # its old settings line goes with its old row
    assert "- polytask a: its kind: z" in rerun and ": its kind: x" not in rerun
    partial = colon.replace("polytask a: its kind", "polytask a: its kind (splits 0-2)")
    whole = merge(partial, only, True)  # all the splits now: the partial run's line goes too
    assert "- polytask a: its kind: z" in whole and "(splits 0-2)" not in whole


def test_per_split_figures_are_kept_and_rows_name_the_splits_they_cover(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    from quality import SPLITS, keep, merge, read_store, splits_label

    store = tmp_path / "suite.splits.csv"
    keep(store, 'polytask a, "b"', 0, (35.0, 10.0, 5.0), ("AUC (task mean)", "pooled auc"))
    assert store.read_text().splitlines()[0] == (
        '"model","split","AUC (task mean)","pooled auc","seconds","commit"'
    )  # the figures named as the suite's table names them
    keep(store, 'polytask a, "b"', 1, (36.0, 9.0, 6.0))
    keep(store, 'polytask a, "b"', 0, (34.5, 10.5, 5.5))  # a rerun of split 0: the latest wins
    keep(store, "classic: c", 3, (33.0, 11.0, 1.0))
    assert read_store(store) == {'polytask a, "b"': {0: (34.5, 10.5, 5.5), 1: (36.0, 9.0, 6.0)},
                                 "classic: c": {3: (33.0, 11.0, 1.0)}}  # fmt: skip
    assert read_store(tmp_path / "none.csv") == {} and read_store(None) == {}
    keep(None, "polytask a", 0, (1.0, 1.0, 1.0))  # nothing to keep to: nothing written
    assert splits_label(range(SPLITS)) == ""
    assert splits_label([2, 0, 1]) == " (splits 0-2)"
    assert splits_label([4]) == " (split 4)"
    assert splits_label([0, 2, 5]) == " (splits 0, 2, 5)"
    head = "# Quality: school\n\nCommit `{}`; ...\n\n| model | ev | t | s |\n|---|---|---|---|\n"
    old = head.format("abc1234") + "| polytask a (splits 0-2) | 37.00 ± 0.50 | 9.9 ± 0.1 | 5 |\n"
    new = head.format("def5678") + "| polytask a (splits 0-4) | 36.00 ± 0.50 | 9.9 ± 0.1 | 5 |\n"
    rows = re.findall(r"^\| (.+?) \| [-\d.]+ ±", merge(old, new, True), flags=re.M)
    assert rows == ["polytask a (splits 0-4)"]  # more splits of one model replace its row


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


def test_single_task_row_trains_each_task_alone(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    import numpy as np
    import pandas as pd
    from quality import Suite, _score

    from polytask import TrainConfig
    from polytask.app import ModelConfig
    from polytask.app._config import SplitConfig
    from polytask.tasks import Task

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    frame = pd.DataFrame(x, columns=["f0", "f1", "f2"])
    frame["a"] = x @ [1.0, -1.0, 0.5] + rng.normal(scale=0.3, size=300)
    frame["b"] = np.sin(2 * x[:, 0]) + rng.normal(scale=0.3, size=300)
    path = tmp_path / "two.csv"
    frame.to_csv(path, index=False)
    split = SplitConfig(val_fraction=0.15, test_fraction=0.25, seed=0)

    def suite(*names: str) -> Suite:
        tasks = tuple(Task(n, "regression") for n in names)
        return Suite(path, ("f0", "f1", "f2"), lambda: tasks, lambda k: split, "mae")

    model = ModelConfig("hard_sharing", {"hidden": (16,)})
    training = TrainConfig(epochs=3, batch_size=32, progress=False, seed=0)
    both = _score(suite("a", "b"), frame, model, training, split, single=True)
    alone = [_score(suite(n), frame, model, training, split)[0] for n in ("a", "b")]
    # the same test rows for both tasks: pooled and task mean are the mean of the two alone
    assert both[0] == pytest.approx(np.mean(alone)) and both[1] == pytest.approx(np.mean(alone))
    joint = _score(suite("a", "b"), frame, model, training, split)
    assert joint[0] != pytest.approx(both[0])  # one shared network learns otherwise


def test_a_binary_suite_reports_task_mean_and_pooled_auc(tmp_path, monkeypatch):
    """A suite whose target is derived from the file's rows (`derive`), of binary tasks made
    from a column: its table ranks by the task-mean AUC (the mean over the tasks whose test rows
    hold both classes) and gives the pooled AUC beside it, for polytask and classic models."""
    sys.path.insert(0, str(SCRIPT.parent))
    import numpy as np
    import pandas as pd
    import quality
    from quality import Suite, _pooled

    from polytask.app._config import SplitConfig
    from polytask.tasks import TaskColumn

    assert _pooled(None, {"a": 0.8, "b": float("nan"), "c": 0.6}, "auc", 0.75) == (  # type: ignore[arg-type]
        pytest.approx(0.7), 0.75,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.normal(size=(480, 3))
    group = np.repeat(np.arange(6), 80)
    frame = pd.DataFrame(x, columns=["f0", "f1", "f2"]).assign(group=group)
    frame["score"] = x @ [2.0, -1.0, 0.0] + rng.normal(size=6)[group] + rng.normal(size=480)
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)  # no binary column: the suite derives it
    suite = Suite(
        path, ("f0", "f1", "f2"), lambda: TaskColumn("group", "high", "binary"),
        lambda k: SplitConfig(val_fraction=0.15, test_fraction=0.3, seed=k), "auc",
        derive=lambda f: f.assign(high=(f["score"] > 0).astype(int)),
        models=("polytask multilevel, linear, L-BFGS (prior by empirical Bayes)",),
    )  # fmt: skip
    monkeypatch.setitem(quality.SUITES, "synthetic", lambda shared=None: suite)
    text, image = quality.run("synthetic", 1, 1, classic=True, quick=True)
    assert "| model | AUC (task mean) | pooled auc | fit s |" in text
    rows = re.findall(r"^\| (.+?) \| ([-\d.]+) ± [\d.]+ \| ([-\d.na]+) ±", text, flags=re.M)
    names = [n for n, _, _ in rows]
    assert len(rows) == 5  # multilevel and the four classic models
    assert "polytask multilevel, linear, L-BFGS (prior by empirical Bayes)" in names
    for _, task_mean, pooled in rows:
        assert 0.6 < float(task_mean) <= 1 and 0.6 < float(pooled) <= 1
    means = [float(m) for _, m, _ in rows]
    assert means == sorted(means, reverse=True)  # the highest AUC first
    assert "<svg" in image
    assert not (tmp_path / "rows.csv").read_text().count("high")  # the file is left as it was


def test_delta_column_compares_each_task_mean_with_the_single_task_row():
    """Δ: the task-mean figure's relative change against `classic: linear per task`, positive
    when better (lower error, higher AUC); computed again, not added twice, on a kept table."""
    sys.path.insert(0, str(SCRIPT.parent))
    from quality import DELTA, DELTA_NOTE, SUITES, with_delta

    head = "| model | explained variance % (pooled) | task mean rmse | fit s |"
    error = (f"# t\n\n{head}\n|---|---|---|---|\n"
             "| polytask a | 38.00 ± 0.50 | 9.500 ± 0.1 | 5 |\n"
             "| classic: linear per task (kept from `abc1234`) | 32.00 ± 1.0 | 10.000 ± 0.1 | 1 |\n"
             "| polytask b (splits 0-2) | 30.00 ± 1.00 | 10.500 ± 0.1 | 1 |\n"
             "\nnotes\n")  # fmt: skip
    text = with_delta(error, SUITES["school"]())
    lines = text.splitlines()
    assert lines[2] == f"{head} {DELTA} |"
    assert lines[3] == "|---|---|---|---|---|"
    assert lines[4].endswith("| 5 | +5.00 |")  # 9.5 against 10: 5% lower error
    assert lines[5].endswith("| 1 | 0 |") and lines[6].endswith("| 1 | -5.00 |")
    assert lines[-1] == "notes" and with_delta(text, SUITES["school"]()) == text
    assert lines[7:9] == ["", DELTA_NOTE]  # said once, below the table
    auc = error.replace("task mean rmse", "pooled auc").replace("38.00", "0.8000")
    auc = auc.replace("32.00", "0.7000").replace("30.00", "0.6300")
    lines = with_delta(auc, SUITES["school-pass"]()).splitlines()
    assert lines[4].endswith("| +14.29 |") and lines[6].endswith("| -10.00 |")  # AUC: higher
    alone = error.replace("classic: linear per task", "classic: boosting")
    assert all(r.endswith("| – |") for r in with_delta(alone, SUITES["school"]()).splitlines()[4:7])


def test_tuned_settings_come_from_the_training_rows_alone(tmp_path, monkeypatch):
    """`polytask tune` inside the suite: from a learning rate far too low it finds a clearly
    better one, and the test rows' targets (scrambled here) change nothing it chooses."""
    sys.path.insert(0, str(SCRIPT.parent))
    import numpy as np
    import pandas as pd
    import quality
    from quality import Suite, tuned_settings, with_tuned

    from polytask import TrainConfig
    from polytask.app import ModelConfig
    from polytask.app._config import SplitConfig
    from polytask.tasks import Task

    monkeypatch.setattr(quality, "TRIALS", 4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 3))
    frame = pd.DataFrame(x, columns=["f0", "f1", "f2"])
    frame["a"] = x @ [1.0, -1.0, 0.5] + rng.normal(scale=0.3, size=240)
    frame["b"] = x @ [1.0, -0.5, 0.0] + rng.normal(scale=0.3, size=240)
    order = rng.permutation(240)
    split_file = tmp_path / "split.npz"
    np.savez(split_file, train_idx=order[:180], test_idx=order[180:])
    split = SplitConfig(file=str(split_file), val_fraction=0.15)
    model = ModelConfig("hard_sharing", {"hidden": (16,)})
    training = TrainConfig(epochs=5, batch_size=32, lr=1e-5, progress=False, seed=0)
    tasks = (Task("a", "regression"), Task("b", "regression"))
    chosen = []
    for scrambled in (False, True):
        rows = frame.copy()
        if scrambled:
            rows.loc[order[180:], ["a", "b"]] = rng.normal(scale=100.0, size=(60, 2))
        path = tmp_path / f"rows{int(scrambled)}.csv"
        rows.to_csv(path, index=False)
        suite = Suite(path, ("f0", "f1", "f2"), lambda: tasks, lambda k: split, "mae")
        chosen.append(tuned_settings(suite, model, training, split, single=False))
    assert chosen[0] == chosen[1]
    assert chosen[0]["training.lr"] > 1e-4  # the search space's floor: far above the given rate
    tuned_model, tuned_training = with_tuned(model, training, chosen[0])
    assert tuned_training.lr == chosen[0]["training.lr"] and tuned_training.epochs == 5
    assert tuned_model.params["hidden"] == tuple(chosen[0]["model.hidden"])
