"""Classic baselines in `compare`: a ridge per task equal to scikit-learn's own on the same
rows, pooling winning where tasks barely differ and losing where they differ a lot, the task
kinds without a classic stand-in skipped with the reason, and compare.json carrying them."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import RidgeCV

from polytask import Task
from polytask.analysis._classic import (
    ALPHAS,
    _group_folds,
    _linear,
    classic_baselines,
    fit_forest,
)
from polytask.app import RunConfig, load_prepared
from polytask.cli._config_io import load_config
from polytask.cli._main import main
from polytask.models._forest import LEAVES
from polytask.tasks._from_column import TaskColumn


def _data(spread: float, rows: int, seed: int = 0):  # type: ignore[no-untyped-def]
    config = RunConfig(
        data={"builtin": "many_tasks",
              "options": {"n_tasks": 12, "rows_per_task": rows, "n_features": 6,
                          "spread": spread, "noise": 0.5, "seed": seed},
              "split": {"val_fraction": 0.1, "test_fraction": 0.3}},
        tasks=TaskColumn("task", "y", "regression"),
    )  # fmt: skip
    return load_prepared(config)


def _mean(scores: dict[str, float]) -> float:
    return float(np.mean(list(scores.values())))


def test_a_ridge_per_task_is_scikit_learns_on_the_training_rows():
    data = _data(0.5, 30)
    result = classic_baselines(data, boosting=False, forest=False)
    task = data.tasks[0]
    x = np.concatenate([data.train.x.numpy(), data.val.x.numpy()])
    y = np.concatenate([data.train.targets[task.name].numpy(), data.val.targets[task.name]])
    keep = ~np.isnan(y)
    mean, std = data.train.target_scale[task.name]
    model = RidgeCV(alphas=ALPHAS).fit(x[keep], y[keep])
    test_y = data.test.targets[task.name].numpy()
    rows = ~np.isnan(test_y)
    predicted = model.predict(data.test.x.numpy()[rows]) * std + mean
    rmse = float(np.sqrt(np.mean((predicted - (test_y[rows] * std + mean)) ** 2)))
    assert result.metrics["linear per task"][task.name] == pytest.approx(rmse, rel=1e-6)
    assert set(result.metrics) == {"linear per task", "pooled linear (task ignored)"}


def test_pooling_wins_when_tasks_barely_differ_and_loses_when_they_differ_a_lot():
    alike = classic_baselines(_data(0.05, 20), boosting=False).metrics
    assert _mean(alike["pooled linear (task ignored)"]) < _mean(alike["linear per task"])
    apart = classic_baselines(_data(3.0, 200), boosting=False).metrics
    assert _mean(apart["linear per task"]) < _mean(apart["pooled linear (task ignored)"])


def _steps(tmp_path, kind: str = "regression"):  # type: ignore[no-untyped-def]
    """Tasks whose target steps at a threshold of their own on x0 (a linear model's blind
    spot), x1 noise."""
    rng = np.random.default_rng(0)
    frames = []
    for t, cut in enumerate(np.linspace(-1.0, 1.0, 6)):
        x = rng.uniform(-2, 2, size=(90, 2))
        y = 3.0 * (x[:, 0] > cut) + rng.normal(0, 0.3, 90)
        if kind == "binary":
            y = (y > 1.5).astype(float)
        frames.append(pd.DataFrame({"task": t, "x0": x[:, 0], "x1": x[:, 1], "y": y}))
    pd.concat(frames).to_csv(tmp_path / "steps.csv", index=False)
    config = RunConfig(
        data={"path": str(tmp_path / "steps.csv"), "features": {"numeric": ["x0", "x1"]},
              "split": {"val_fraction": 0.1, "test_fraction": 0.3}},
        tasks=TaskColumn("task", "y", kind),
    )  # fmt: skip
    return load_prepared(config)


def test_a_forest_per_task_finds_each_tasks_step_where_a_linear_model_cannot(tmp_path):
    metrics = classic_baselines(_steps(tmp_path), boosting=False).metrics
    assert _mean(metrics["forest per task"]) < 0.6 * _mean(metrics["linear per task"])  # rmse
    assert _mean(metrics["forest per task"]) < 0.6  # noise sd 0.3; the steps are 3 high


def test_a_forest_keeps_the_leaf_size_of_the_best_out_of_bag_score():
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 3))
    y = np.sin(2 * x[:, 0]) + rng.normal(0, 0.5, 120)
    task = Task("t", "regression")
    chosen = fit_forest(task, x, y, seed=3)
    scores = {
        leaf: RandomForestRegressor(100, min_samples_leaf=leaf, oob_score=True, random_state=3)
        .fit(x, y)
        .oob_score_
        for leaf in LEAVES
    }
    assert chosen.min_samples_leaf == max(scores, key=scores.__getitem__)
    assert len(set(scores.values())) == len(LEAVES)  # a real choice was made
    tiny = fit_forest(task, x[:12], y[:12], seed=3)  # too few rows for out-of-bag scores
    assert tiny.min_samples_leaf == LEAVES[0]


def test_a_forest_per_task_classifies_and_stands_in_for_one_class_tasks(tmp_path):
    auc = classic_baselines(_steps(tmp_path, "binary"), boosting=False).metrics["forest per task"]
    assert min(auc.values()) > 0.9  # each step found
    one_class = fit_forest(Task("b", "binary"), np.zeros((8, 2)), np.ones(8), seed=0)
    assert one_class.predict_proba(np.zeros((3, 2))).tolist() == [[1.0]] * 3


def test_kinds_without_a_classic_stand_in_are_skipped_saying_why():
    config = RunConfig(
        data={"builtin": "customers", "options": {"n": 600}},
        tasks=(Task("churn", "binary"), Task("ltv", "regression"),
               Task("noise", "reconstruction")),
    )  # fmt: skip
    result = classic_baselines(load_prepared(config), boosting=False)
    assert set(result.metrics["linear per task"]) == {"churn", "ltv"}
    assert 0.5 < result.metrics["linear per task"]["churn"] <= 1.0  # AUC of a logistic model
    assert result.skipped == {}  # auxiliary tasks are not reported, so not compared


def test_compare_reports_delta_m_against_each_classic_model(tmp_path, capsys):
    config = {
        "data": {"builtin": "many_tasks", "options": {"n_tasks": 6, "rows_per_task": 30}},
        "tasks": {"from_column": "task", "target": "y", "kind": "regression"},
        "model": {"hidden": [8]},
        "training": {"epochs": 3, "batch_size": 64, "progress": False},
        "output_dir": "run",
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["-q", "compare", str(tmp_path / "c.yaml"), "--seeds", "1", "--no-report"]) == 0
    printed = capsys.readouterr().out
    assert "Multi-task vs classic baselines" in printed and "strongest classic model" in printed
    assert "mean rmse (6 tasks)" in printed  # a column shared by the tasks: their mean
    timed = [line for line in printed.splitlines() if "(this config" in line]
    assert len(timed) == 2 and all(re.search(r"│\s+\d+\.\d\s+│$", t) for t in timed), timed
    saved = json.loads((tmp_path / "run" / "compare.json").read_text())
    classic = saved["classic"]
    assert (
        set(classic["delta_m"])
        == set(classic["metrics"])
        == {
            "linear per task",
            "pooled linear (task ignored)",
            "boosting, task as a feature",
            "forest per task",
        }
    )  # fmt: skip  (no boosting per task for tasks made from a column: a note says so)
    assert any("boosting per task left out" in note for note in classic["notes"])
    mtl = saved["mtl_per_seed"][0]
    ridge = classic["metrics"]["linear per task"]
    by_hand = 100 * np.mean([-(mtl[t] - ridge[t]) / ridge[t] for t in ridge])  # rmse: lower
    assert classic["delta_m"]["linear per task"] == pytest.approx(by_hand)
    # pooled: every test row of the column's tasks at once, for MTL, STL and the classic models
    assert "task: pooled" in printed and "pooled rmse" in printed
    test = load_prepared(load_config(tmp_path / "c.yaml")).test
    counts = {t: int((~np.isnan(y.numpy())).sum()) for t, y in test.targets.items()}
    (row,) = [r for r in saved["pooled"] if r["metric"] == "rmse"]
    assert row["column"] == "task"
    assert row["mtl_mean"] == pytest.approx(_pooled_by_hand(mtl, counts))
    assert row["stl_mean"] == pytest.approx(_pooled_by_hand(saved["stl_per_seed"][0], counts))
    pooled_ridge = classic["pooled"]["linear per task"]["task"]["rmse"]
    assert pooled_ridge == pytest.approx(_pooled_by_hand(ridge, counts))
    assert main(["-q", "compare", str(tmp_path / "c.yaml"), "--seeds", "1", "--no-report",
                 "--no-classic", "--out", str(tmp_path / "plain")]) == 0  # fmt: skip
    assert "classic" not in json.loads((tmp_path / "plain" / "compare.json").read_text())


def _pooled_by_hand(rmse: dict[str, float], counts: dict[str, int]) -> float:
    """The RMSE of all rows together from each task's RMSE and row count."""
    total = sum(counts.values())
    return float(np.sqrt(sum(counts[t] * rmse[t] ** 2 for t in rmse) / total))


