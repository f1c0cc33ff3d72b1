import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from polytask.app import FittedModel
from polytask.cli._main import build_parser, main
from polytask.data import make_customers

BASE = {
    "data": {
        "path": "data.csv",
        "features": {
            "numeric": ["usage_0", "usage_1", "usage_2", "age"],
            "categorical": ["region"],
        },
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
    },
    "tasks": [
        {"name": "churn", "kind": "binary"},
        {"name": "ltv", "kind": "regression"},
        {"name": "plan", "kind": "multiclass"},
    ],
    "model": {"hidden": [16]},
    "balancer": {"name": "dwa"},
    "training": {"epochs": 3, "batch_size": 64, "progress": False},
    "output_dir": "run",
}


@pytest.fixture
def project(tmp_path):
    make_customers(400, missing={"plan": 0.3}, seed=0).to_csv(tmp_path / "data.csv", index=False)
    return tmp_path


def _write(folder: Path, config: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _with(path: tuple, value) -> dict:
    import copy

    cfg = copy.deepcopy(BASE)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("tasks", 0, "kind"), "binnary", "tasks[0].kind: Input should be 'binary'"),
        (("tasks", 1, "colour"), "x", "tasks[1].colour: unknown field; allowed here: name, kind"),
        (
            ("tasks", 1, "from_column"),
            "region",
            "tasks[1].from_column: unknown field (from_column makes the whole `tasks:` mapping",
        ),
        (("training", "lr"), "fast", "training.lr: Input should be a valid number"),
        (("training", "epochs"), 0, "training: epochs must be at least 1"),
        (  # it blamed test_fraction, the field left as it was
            ("data", "split"),
            {"val_fraction": 0.9, "test_fraction": 0.2},
            "val_fraction 0.9 and test_fraction 0.2 add up to 1.1, leaving no training rows",
        ),
        (("balancer",), {"name": "dwa", "params": {"temp": 1}}, "temp"),
        (
            ("balancer",),
            {"name": "nash"},
            "unknown balancer 'nash' (did you mean 'nash_mtl'?); allowed: aligned_mtl",
        ),
        (("model", "hidden"), [], "hidden: must list positive layer sizes, got []"),
        (("model", "experts"), 3, "experts applies to architecture mmoe / cgc / ple, not"),
        (("model", "hiden"), [8], "hiden: unknown parameter (did you mean 'hidden'?)"),
        (
            ("model", "architecture"),
            "moe",
            "model: unknown architecture 'moe' (did you mean 'mmoe'?); allowed: aitm, cgc",
        ),
        (("model", "tower"), [8, 0], "tower: must list positive layer sizes (or none), got [8, 0]"),
        (("model", "task_dropout"), {"churn": 1.0}, "task_dropout: rates must be in [0, 1)"),
        (("model", "params"), {"hidden": [8]}, "model parameters ['hidden'] are given twice"),
        (("model", "task_dropout"), {"chrun": 0.1}, "task_dropout names unknown tasks ['chrun']"),
        (
            ("model",),
            {"architecture": "multi_input", "inputs": {"churn": ["usage_9"]}},
            "model.inputs['churn']: feature 'usage_9' is not an input column; the features are",
        ),
        (("training", "task_lr"), {"churn": -1}, "task_lr['churn'] must be a finite number > 0"),
        (("training", "freeze"), ["trunk"], "training.freeze names unknown tasks ['trunk']"),
        (("data", "features", "numeric"), ["usage_0", "nope"], "['nope'] not found in the data"),
        (
            ("data", "features", "numeric"),
            ["usage_0", "usage_01"],
            "['usage_01'] not found in the data (did you mean 'usage_1'?); its columns are",
        ),
        (("tasks", 0, "name"), "ltv", "task names must be unique; repeated: ['ltv']"),
        (("data", "path"), "missing.csv", "missing.csv does not exist"),
        (
            ("trainig",),
            {},
            "trainig: unknown field (did you mean 'training'?); allowed here: data, tasks, model",
        ),
        (
            ("data", "features", "categorical"),
            ["region", "age"],
            "columns ['age'] are listed as both numeric and categorical features",
        ),
        (
            ("data", "features", "numeric"),
            ["usage_0", "age", "usage_0"],
            "numeric features list ['usage_0'] more than once",
        ),
        (
            ("data", "features", "numeric"),
            ["usage_0", "ltv"],
            "columns ['ltv'] are both a feature and task 'ltv''s target",
        ),
        (
            ("data", "features", "log"),
            ["region"],
            "features.log lists ['region'], which are categorical features",
        ),
        (("data", "features", "numeric"), "age", "data.features.numeric: Input should be a list"),
        (
            ("tasks", 1),
            {"name": "ltv", "kind": "multilabel", "target": ["ltv", "ltv"]},
            "task 'ltv': target lists columns ['ltv'] more than once",
        ),
    ],
)
def test_config_errors_are_one_clear_message(project, capsys, path, value, message):
    code = main(["train", str(_write(project, _with(path, value)))])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_unreadable_inputs_exit_2(project, capsys):
    bad = project / "bad.yaml"
    bad.write_text("data: [unclosed")
    assert main(["train", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["train", str(project / "absent.yaml")]) == 2
    assert main(["predict", str(project / "absent.pt"), str(project / "data.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_then_predict_matches_python_api(project, capsys):
    assert main(["train", str(_write(project, BASE))]) == 0
    checkpoint = project / "run" / "model.pt"
    assert checkpoint.is_file() and (project / "run" / "metrics.csv").is_file()
    shown = capsys.readouterr().out
    assert "│ ltv   │ loss (standardised) │" in shown and "│ churn │ loss " in shown
    assert "gradient conflict over" in shown and (project / "run" / "relations.json").is_file()
    assert main(["analyze", str(project / "run")]) == 0  # a run folder: its relations.json
    assert main(["analyze", str(project / "run" / "relations.json")]) == 0  # or that file
    assert (project / "run" / "analysis" / "cosine.csv").is_file()
    assert "Suggested groups" in capsys.readouterr().out

    new_rows = make_customers(50, seed=9)  # with its customer_id column first
    new_rows.to_csv(project / "new.csv", index=False)
    args = ["predict", str(checkpoint), str(project / "new.csv"), "-o", str(project / "p.csv")]
    assert main([*args, "--id-column", "customer_id", "--id-column", "region"]) == 0
    from_cli = pd.read_csv(project / "p.csv")
    from_api = FittedModel.load(checkpoint).predict(new_rows, id_columns=["customer_id", "region"])
    assert list(from_cli.columns) == [
        "customer_id",
        "region",
        "churn",
        "churn_prob",
        "ltv",
        "plan",
        "plan_prob_basic",
        "plan_prob_premium",
        "plan_prob_standard",
    ]
    pd.testing.assert_frame_equal(from_cli, from_api.reset_index(drop=True), check_dtype=False)
    probs = from_cli[[c for c in from_cli.columns if c.startswith("plan_prob")]].sum(axis=1)
    assert probs.to_numpy() == pytest.approx(1.0, abs=1e-5)
    # ids as the file writes them: a blank id made pandas read them as floats (17 as 17.0, ids
    # beyond 2**53 rounded into each other's)
    big = ["9007199254740993", "9007199254740995", ""] + [str(i) for i in range(47)]
    new_rows.assign(customer_id=big).to_csv(project / "new.csv", index=False)
    assert main([*args, "--id-column", "customer_id"]) == 0
    written = pd.read_csv(project / "p.csv", dtype=str, keep_default_na=False)["customer_id"]
    assert written.tolist() == big


def test_predict_console_script_to_stdout(project):
    assert main(["train", str(_write(project, BASE))]) == 0
    rows = make_customers(20, seed=3)
    rows.to_csv(project / "new.csv", index=False)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "polytask.cli._main",
            "predict",
            str(project / "run" / "model.pt"),
            str(project / "new.csv"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("churn,churn_prob,ltv,plan")
    assert len(lines) == 21


def test_predict_missing_feature_column_is_clear(project, capsys):
    assert main(["train", str(_write(project, BASE))]) == 0
    make_customers(10, seed=1).drop(columns=["age"]).to_csv(project / "new.csv", index=False)
    assert main(["predict", str(project / "run" / "model.pt"), str(project / "new.csv")]) == 2
    assert "['age'] not found" in capsys.readouterr().err
    args = ["predict", str(project / "run" / "model.pt"), str(project / "data.csv")]
    assert main([*args, "--id-column", "customer"]) == 2
    assert "id column(s) ['customer'] not found in the data" in capsys.readouterr().err


def test_compare_writes_table_and_json(project, capsys):
    code = main(["compare", str(_write(project, BASE)), "--seeds", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Δm" in out and "churn" in out and "macro_f1" in out
    import json

    result = json.loads((project / "run" / "compare.json").read_text())
    assert result["seeds"] == [0, 1] and len(result["delta_m_per_seed"]) == 2


def test_compare_keep_models_saves_models_that_score_as_compared(project, capsys):
    import json

    import torch

    from polytask.app import FittedModel, load_prepared
    from polytask.cli._config_io import load_config
    from polytask.train._evaluate import evaluate

    config = _write(project, BASE)
    args = ["compare", str(config), "--seeds", "1", "--no-classic", "--no-report"]
    assert main([*args, "--keep-models"]) == 0
    assert "stl_TASK/model.pt (each single-task model" in capsys.readouterr().out
    rows = json.loads((project / "run" / "compare.json").read_text())["tasks"]
    data = load_prepared(load_config(config))  # the same rows as the comparison
    for row in rows:
        single = FittedModel.load(project / "run" / "seed0" / f"stl_{row['task']}" / "model.pt")
        assert [t.name for t in single.tasks] == [row["task"]]
        scores = evaluate(single.model, single.tasks, data.test, 64, torch.device("cpu"))
        assert scores[row["task"]][row["metric"]] == pytest.approx(row["stl_mean"], rel=1e-6)
    both = FittedModel.load(project / "run" / "seed0" / "mtl" / "model.pt")
    assert {t.name for t in both.tasks} == {r["task"] for r in rows}
    assert main([*args, "--keep-models", "--architectures", "mmoe"]) == 2
    assert "--keep-models applies to the plain comparison" in capsys.readouterr().err
    (project / "run" / "seed1" / "mtl").mkdir(parents=True)  # as a 2-seed comparison left it
    (project / "run" / "seed1" / "mtl" / "model.pt").write_bytes(b"an earlier seed's model")
    assert main([*args, "--keep-models"]) == 0  # one seed again: seed1 would pass for its
    assert "removed seed1 from " in capsys.readouterr().out
    assert not (project / "run" / "seed1").exists() and (project / "run" / "seed0").is_dir()


def test_demo_runs_small(tmp_path, capsys):
    code = main(["demo", "--n", "500", "--epochs", "2", "--seeds", "1", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Multi-task vs single-task" in out and "plan" in out
    assert "churn auc" in out and "mean auc" not in out  # one task's column names the task
    # an earlier demo (of another size) is replaced; --no-classic skips the classic models
    assert main(["-q", "demo", "--n", "600", "--epochs", "1", "--seeds", "1", "--no-classic",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert "classic" not in saved and "Multi-task vs classic" not in capsys.readouterr().out
    # a folder of something else is not the demo's to replace
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["demo", "--seeds", "1", "--out", str(other)]) == 2
    assert "not an earlier demo's: --overwrite replaces" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep me"


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "polytask.cli._main", "--version"], capture_output=True, text=True
    )
    assert out.stdout.startswith("polytask ")


def test_checkpoint_holds_config_and_loads_without_code(project):
    import json

    import torch

    assert main(["train", str(_write(project, BASE))]) == 0
    raw = torch.load(project / "run" / "model.pt", weights_only=True)
    meta = json.loads(raw["meta_json"])
    assert meta["config"]["balancer"]["name"] == "dwa"
    assert meta["config"]["training"]["epochs"] == 3
    assert meta["preprocessor"]["classes"]["plan"] == ["basic", "premium", "standard"]
    assert set(raw) >= {"model", "optimizer", "balancer"}


@pytest.mark.parametrize(
    "model",
    [
        {"architecture": "mmoe", "hidden": [16], "experts": 3, "tower": [8]},
        {"architecture": "mmoe", "hidden": [16], "experts": 4, "gate": "dselect", "top_k": 2},
        {"architecture": "ple", "hidden": [16], "levels": 2, "task_experts": 1},
        {"architecture": "cgc", "hidden": [16], "experts": 1},
        {
            "architecture": "hard_sharing",
            "hidden": [16],
            "tower": [8],
            "task_dropout": {"ltv": 0.2},
        },
        {"architecture": "cross_stitch", "hidden": [16, 8], "task_dropout": {"plan": 0.3}},
        {"architecture": "mtan", "hidden": [16, 8], "tower": [4]},
        {"architecture": "ltb", "hidden": [16, 8], "branches": 2},
        {"architecture": "esmm", "hidden": [16], "tower": [8]},
        {"architecture": "aitm", "hidden": [16], "tower": [8], "calibration": 0.5},
        {
            "architecture": "multi_input",
            "hidden": [16],
            "encoder_dim": 8,
            "inputs": {"churn": ["usage_0", "region"], "ltv": ["age", "usage_1"]},
        },
        {"architecture": "soft_sharing", "hidden": [16], "coupling": 0.01, "penalty": "trace"},
        {"architecture": "mean_regularised", "hidden": [16], "coupling": 0.01},
    ],
)
def test_architectures_from_config_train_save_and_reload(project, model):
    balancer = "ew" if model["architecture"] == "soft_sharing" else "upgrad"
    config = {**BASE, "model": model, "balancer": {"name": balancer}}
    if model["architecture"] in ("esmm", "aitm"):  # the built-in data's offer funnel
        config["tasks"] = [{"name": "offer_opened", "kind": "binary"},
                           {"name": "offer_accepted", "kind": "binary"}]  # fmt: skip
    if model["architecture"] == "mean_regularised":  # one shared head: one output size
        config["tasks"] = [
            {"name": "churn", "kind": "binary"},
            {"name": "ltv", "kind": "regression"},
        ]
    assert main(["train", str(_write(project, config))]) == 0
    rows = make_customers(30, seed=5)
    fitted = FittedModel.load(project / "run" / "model.pt")
    names = {
        "mmoe": "MMoE",
        "ple": "PLE",
        "cgc": "PLE",
        "cross_stitch": "CrossStitch",
        "mtan": "MTAN",
    }
    names["ltb"] = "LearningToBranch"
    names["multi_input"] = "MultiInput"
    names["esmm"], names["aitm"] = "ESMM", "AITM"
    names["soft_sharing"] = "SoftSharing"
    names["mean_regularised"] = "MeanRegularised"
    assert type(fitted.model).__name__ == names.get(model["architecture"], "MultiTaskModel")
    again = FittedModel.load(project / "run" / "model.pt")
    pd.testing.assert_frame_equal(fitted.predict(rows), again.predict(rows))


def test_compare_architectures_table_and_json(project, capsys):
    cfg = _with(("model",), {"architecture": "mmoe", "hidden": [16], "experts": 3})
    args = ["compare", str(_write(project, cfg)), "--seeds", "2"]
    assert main([*args, "--architectures", "hard_sharing,mmoe,cross_stitch"]) == 0
    out = capsys.readouterr().out
    assert "Architectures on the test split (2 seeds)" in out and "results:" in out
    # piped output (capsys is no terminal) is not cut to 80 columns: headers whole, no wrapping
    assert "…" not in out and "architecture" in out and "parameters" in out
    assert max(map(len, out.splitlines())) > 80 and "plan macro_f1 ↑" in out
    assert all(line.count("±") >= 4 for line in out.splitlines() if "│ mmoe " in line)
    import json

    rows = json.loads((project / "run" / "architectures.json").read_text())["rows"]
    assert [r["architecture"] for r in rows] == [
        "single-task", "hard_sharing", "mmoe", "cross_stitch"
    ]  # fmt: skip
    assert all(r["train_seconds"] > 0 and set(r["metrics"]) == {"churn", "ltv", "plan"}
               for r in rows)  # fmt: skip
    assert rows[0]["delta_m"] is None and len(rows[1]["delta_m"]) == 2


def test_compare_unknown_architecture_is_clear(project, capsys):
    code = main(["compare", str(_write(project, BASE)), "--architectures", "hard_sharing,mmeo"])
    assert code == 2
    assert "unknown ['mmeo']" in capsys.readouterr().err


def test_compare_label_fraction_curve(project, capsys):
    args = ["compare", str(_write(project, BASE)), "--seeds", "1"]
    assert main([*args, "--label-fraction", "ltv=0.2,1"]) == 0
    import json

    result = json.loads((project / "run" / "label_fraction.json").read_text())
    assert result["task"] == "ltv" and [r["fraction"] for r in result["rows"]] == [0.2, 1.0]
    assert main([*args, "--label-fraction", "ltv=0"]) == 2
    assert "write TASK=F[,F...] with fractions in (0, 1]" in capsys.readouterr().err


def test_tasks_from_separate_csv_files_with_a_schedule(tmp_path, capsys):
    frame = make_customers(900, seed=0)
    frame.iloc[:700].drop(columns=["ltv", "plan"]).to_csv(tmp_path / "churn.csv", index=False)
    frame.iloc[700:].to_csv(tmp_path / "value.csv", index=False)  # labels all three
    config = {
        **BASE,
        "data": {
            "features": BASE["data"]["features"],
            "sources": [
                {"path": "churn.csv", "split": {"val_fraction": 0.1, "test_fraction": 0.2}},
                {"path": str(tmp_path / "value.csv"), "tasks": ["ltv", "plan"]},
            ],
        },
        "training": {**BASE["training"], "schedule": "temperature",
                     "schedule_params": {"temperature": 2.0}},
    }  # fmt: skip
    assert main(["train", str(_write(tmp_path, config))]) == 0
    import json

    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert set(metrics) == {"churn", "ltv", "plan"}
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    last = history[-1] if isinstance(history, list) else history["history"][-1]
    assert {"sample/0:churn.csv", "sample/1:value.csv"} <= set(last)
    capsys.readouterr()
    bad = {
        **config,
        "data": {**config["data"], "sources": [{"path": "churn.csv", "tasks": ["ltv"]}]},
    }
    assert main(["train", str(_write(tmp_path, bad))]) == 2
    assert "churn.csv: no target columns for tasks ['ltv']" in capsys.readouterr().err
    # data.split is the split of a source without its own (found by a trial: it was ignored)
    shared = {**config, "data": {**config["data"], "split": {"val_fraction": 0.3,
                                                              "test_fraction": 0.3}}}  # fmt: skip
    assert main(["train", str(_write(tmp_path, shared)), "--overwrite"]) == 0
    said = capsys.readouterr()
    rows = [line for line in (said.out + said.err).splitlines() if line.startswith("rows:")]
    assert rows == ["rows: 570 training, 130 validation, 200 test"], rows  # 490/70/140 + 80/60/60
    with_file = {**config, "data": {**config["data"], "split": {"file": "split.npz"}}}
    assert main(["train", str(_write(tmp_path, with_file))]) == 2
    assert "data.split.file holds the rows of one table" in capsys.readouterr().err
    # found by review: a task only a source without validation rows labels lost its
    # validation metrics (and early stopping its reading) without a word
    no_val = {**config, "data": {**config["data"], "sources": [
        config["data"]["sources"][0],
        {**config["data"]["sources"][1], "split": {"val_fraction": 0.0, "test_fraction": 0.3}},
    ]}}  # fmt: skip
    assert main(["train", str(_write(tmp_path, no_val)), "--overwrite"]) == 0
    said = capsys.readouterr().err
    for task in ("ltv", "plan"):
        assert f"task {task!r}, validation split: no data source gives it rows there" in said
    assert "'churn', validation" not in said and "test split: no data source" not in said


def test_a_sources_own_split_stands_even_when_it_spells_the_defaults():
    # a source's split equal to SplitConfig() was read as "none given" and replaced by data.split
    from polytask.app._config import SourceConfig, SplitConfig
    from polytask.app._data import _source_split

    shared = SplitConfig(val_fraction=0.3, test_fraction=0.3, seed=5)
    assert _source_split(SourceConfig("a.csv", split=SplitConfig()), shared) == SplitConfig()
    assert _source_split(SourceConfig("a.csv"), shared) == shared
    own = SplitConfig(seed=1)  # whole: its fractions are the defaults, not data.split's
    assert _source_split(SourceConfig("a.csv", split=own), shared) == own


@pytest.mark.parametrize("flag, calls", [([], 1), (["--system-malloc"], 0)])
def test_cli_retains_freed_memory_unless_told_not_to(project, capsys, monkeypatch, flag, calls):
    import polytask.cli._main as cli

    seen: list[bool] = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: seen.append(True) or True)
    assert main([*flag, "train", str(project / "missing.yaml")]) == 2
    assert len(seen) == calls


@pytest.mark.parametrize("rows", [1, 2])
def test_a_tiny_csv_is_refused_before_training(project, capsys, rows):
    make_customers(10, seed=0).iloc[:rows].to_csv(project / "data.csv", index=False)
    assert main(["train", str(_write(project, BASE))]) == 2
    err = capsys.readouterr().err
    assert f"{rows} rows with val_fraction 0.2 and test_fraction 0.2 leave the" in err
    assert "without rows: give at least 3 rows, or change the split fractions" in err
    assert not list(project.glob("run/**/*.pt"))


def test_a_bare_key_error_is_printed_as_a_sentence(capsys):
    import argparse

    from polytask.cli._main import _dispatch

    def broken(args, console):
        raise KeyError("y1")

    assert _dispatch(argparse.Namespace(func=broken), None) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: polytask found no entry 'y1' where it expected one")
    assert "error: y1\n" not in err


def test_degenerate_task_data_is_warned_and_its_cells_say_why(project, capsys):
    from polytask.data import random_split

    frame = pd.read_csv(project / "data.csv")
    frame["churn"] = 1  # one class
    frame["ltv"] = 5.0  # constant
    frame.loc[random_split(len(frame), 0.2, 0.2, 0).test, "plan"] = None  # no test labels
    frame.to_csv(project / "data.csv", index=False)
    assert main(["train", str(_write(project, BASE))]) == 0
    out, err = capsys.readouterr()
    for line in [
        "warning: task 'churn', train split: every labelled row is class 1, so its AUC is "
        "undefined",
        "warning: task 'ltv', test split: every labelled value is 5, so its r2 is undefined",
        "warning: task 'plan', test split: no labelled rows, so its loss and metrics are not "
        "computed",
    ]:
        assert line in err
    assert "n/a: one class only" in out and "n/a: constant target" in out
    assert out.count("n/a: no labelled rows") == 3  # plan's loss, macro_f1 and accuracy
    assert "-0 " not in out and " nan " not in out


def test_threads_sets_torchs_threads_before_the_command(tmp_path, monkeypatch, capsys):
    import threadpoolctl
    import torch

    asked: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)  # the process's own: untouched
    blas: list[object] = []  # found by review: numpy's BLAS kept its default threads
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", lambda limits: blas.append(limits))
    assert main(["--threads", "1", "train", str(tmp_path / "missing.yaml")]) == 2
    assert asked == [1] and blas == [1]
    assert main(["train", str(tmp_path / "missing.yaml"), "--threads", "2"]) == 2  # after it too
    assert main(["compare", str(tmp_path / "missing.yaml")]) == 2
    assert asked == [1, 2]
    serve = build_parser().parse_args(["--threads", "2", "serve", "m.pt", "--threads", "3"])
    assert (serve.torch_threads, serve.threads) == (2, 3)  # serve's own: each worker's
    with pytest.raises(SystemExit):
        main(["--threads", "0", "train", "x.yaml"])
    assert "must be at least 1, got 0" in capsys.readouterr().err


def test_a_busy_machine_gets_the_threads_advice_once(tmp_path, monkeypatch, capsys):
    import os

    monkeypatch.delenv("POLYTASK_BUSY_HINT")
    monkeypatch.setattr(os, "getloadavg", lambda: (6.5, 5.0, 4.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("the machine is busy (load average 6.5 on 2 cores)") == 1
    assert "`polytask --threads 1 ...`" in err
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.5, 0.5))
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "the machine is busy" not in capsys.readouterr().err
    monkeypatch.setattr(os, "getloadavg", lambda: (6.5, 5.0, 4.0))
    monkeypatch.setenv("POLYTASK_BUSY_HINT", "0")
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "the machine is busy" not in capsys.readouterr().err


def test_a_config_without_output_dir_trains_into_runs_named_after_it(tmp_path):
    # two such configs shared runs/polytask (the second refused as another config's run)
    from polytask.cli._config_io import load_config

    raw = {k: v for k, v in BASE.items() if k != "output_dir"}
    for name in ("churn_only.yaml", "all.tasks.yaml"):
        (tmp_path / name).write_text(yaml.safe_dump(raw))
    assert load_config(tmp_path / "churn_only.yaml").output_dir == str(
        tmp_path / "runs" / "churn_only"
    )
    assert load_config(tmp_path / "all.tasks.yaml").output_dir == str(
        tmp_path / "runs" / "all.tasks"
    )
    given = {**raw, "output_dir": "elsewhere"}
    (tmp_path / "given.yaml").write_text(yaml.safe_dump(given))
    assert load_config(tmp_path / "given.yaml").output_dir == str(tmp_path / "elsewhere")


def test_polytasks_own_warnings_are_one_warning_line_others_as_python_shows_them(capsys):
    """A balancer's warning printed as a raw UserWarning with a source line (cli.md: one
    `warning: ...` line each); a library's own (here a stand-in) keeps Python's form."""
    import warnings

    import torch

    from polytask.balancers import make_balancer
    from polytask.cli._warnings import data_warnings_to_stderr
    from polytask.gradients import backward

    shared = torch.nn.Parameter(torch.ones(2))
    logit = (shared * 10).sum()  # 20: sigmoid rounds to 1 in float32, the loss's gradient 0
    saturated = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.tensor(1.0))
    other = (shared**2).sum()
    with data_warnings_to_stderr():
        warnings.simplefilter("always")
        backward(torch.stack([saturated, other]), [shared], make_balancer("upgrad"))
        warnings.warn_explicit("not ours", UserWarning, "/elsewhere/lib.py", 3)
    err = capsys.readouterr().err
    said = "warning: UPGrad: the gradient of task(s) ['task 0'] on the shared parameters is"
    assert f"{said} exactly" in err and "a loss saturated on its few labelled rows" in err
    assert "_engine.py" not in err and "UserWarning" not in err.split("not ours")[0]
    assert "warning: not ours" not in err  # another library's: left to Python (and pytest)
