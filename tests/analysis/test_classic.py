"""Classic baselines in `compare`: a ridge per task equal to scikit-learn's own on the same
rows, pooling winning where tasks barely differ and losing where they differ a lot, the task
kinds without a classic stand-in skipped with the reason, and compare.json carrying them."""

import json

import numpy as np
import pytest
import yaml
from sklearn.linear_model import RidgeCV

from polytask import Task
from polytask.analysis._classic import ALPHAS, classic_baselines
from polytask.app import RunConfig, load_prepared
from polytask.cli._main import main
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
    result = classic_baselines(data, boosting=False)
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
    saved = json.loads((tmp_path / "run" / "compare.json").read_text())
    classic = saved["classic"]
    assert (
        set(classic["delta_m"])
        == set(classic["metrics"])
        == {
            "linear per task",
            "pooled linear (task ignored)",
            "boosting, task as a feature",
        }
    )  # fmt: skip  (no boosting per task for tasks made from a column: a note says so)
    assert any("boosting per task left out" in note for note in classic["left_out"])
    mtl = saved["mtl_per_seed"][0]
    ridge = classic["metrics"]["linear per task"]
    by_hand = 100 * np.mean([-(mtl[t] - ridge[t]) / ridge[t] for t in ridge])  # rmse: lower
    assert classic["delta_m"]["linear per task"] == pytest.approx(by_hand)
    assert main(["-q", "compare", str(tmp_path / "c.yaml"), "--seeds", "1", "--no-report",
                 "--no-classic", "--out", str(tmp_path / "plain")]) == 0  # fmt: skip
    assert "classic" not in json.loads((tmp_path / "plain" / "compare.json").read_text())
