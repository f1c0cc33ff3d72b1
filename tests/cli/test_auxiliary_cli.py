"""An auxiliary task through the command line: `polytask train`, `predict`, `compare` and
`export` from a YAML config, with nothing of the auxiliary task in what they report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from polytask.cli._main import main
from polytask.data import make_low_rank

CONFIG = {
    "data": {
        "builtin": "low_rank",
        "options": {"n": 500, "n_features": 12, "labelled": 0.3},
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
    },
    "tasks": [
        {"name": "y", "kind": "regression"},
        {"name": "rec", "kind": "reconstruction", "kind_params": {"mask_rate": 0.3}},
    ],
    "model": {"hidden": [16, 4]},
    "balancer": {"name": "upgrad"},
    "training": {"epochs": 2, "batch_size": 64, "progress": False, "auxiliary_gradients": "gated"},
    "output_dir": "run",
}


@pytest.fixture
def run(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    assert main(["train", str(config)]) == 0
    return tmp_path


def test_train_predict_and_export_hold_no_auxiliary_task(run, capsys):
    assert set(json.loads((run / "run" / "test_metrics.json").read_text())) == {"y"}
    columns = list(pd.read_csv(run / "run" / "metrics.csv").columns)
    assert "val/y/rmse" in columns and "auxiliary/rec/loss" in columns  # trained, logged apart
    assert not [c for c in columns if c.startswith(("train/rec", "val/rec", "weight/rec"))]
    assert "│ rec" not in capsys.readouterr().out  # the test-metrics table
    make_low_rank(n=20, n_features=12).to_csv(run / "rows.csv", index=False)
    model = str(run / "run" / "model.pt")
    assert main(["predict", model, str(run / "rows.csv"), "-o", str(run / "p.csv")]) == 0
    assert list(pd.read_csv(run / "p.csv").columns) == ["y"]
    assert main(["predict", model, str(run / "rows.csv"), "--tasks", "rec"]) == 2
    assert "['rec'] are auxiliary" in capsys.readouterr().err
    out = run / "export"
    assert main(["export", model, "--format", "torchscript", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["name"] for t in manifest["tasks"]] == ["y"]


def test_compare_has_no_single_task_model_or_delta_for_the_auxiliary_task(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    assert main(["compare", str(config), "--seeds", "1"]) == 0
    result = json.loads((tmp_path / "run" / "compare.json").read_text())
    assert [row["task"] for row in result["tasks"]] == ["y"]
    assert (tmp_path / "run" / "seed0" / "stl_y").exists()
    assert not (tmp_path / "run" / "seed0" / "stl_rec").exists()


@pytest.mark.report
def test_the_report_shows_no_auxiliary_task(run):
    """Not in the curves, weights, gradient norms or the conflict heatmap either."""
    page = (run / "run" / "report.html").read_text()
    assert ">y<" in page and ">rec<" not in page


def test_a_source_of_unlabelled_rows_trains_the_self_supervised_task(tmp_path, capsys):
    """A CSV with the feature columns only labels no task: refused as data for a model without
    a self-supervised task, the auxiliary task's data for a model with one."""
    rows = make_low_rank(n=600, n_features=12, labelled=1.0)
    rows.iloc[:150].to_csv(tmp_path / "labelled.csv", index=False)
    rows.iloc[150:].drop(columns="y").to_csv(tmp_path / "unlabelled.csv", index=False)
    features = [c for c in rows.columns if c != "y"]
    config = {
        **CONFIG,
        "data": {
            "features": {"numeric": features},
            "sources": [{"path": "labelled.csv"}, {"path": "unlabelled.csv"}],
        },
        "training": {**CONFIG["training"], "schedule": "proportional"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    history = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert history["sample/1:unlabelled.csv"].iloc[-1] > 0.7  # drawn by its size: 450 of 600
    assert set(json.loads((tmp_path / "run" / "test_metrics.json").read_text())) == {"y"}
    config["tasks"] = CONFIG["tasks"][:1]
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--overwrite"]) == 2
    assert "it has the target columns of none of the tasks" in capsys.readouterr().err