def test_pooled_metrics_score_every_task_row_together():
    data = _data(0.5, 30)
    result = classic_baselines(data, boosting=False, forest=False)
    counts = {t: int((~np.isnan(y.numpy())).sum()) for t, y in data.test.targets.items()}
    for model in ("linear per task", "pooled linear (task ignored)"):
        pooled = result.pooled[model]["task"]
        assert pooled["rmse"] == pytest.approx(_pooled_by_hand(result.metrics[model], counts))
        assert pooled["r2"] < 1.0
    assert "pooled" in result.to_dict()


def _patients(tmp_path, kind: str = "regression"):  # type: ignore[no-untyped-def]
    """40 patients of 6 near-identical rows each, 60 features of the patient plus a little
    noise, and a target that is the patient's own offset: nothing carries to a new patient, yet
    rows of a patient on both sides of a fold reward a penalty that memorises patients."""
    rng = np.random.default_rng(0)
    patients, rows, width = 40, 6, 60
    who = np.repeat(np.arange(patients), rows)
    x = rng.normal(size=(patients, width))[who] + 0.01 * rng.normal(size=(patients * rows, width))
    offset = rng.normal(size=patients)[who] + 0.05 * rng.normal(size=patients * rows)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(width)])
    frame["patient"], frame["y"] = who, offset if kind == "regression" else (offset > 0) * 1
    path = tmp_path / "patients.csv"
    frame.to_csv(path, index=False)
    config = RunConfig(
        data={"path": str(path), "features": {"numeric": [f"x{i}" for i in range(width)]},
              "split": {"by": "patient", "val_fraction": 0.15, "test_fraction": 0.25}},
        tasks=(Task("y", kind),),
    )  # fmt: skip
    return frame, load_prepared(config)


