import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from polytask.cli._main import main
from polytask.serve import ExportError, FormatUnavailable, ServingGraph, export_model, load_exported

from .conftest import FEATURES, TASKS, train


def _same_predictions(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    for column in expected.columns:
        if expected[column].dtype.kind == "f":
            np.testing.assert_allclose(got[column], expected[column], rtol=1e-4, atol=1e-5)
        else:
            assert got[column].tolist() == expected[column].tolist(), column


def test_serving_graph_encodes_inside_the_graph_as_the_preprocessor_does(trained, rows):
    fitted, _ = trained
    graph = ServingGraph(fitted.model, fitted.preprocessor, fitted.tasks).eval()
    raw = torch.from_numpy(fitted.preprocessor.raw_features(rows).astype(np.float32))
    torch.testing.assert_close(
        fitted.preprocessor.encode_raw(raw), fitted.preprocessor.transform_features(rows)
    )
    # a missing numeric value is the training mean, a missing category all zeros
    assert torch.isnan(raw[3, 1]) and raw[5, 4] == -1
    with torch.no_grad():
        churn, ltv, plan = graph(raw)
    assert churn.shape == (40,) and ltv.shape == (40,) and plan.shape == (40, 3)
    torch.testing.assert_close(plan.sum(1), torch.ones(40))  # probabilities
    expected = fitted.predict(rows)
    np.testing.assert_allclose(ltv.numpy(), expected["ltv"], rtol=1e-5)  # original units
    np.testing.assert_allclose(churn.numpy(), expected["churn_prob"], rtol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program", "onnx"])
def test_export_predicts_as_the_python_model(trained, rows, tmp_path, fmt):
    fitted, _ = trained
    result = export_model(fitted, tmp_path / "out", fmt, data=rows)
    assert result.max_difference < 1e-3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["format"] == fmt and (tmp_path / "out" / manifest["file"]).is_file()
    assert [o["name"] for o in manifest["outputs"]] == ["churn", "ltv", "plan"]
    plan = manifest["outputs"][2]
    assert plan["kind"] == "multiclass" and plan["classes"] == ["basic", "premium", "standard"]
    assert [i["name"] for i in manifest["inputs"]][-1] == "region"
    exported = load_exported(tmp_path / "out")
    _same_predictions(exported.predict(rows), fitted.predict(rows))
    # one row, and a subset of the tasks, through the dynamic batch dimension
    _same_predictions(
        exported.predict(rows.iloc[:1], tasks=["plan"]),
        fitted.predict(rows.iloc[:1], tasks=["plan"]),
    )
    if fmt == "torchscript":  # outputs as loaded: no autograd, so `.numpy()` works on them
        import torch

        module = torch.jit.load(str(tmp_path / "out" / manifest["file"]))
        outputs = module(torch.zeros(2, len(manifest["inputs"])))
        assert not any(o.requires_grad for o in outputs)
        assert all(p.requires_grad for p in fitted.model.parameters())  # the model untouched


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_log_features_are_taken_inside_the_exported_graph(rows, tmp_path, fmt):
    features = {**FEATURES, "numeric": [*FEATURES["numeric"], "monthly_spend"],
                "log": ["age", "monthly_spend"]}  # fmt: skip
    fitted = train(tmp_path, features=features, hidden=[16])
    assert fitted.preprocessor.log == ("age", "monthly_spend")
    result = export_model(fitted, tmp_path / "out", fmt, data=rows)
    assert result.max_difference < 1e-3
    exported = load_exported(tmp_path / "out")
    _same_predictions(exported.predict(rows), fitted.predict(rows))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    age = next(i for i in manifest["inputs"] if i["name"] == "age")
    assert age["log"] is True and age["exclusive_minimum"] == 0
    assert age["training_mean"] == pytest.approx(np.log(rows["age"]).mean(), abs=0.2)
    assert "log" not in next(i for i in manifest["inputs"] if i["name"] == "usage_0")


def test_onnx_graph_has_named_outputs_and_runs_without_polytask(trained, rows, tmp_path):
    import onnxruntime

    fitted, _ = trained
    export_model(fitted, tmp_path / "out", "onnx")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["churn", "ltv", "plan"]
    # a client builds the input from the manifest alone: numbers, and category indices
    frame = pd.DataFrame({c: rows[c] for c in manifest["graph_input"]["columns"]}).copy()
    region = next(i for i in manifest["inputs"] if i["name"] == "region")
    frame["region"] = [region["categories"].index(v) if v in region["categories"] else -1
                       for v in rows["region"]]  # fmt: skip
    out = session.run(["ltv"], {"features": frame.to_numpy(np.float32)})[0]
    np.testing.assert_allclose(out, fitted.predict(rows)["ltv"], rtol=1e-4)


def test_quantized_copy_reports_accuracy_change(trained, rows, tmp_path):
    fitted, _ = trained
    result = export_model(fitted, tmp_path / "q", "torchscript", quantize=True, data=rows)
    report = result.quantization
    assert report is not None and (tmp_path / "q" / report["file"]).is_file()
    assert 0 < report["max_output_change"] < 0.5
    assert set(report["metrics"]) == {"churn", "ltv", "plan"}
    auc = report["metrics"]["churn"]["auc"]
    assert abs(auc["int8"] - auc["float"]) < 0.1
    int8 = load_exported(tmp_path / "q", quantized=True).predict(rows)
    assert not np.allclose(int8["churn_prob"], fitted.predict(rows)["churn_prob"], atol=1e-7)


def test_quantized_metrics_pair_each_task_with_its_own_output_when_a_label_column_is_absent(
    trained, rows, tmp_path
):
    """Without ltv's column, plan was scored on ltv's output (the labelled tasks zipped with
    every output): each task's float metrics are its Python model's."""
    fitted, _ = trained
    result = export_model(fitted, tmp_path / "q", "torchscript", quantize=True,
                          data=rows.drop(columns=["ltv"]))  # fmt: skip
    report = result.quantization
    assert report is not None and set(report["metrics"]) == {"churn", "plan"}
    from sklearn.metrics import accuracy_score

    predicted = fitted.predict(rows)["plan"]
    want = accuracy_score(rows["plan"].astype(str), predicted.astype(str))
    assert report["metrics"]["plan"]["accuracy"]["float"] == pytest.approx(want)


def test_quantized_metrics_leave_out_tasks_without_labelled_rows(trained, rows, tmp_path, capsys):
    _, model = trained
    unlabelled = rows.assign(plan=None)  # no plan label: its metrics would be NaN
    unlabelled.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "q"
    args = ["export", str(model), "--format", "torchscript", "--out", str(out)]
    assert main([*args, "--quantize", "int8", "--data", str(tmp_path / "rows.csv")]) == 0
    assert "no labelled rows in --data for plan (no metrics)" in capsys.readouterr().out

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    manifest = json.loads((out / "manifest.json").read_text(), parse_constant=refuse)
    report = manifest["quantization"]
    assert set(report["metrics"]) == {"churn", "ltv"} and report["unlabelled"] == ["plan"]
    assert all(math.isfinite(v["float"]) for v in report["metrics"]["ltv"].values())


def test_export_refusals(trained, tmp_path, monkeypatch):
    fitted, _ = trained
    with pytest.raises(ValueError, match=r"unknown export format 'onx' \(did you mean 'onnx'\?\)"):
        export_model(fitted, tmp_path / "a", "onx")
    with pytest.raises(ExportError, match="no int8 quantisation; use onnx or torchscript"):
        export_model(fitted, tmp_path / "a", "exported-program", quantize=True)
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['chrun'\]: this model predicts"):
        export_model(fitted, tmp_path / "a", "torchscript", tasks=["chrun"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"already holds files.*pass overwrite=True"):
        export_model(fitted, tmp_path / "full", "torchscript")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )
    with pytest.raises(FormatUnavailable, match=r"pip install 'polytask\[onnx\]'"):
        export_model(fitted, tmp_path / "b", "onnx")
    assert not (tmp_path / "b").exists()


def test_export_cli(trained, rows, tmp_path, capsys):
    _, model = trained
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "ts"
    args = ["export", str(model), "--format", "torchscript", "--out", str(out)]
    assert main([*args, "--quantize", "int8", "--data", str(tmp_path / "rows.csv")]) == 0
    printed = capsys.readouterr().out
    assert "largest difference" in printed and "auc" in printed and "int8" in printed
    assert {p.name for p in out.iterdir()} == {"manifest.json", "model.ts", "model.int8.ts"}
    assert main(args) == 2
    assert "already holds files: choose an empty folder, or pass --overwrite" in (
        capsys.readouterr().err
    )
    assert main([*args, "--overwrite", "--tasks", "ltv"]) == 0
    assert json.loads((out / "manifest.json").read_text())["outputs"][0]["name"] == "ltv"


def test_predict_cli_picks_tasks(trained, rows, tmp_path, capsys):
    _, model = trained
    rows.to_csv(tmp_path / "rows.csv", index=False)
    assert main(["predict", str(model), str(tmp_path / "rows.csv"), "--tasks", "plan,ltv"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "ltv,plan,plan_prob_basic,plan_prob_premium,plan_prob_standard"
    assert main(["predict", str(model), str(tmp_path / "rows.csv"), "--tasks", "ltv,x"]) == 2
    assert "unknown task(s) ['x']: this model predicts churn, ltv, plan" in capsys.readouterr().err


FULL_BATCH = {"optimizer": "lbfgs", "lr": 1.0, "batch_size": 100_000, "epochs": 2}
CONVERSION = [
    {"name": "click", "kind": "binary", "target": "churn"},
    {"name": "buy", "kind": "binary", "target": "churn"},
]
ARCHITECTURES: dict[str, dict] = {  # hard sharing: test_export_predicts_as_the_python_model
    "mmoe": {"hidden": [16], "experts": 3},
    "cgc": {"hidden": [16]},
    "ple": {"hidden": [16]},
    "mtan": {"hidden": [16, 16]},
    "ltb": {"hidden": [16, 16]},
    "cross_stitch": {"hidden": [16]},
    "soft_sharing": {"hidden": [16]},
    "multi_input": {"hidden": [16]},
    "mean_regularised": {"tasks": TASKS[:2]},
    "low_rank": {"tasks": TASKS[:2], "hidden": [16]},
    "task_embedding": {"tasks": TASKS[:2], "hidden": [16]},
    "esmm": {"tasks": CONVERSION},
    "aitm": {"tasks": CONVERSION},
    "per_task_selection": {"hidden": [16], "training": {"selection": "per_task", "eval_every": 2}},
    "forest": {"tasks": TASKS[1:2], "trees": 10, "training": FULL_BATCH},
    "gp": {"tasks": TASKS[1:2], "steps": 20, "subset": 100, "training": FULL_BATCH},
    "blend": {  # multilevel with a forest: a weighted Ensemble of unlike members
        "tasks": TASKS[1:2],
        "training": FULL_BATCH,
        "blend": [
            {"architecture": "forest", "weight": 0.4, "trees": 10, "training": {"epochs": 1}}
        ],
    },
}
NAMES = {"per_task_selection": "hard_sharing", "blend": "multilevel"}
"""Entries of ARCHITECTURES that train another architecture in a particular way."""


@pytest.mark.slow
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_exports_to_every_format(architecture, rows, tmp_path):
    settings = dict(ARCHITECTURES[architecture])
    name = NAMES.get(architecture, architecture)
    fitted = train(tmp_path, name, **settings)
    expected = fitted.predict(rows)
    formats = ["torchscript", "exported-program"]
    if architecture in ("mtan", "multi_input", "forest", "gp"):
        formats.append("onnx")  # the slowest exporter: the others share its code paths
    for fmt in formats:
        export_model(fitted, tmp_path / fmt, fmt, data=rows)
        _same_predictions(load_exported(tmp_path / fmt).predict(rows), expected)


def test_the_int8_table_prints_four_digits_and_n_a_for_an_undefined_metric():
    from polytask.cli._serve import _quantization_table

    pair = {"rmse": {"float": 0.17364, "int8": 0.17355}, "r2": {"float": None, "int8": math.nan}}
    _, table = _quantization_table({"file": "m.int8.onnx", "bytes": 10, "float_bytes": 30,
                                    "max_output_change": 0.01, "metrics": {"a": pair}})  # fmt: skip
    assert table is not None
    rows = list(zip(*(c._cells for c in table.columns), strict=True))
    assert rows == [
        ("a", "rmse", "0.1736", "0.1736", "-0.000090"),
        ("a", "r2", "n/a", "n/a", "n/a"),
    ]


def test_the_cli_refuses_quantising_a_format_without_it_before_saying_exporting(trained, capsys):
    from polytask.cli._main import main

    _, model = trained
    args = ["export", str(model), "--format", "exported-program", "--quantize", "int8"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "has no int8 quantisation; use onnx or torchscript" in err
    assert "exporting to" not in err


def test_numeric_inputs_a_float32_graph_holds_too_coarsely_are_warned_of():
    # 1e6 ± 1 in float32 is held to 0.06, 6% of its std: the export's predictions drifted from
    # the model's by up to 1.9 (test RMSE 85) while its self-check, on float32 rows, saw 1e-6
    from polytask import Task
    from polytask.data import TabularPreprocessor
    from polytask.serve._export import _warn_float32_inputs

    g = np.random.default_rng(0)
    df = pd.DataFrame({"big": 1e6 + g.normal(size=50), "wide": 1e6 + 1e4 * g.normal(size=50),
                       "amount": g.lognormal(10, 1, 50), "y": g.normal(size=50)})  # fmt: skip
    pre = TabularPreprocessor.fit(df, ["big", "wide", "amount"], [], [Task("y", "regression")],
                                  log=["amount"])  # fmt: skip
    with pytest.warns(UserWarning, match=r"float32 inputs, which hold 'big' \(mean 1e\+06") as got:
        _warn_float32_inputs(pre)
    said = str(got[0].message)
    assert "'wide'" not in said and "'amount'" not in said  # a wide spread, a logarithm: fine


def test_overwrite_removes_the_earlier_exports_files_and_keeps_the_users(trained, tmp_path):
    """An int8 copy of the earlier model stayed beside the new graph, which a client reading
    the folder would load."""
    fitted, _ = trained
    out = tmp_path / "out"
    export_model(fitted, out, "torchscript", quantize=True)
    (out / "notes.txt").write_text("mine")
    export_model(fitted, out, "exported-program", overwrite=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", manifest["file"], "notes.txt"]
    )


def test_an_export_whose_float32_inputs_move_a_trees_predictions_warns(tmp_path):
    """x = 1000 + N(0, 1) is held by float32 to 6e-5 of its std: no smooth model notices, but
    a tree's split near a moved value sends the row the other way; the export's own check
    (graph against graph, both float32) saw no difference."""
    from polytask.app import fit, load_prepared
    from polytask.cli._config_io import parse_config

    rng = np.random.default_rng(0)
    x = 1000 + rng.normal(size=2000)
    frame = pd.DataFrame({"x": x, "y": np.sin(3 * (x - 1000)) * 10 + 0.1 * rng.normal(size=2000)})
    frame.to_csv(tmp_path / "f.csv", index=False)
    config = parse_config({
        "data": {"path": str(tmp_path / "f.csv"), "features": {"numeric": ["x"]},
                 "split": {"val_fraction": 0, "test_fraction": 0.2, "seed": 0}},
        "tasks": [{"name": "y", "kind": "regression"}],
        "model": {"architecture": "forest", "params": {"trees": 10, "min_leaf": 1}},
        "training": {"optimizer": "lbfgs", "lr": 1.0, "batch_size": 100000, "epochs": 1,
                     "progress": False},
        "output_dir": str(tmp_path / "run"),
    })  # fmt: skip
    fitted = fit(config, load_prepared(config), run_dir=tmp_path / "run")
    with pytest.warns(UserWarning, match=r"on \d+ of the 256 check rows its predictions differ"):
        export_model(fitted, tmp_path / "out", "torchscript", data=frame)
    served = load_exported(tmp_path / "out").predict(frame)["y"].to_numpy()
    assert np.abs(served - fitted.predict(frame)["y"].to_numpy()).max() > 1e-3  # as it says


def test_onnx_refuses_a_task_named_like_its_input(tmp_path):
    """A task named features collided with the graph input: onnxruntime's traceback."""
    pytest.importorskip("onnxruntime")
    from polytask.serve.formats._registry import get_format

    class Graph:
        output_names = ("churn", "features")

    with pytest.raises(ValueError, match="task 'features' has the name of the ONNX graph's"):
        get_format("onnx").write(Graph(), tmp_path / "m.onnx")  # type: ignore[arg-type]


def test_a_multilabel_outputs_schema_names_its_labels_in_order():
    """A client reading the (batch, labels) output needs the labels' order."""
    from polytask.serve._schema import output_schema
    from polytask.tasks import TargetFit, Task

    class Pre:
        def target_fit(self, task: Task) -> TargetFit:
            return TargetFit()

    tags = Task("tags", "multilabel", target=("sport", "news", "tech"))
    (entry,) = output_schema([tags], Pre())  # type: ignore[arg-type]
    assert entry["labels"] == ["sport", "news", "tech"]
    assert "labels" not in output_schema([Task("ltv", "regression")], Pre())[0]  # type: ignore[arg-type]


def test_a_format_registered_by_a_plugin_is_taken_on_the_command_line(
    trained, tmp_path, capsys, monkeypatch
):
    """--format had the built-in names as argparse choices: a format registered with --import
    worked from Python and was an 'invalid choice' on the command line."""
    from polytask.serve.formats import FORMATS

    _, model = trained
    monkeypatch.setitem(FORMATS, "mine", FORMATS["torchscript"])
    out = tmp_path / "mine"
    assert main(["-q", "export", str(model), "--format", "mine", "--out", str(out)]) == 0
    assert (out / "manifest.json").exists()
    assert main(["-q", "export", str(model), "--format", "nope"]) == 2
    assert "unknown export format 'nope'; allowed: " in capsys.readouterr().err