def test_a_split_by_group_keeps_each_group_in_one_fold_of_the_classic_models_cv(tmp_path):
    frame, data = _patients(tmp_path)
    assert data.groups is not None and len(data.groups) == len(data.train) + len(data.val)
    test_patients = set(frame["patient"]) - set(data.groups)
    assert len(test_patients) == 10  # a quarter of the patients, whole, none in data.groups
    assert data.test_groups is not None and set(data.test_groups) == test_patients
    n = [len(data.train), len(data.val), len(data.test)]
    assert (
        data.describe()
        == (  # what `polytask train` prints after loading
            f"rows: {n[0]:,} training, {n[1]:,} validation, {n[2]:,} test; "
            f"groups: {len(set(data.groups[: n[0]]))} training, "
            f"{len(set(data.groups[n[0] :]))} validation, 10 test"
        )
    )
    x = np.concatenate([data.train.x.numpy(), data.val.x.numpy()])
    y = np.concatenate([data.train.targets["y"].numpy(), data.val.targets["y"].numpy()])
    task = data.tasks[0]
    row_wise = _linear(task, x, y, 3, 0)  # leave-one-out: a row's twins are in training
    by_patient = _linear(task, x, y, 3, 0, data.groups)
    assert row_wise.alpha_ < 1 and by_patient.alpha_ >= 100  # nothing carries to a new patient
    # the compare baseline takes the groups from the data, and so the larger penalty
    result = classic_baselines(data, boosting=False, forest=False)
    pred = RidgeCV(alphas=[by_patient.alpha_]).fit(x, y).predict(data.test.x.numpy())
    _, std = data.train.target_scale["y"]
    truth = data.test.targets["y"].numpy().reshape(-1)
    rmse = float(np.sqrt(np.mean(((pred - truth) * std) ** 2)))
    assert result.metrics["linear per task"]["y"] == pytest.approx(rmse, rel=1e-6)


def test_grouped_folds_hold_whole_groups_for_logistic_models_and_boosting(tmp_path):
    _, data = _patients(tmp_path, "binary")
    assert data.groups is not None
    folds = _group_folds(np.arange(len(data.groups)) % 2, data.groups, 3, 0, stratify=True)
    assert folds is not None and len(folds) == 3
    for fit_rows, held in folds:
        assert not set(data.groups[fit_rows]) & set(data.groups[held])
    assert _group_folds(np.zeros(5), np.zeros(5), 3, 0, stratify=False) is None  # one group
    result = classic_baselines(data, forest=False)  # logistic and boosting on grouped folds
    assert 0.0 <= result.metrics["linear per task"]["y"] <= 1.0
    assert "boosting per task" in result.metrics


def test_the_constant_prediction_is_the_training_mean_and_class_frequencies(tmp_path):
    from polytask.analysis._classic import constant_scores

    config = RunConfig(
        data={"builtin": "customers", "options": {"n": 800}},
        tasks=(Task("churn", "binary", metrics=("accuracy", "auc")), Task("ltv", "regression"),
               Task("plan", "multiclass", metrics=("accuracy",))),
    )  # fmt: skip
    data = load_prepared(config)
    scores = constant_scores(data)

    def rows(name: str) -> tuple[np.ndarray, np.ndarray]:
        train = np.concatenate([data.train.targets[name].numpy(), data.val.targets[name]])
        test = data.test.targets[name].numpy()
        return train[~np.isnan(train)], test[~np.isnan(test)]

    train, test = rows("ltv")
    _, std = data.train.target_scale["ltv"]
    by_hand = np.sqrt(np.mean(((test - train.mean()) * std) ** 2))
    assert scores["ltv"] == pytest.approx(by_hand, rel=1e-5)
    for name in ("churn", "plan"):  # accuracy of always the most frequent training class
        train, test = rows(name)
        common = np.bincount(train.astype(int)).argmax()
        assert scores[name] == pytest.approx(np.mean(test == common))


@pytest.mark.report
def test_compare_calls_out_a_task_the_features_do_not_predict(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 4))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(4)])
    frame["signal"] = x @ np.array([1.0, -1.0, 0.5, 0.0]) + 0.3 * rng.normal(size=1500)
    frame["noise"] = rng.normal(size=1500) * 3 + 7
    frame.to_csv(tmp_path / "d.csv", index=False)
    config = {
        "data": {"path": "d.csv", "features": {"numeric": [f"x{i}" for i in range(4)]},
                 "split": {"val_fraction": 0.15, "test_fraction": 0.3}},
        "tasks": [{"name": "signal", "kind": "regression"},
                  {"name": "noise", "kind": "regression"}],
        "model": {"hidden": [16]},
        "training": {"epochs": 4, "batch_size": 128, "progress": False},
        "output_dir": "run",
    }  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["-q", "compare", str(tmp_path / "c.yaml"), "--seeds", "1", "--no-classic"]) == 0
    printed = capsys.readouterr().out
    assert "≈ noise: no model beats predicting the training mean" in printed
    page = (tmp_path / "run" / "report.html").read_text()
    assert "≈ noise: no model beats" in page and "≈ signal" not in page
    assert "≈ signal" not in printed
    rows = {r["task"]: r for r in json.loads((tmp_path / "run" / "compare.json").read_text())
            ["tasks"]}  # fmt: skip
    assert rows["noise"]["no_signal"] and rows["signal"]["no_signal"] is None
    assert rows["noise"]["constant"] == pytest.approx(3.0, rel=0.1)  # the noise's spread


def test_boosting_tries_the_two_listed_settings_not_every_combination(monkeypatch):
    import sklearn.model_selection as selection

    from polytask.analysis._classic import BOOSTING_GRID, _boosting

    tried: list[list[dict[str, object]]] = []

    class Recording(selection.GridSearchCV):
        def fit(self, X, y=None, **kwargs):  # type: ignore[no-untyped-def]
            tried.append(list(selection.ParameterGrid(self.param_grid)))
            return super().fit(X, y, **kwargs)

    monkeypatch.setattr(selection, "GridSearchCV", Recording)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3))
    _boosting(Task("r", "regression"), x, x[:, 0] + 0.1 * rng.normal(size=90), 3, 0, None)
    assert tried == [list(BOOSTING_GRID)]


def test_a_logistic_penalty_is_chosen_on_shuffled_folds_not_blocks_of_stacked_tasks():
    """The pooled model stacks rows task by task: unshuffled folds held out whole tasks, so
    the penalty was chosen for tasks the model had not seen (C 0.1 where shuffled folds pick
    1; outside review). The choice is scikit-learn's on shuffled stratified folds."""
    import warnings

    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    from polytask.analysis._classic import CS

    rng = np.random.default_rng(4)
    blocks = []
    for slope in (2.0, -1.0, 0.5, 3.0, -2.0):  # five tasks, each its own relation
        x = rng.standard_normal((60, 3))
        blocks.append((x, (slope * x[:, 0] + rng.standard_normal(60) > 0).astype(int)))
    x = np.concatenate([b[0] for b in blocks])
    y = np.concatenate([b[1] for b in blocks])
    model = _linear(Task("t", "binary"), x, y, folds=3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folds = StratifiedKFold(3, shuffle=True, random_state=0)
        reference = LogisticRegressionCV(Cs=CS, cv=folds, max_iter=2000, random_state=0,
                                         scoring="neg_log_loss").fit(x, y)  # fmt: skip
    np.testing.assert_allclose(model.C_, reference.C_)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-6)
