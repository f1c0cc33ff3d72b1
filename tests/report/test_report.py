import argparse
import json
import logging
import math
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from polytask.analysis._compare import ComparisonResult, ModelCost, SeedCost
from polytask.app import FittedModel
from polytask.cli._main import build_parser, main
from polytask.cli._report import with_report
from polytask.report import build_report, write_report
from polytask.report._run import read_run
from polytask.report._sections import comparison_section
from polytask.tasks import Task
from tests.report.conftest import write_project
from tests.report.structure import external, parse

TRAIN_PLOTS = [
    "loss",
    "curves-churn",
    "curves-ltv",
    "curves-plan",
    "weights",
    "gradients",
    "conflict-over-time",
    "heatmap-cosine",
    "heatmap-affinity",
]


def _page(path: Path):
    return parse(path.read_text())


def test_train_writes_a_report_with_every_plot_drawn_from_data(trained):
    run, printed = trained
    path = run / "report.html"
    assert f"report: {path}" in printed  # in the closing lines
    page = _page(path)
    assert [p.key for p in page.plots] == TRAIN_PLOTS
    for plot in page.plots:
        assert plot.svgs == 1 and plot.paths > 3, plot
        assert plot.marks >= 1, f"{plot.key}: no data drawn"
    present = {k for k, c in page.sections.items() if c == "present"}
    assert present == {"test", "curves", "weights", "gradients", "relations", "cost"}
    assert external(page) == []
    assert page.scripts == 1  # the inline drawn-check, nothing loaded
    html = path.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        'xmlns:xlink="http://www.w3.org/1999/xlink"', ""
    )


def test_the_test_table_names_a_standardised_loss_as_the_cli_does(trained):
    text = " ".join(_page(trained[0] / "report.html").text)
    assert "loss (standardised)" in text  # ltv, a regression task
    assert text.count("loss (standardised)") == 1  # not churn's or plan's


def test_a_run_without_comparison_says_what_is_absent_and_how_to_get_it(trained):
    run = read_run(trained[0], measure_size=False)
    assert comparison_section(run).absent == (
        "no single-task comparison in this folder: run `polytask compare CONFIG`"
    )
    page = _page(trained[0] / "report.html")
    absent = {k for k, c in page.sections.items() if c == "absent"}
    assert absent == {"comparison", "architectures", "groups", "label-fraction"}
    text = " ".join(page.text)
    assert "no single-task comparison in this folder" in text
    assert "Not in this folder: Multi-task vs single-task" in text


def test_model_size_counts_the_checkpoint_and_k_single_task_models(trained):
    run = read_run(trained[0])
    fitted = FittedModel.load(trained[0] / "model.pt")
    assert run.size is not None
    assert run.size.parameters == sum(p.numel() for p in fitted.model.parameters())
    assert run.size.stl_parameters is not None and set(run.size.stl_parameters) == {
        "churn",
        "ltv",
        "plan",
    }
    # each single-task model has the trunk: together they outweigh the one shared model
    assert sum(run.size.stl_parameters.values()) > run.size.parameters
    assert run.primary == {"churn": "auc", "ltv": "rmse", "plan": "macro_f1"}
    assert run.size.model == fitted.model_config.describe()
    assert (
        run.size.model.startswith("hard_sharing")
        and run.size.model in build_report(trained[0]).html()
    )  # the page says what the model is


def test_a_comparison_adds_the_delta_m_table_and_measured_costs(tmp_path):
    run = tmp_path  # compare.json alone: a comparison's folder without its seed runs
    tasks = [Task("churn", "binary"), Task("ltv", "regression"), Task("plan", "multiclass")]
    result = ComparisonResult(tasks)
    for seed in (0, 1):
        cost = SeedCost(
            ModelCost(1000, 4000, 2.0 + seed, snapshots=3, architecture_parameters=520),
            {t.name: ModelCost(600, 2400, 1.0) for t in tasks},
        )
        mtl = {"churn": 0.7 + seed / 100, "ltv": 250.0, "plan": 0.5}
        result.add(seed, mtl, {"churn": 0.68, "ltv": 260.0, "plan": 0.4 + seed / 50}, cost)
    result.to_json(run / "compare.json")
    report = build_report(run)
    assert {s.key for s in report.sections if s.absent is None} == {"comparison", "cost"}
    page = parse(report.html())
    text = " ".join(page.text)
    dm = result.delta_m_per_seed()
    assert "Δm" in text and f"{sum(dm) / 2:.0f}" in text
    from polytask.cli._render import transfer_cell

    cells = [transfer_cell(row) for row in result.summary()]
    assert any(c.startswith("p=") for c in cells) and all(c in text for c in cells)  # as the CLI
    assert transfer_cell({"transfer_p": 0.04, "negative_transfer": True}) == "⚠ p=0.040"
    assert "MTL worse? ltv: not tested: every seed changed by the same amount" in text  # named
    assert "Δ (%): the mean of each seed's own change, not the change between the means" in text
    assert "3 single-task models" in text and "1.80×" in text  # 1800 / 1000 parameters
    assert "3 per-task snapshots of its shared part; the architecture alone: 520" in text
    assert "5,400 KiB" not in text and "7.0 KiB" in text  # 7200 bytes
    cost = next(s for s in report.sections if s.key == "cost")
    assert "2.5" in cost.body and "3.0" in cost.body  # MTL seconds (mean), STL summed


def test_the_reports_delta_m_says_over_how_many_tasks_as_the_cli_does(tmp_path):
    from polytask.tasks import Undefined

    tasks = [Task("churn", "binary"), Task("ltv", "regression")]
    result = ComparisonResult(tasks)
    result.add(0, {"churn": Undefined("one class only"), "ltv": 10.0}, {"churn": 0.8, "ltv": 11.0})
    result.add(1, {"churn": 0.7, "ltv": 10.5}, {"churn": 0.75, "ltv": 11.5})
    result.to_json(tmp_path / "compare.json")
    section = next(s for s in build_report(tmp_path).sections if s.key == "comparison")
    assert "over 1 of 2 tasks" in " ".join(parse(section.body).text)


def test_pooled_rows_of_tasks_made_from_a_column_are_in_the_comparison(tmp_path):
    tasks = [Task(f"s{i}", "regression", where={"school": i}) for i in range(2)]
    result = ComparisonResult(tasks)
    for seed, (mtl_r2, stl_r2) in enumerate([(0.37, 0.30), (0.39, 0.30)]):
        pooled = ({"school": {"r2": mtl_r2}}, {"school": {"r2": stl_r2}})
        result.add(seed, {"s0": 9.0, "s1": 10.0}, {"s0": 9.5, "s1": 10.5}, pooled=pooled)
    result.to_json(tmp_path / "compare.json")
    section = next(s for s in build_report(tmp_path).sections if s.key == "comparison")
    page = " ".join(parse(section.body).text)
    assert "school: pooled" in page and "r2 ↑" in page
    assert "0.380 ± 0.014" in page  # the multi-task pooled r2 over the two seeds
    assert "not part of Δm" in page


def test_text_from_the_folder_is_escaped(tmp_path):
    name = 'a<b>&"x'
    rows = [
        {"step": s, "epoch": 1, f"train/{name}/loss": 1 / s, f"val/{name}/loss": 2 / s,
         f"val/{name}/<script>": 0.5, f"weight/{name}": 1.0}
        for s in (1, 2, 3)
    ]  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps(rows))
    (tmp_path / "test_metrics.json").write_text(json.dumps({name: {"<i>m</i>": 1.0}}))
    html = write_report(tmp_path).read_text()
    assert "<script>alert" not in html and "<b>" not in html and "<i>m</i>" not in html
    assert "a&lt;b&gt;&amp;&quot;x" in html
    page = parse(html)
    assert page.scripts == 1
    assert {p.key for p in page.plots} == {"curves-" + name, "weights"}
    assert all(p.marks for p in page.plots)


def test_the_report_command(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text(json.dumps([{"step": 1, "train/loss": 1.0}]))
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report.html")
    assert [p.key for p in _page(tmp_path / "report.html").plots] == ["loss"]
    out = tmp_path / "elsewhere.html"
    assert main(["-q", "report", str(tmp_path / "metrics.json"), "-o", str(out)]) == 0  # its file
    assert capsys.readouterr().out.strip() == str(out) and out.is_file()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "absent", "does not exist: give a run folder"),
        (lambda p: p, "is not a run folder (no metrics.csv"),
    ],
)
def test_report_errors_are_one_line_exit_2(tmp_path, capsys, make, message):
    assert main(["-q", "report", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_report_refuses_a_folder_as_output(trained, tmp_path, capsys):
    assert main(["-q", "report", str(trained[0]), "-o", str(tmp_path)]) == 2
    assert "is a folder: give a file name" in capsys.readouterr().err
    # an existing file that is not a report (the run's results, a config) is kept
    kept = tmp_path / "compare.json"
    kept.write_text("{}")
    assert main(["-q", "report", str(trained[0]), "-o", str(kept)]) == 2
    assert "exists and is not an HTML file" in capsys.readouterr().err
    assert kept.read_text() == "{}"
    again = tmp_path / "r.html"
    again.write_text("old")
    assert main(["-q", "report", str(trained[0]), "-o", str(again)]) == 0  # a report: rewritten
    assert again.read_text() != "old"


def test_train_and_compare_take_no_report():
    parser = build_parser()
    for command in ("train", "compare"):
        assert parser.parse_args([command, "c.yaml", "--no-report"]).no_report
        assert not parser.parse_args([command, "c.yaml"]).no_report


def test_a_failed_report_is_a_warning_and_no_report_skips_it(tmp_path, caplog):
    calls = []
    command = with_report(lambda args, console: calls.append(args))
    console = Console(file=open(tmp_path / "out.txt", "w"))  # noqa: SIM115
    with caplog.at_level(logging.WARNING, logger="polytask"):
        command(argparse.Namespace(run_dir=str(tmp_path), no_report=False), console)
    assert len(calls) == 1 and "no report written for" in caplog.text
    assert not (tmp_path / "report.html").exists()
    (tmp_path / "metrics.json").write_text(json.dumps([{"step": 1, "train/loss": 1.0}]))
    command(argparse.Namespace(run_dir=str(tmp_path), no_report=True), console)
    assert not (tmp_path / "report.html").exists()
    command(argparse.Namespace(run_dir=str(tmp_path), no_report=False), console)
    assert (tmp_path / "report.html").is_file()


def test_nan_and_missing_values_are_left_out_of_plots(tmp_path):
    rows = [{"step": s, "train/loss": math.nan if s == 2 else 1.0 / s} for s in (1, 2, 3)]
    (tmp_path / "metrics.json").write_text(json.dumps(rows).replace("NaN", "null"))
    report = build_report(tmp_path)
    assert report.plots == ("loss",)


@pytest.mark.slow
def test_compare_writes_a_report_with_the_comparison_and_costs(tmp_path, capsys):
    config = write_project(tmp_path)
    assert main(["-q", "compare", str(config), "--seeds", "1"]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / "run" / "report.html"
    assert f"report: {path}" in printed
    result = json.loads((tmp_path / "run" / "compare.json").read_text())
    cost = result["cost_per_seed"][0]
    assert cost["mtl"]["parameters"] > 0 and set(cost["stl"]) == {"churn", "ltv", "plan"}
    assert all(c["seconds"] > 0 for c in cost["stl"].values())
    page = _page(path)
    assert {k for k, c in page.sections.items() if c == "present"} >= {
        "curves",
        "comparison",
        "cost",
    }
    assert all(p.marks for p in page.plots)
    text = " ".join(page.text)
    assert "seed0/mtl/metrics.json" in text and "single-task model's (first seed)" in text

    # the same config's architectures beside it: each task's column names metric and direction
    assert main(["-q", "compare", str(config), "--seeds", "1", "--architectures", "mmoe"]) == 0
    primary = json.loads((tmp_path / "run" / "architectures.json").read_text())["primary"]
    assert primary["ltv"] == {"metric": "rmse", "higher_is_better": False}
    page = _page(path)
    assert page.sections["architectures"] == "present" and "ltv rmse ↓" in " ".join(page.text)

    (tmp_path / "run" / "compare.json").unlink()  # --architectures alone: its first model's curves
    shutil.rmtree(tmp_path / "run" / "seed0" / "mtl")
    page = _page(write_report(tmp_path / "run"))
    assert page.sections["curves"] == "present"
    assert "seed0/mmoe/metrics.json" in " ".join(page.text)


def test_many_tasks_give_a_bitmap_heatmap_and_capped_curves(tmp_path):
    k = 31
    names = [f"t{i}" for i in range(k)]
    cosine = [[1.0 if i == j else (i - j) / k for j in range(k)] for i in range(k)]
    relations = {"tasks": names, "cosine": cosine, "conflict_measurements": 4, "space": "jacobian"}
    (tmp_path / "relations.json").write_text(json.dumps(relations))
    report = build_report(tmp_path)
    assert report.plots == ("heatmap-cosine",)
    page = parse(report.html())
    assert page.plots[0].marks >= 1  # the cells as one inline image
    assert external(page) == []


def test_no_pair_measured_together_is_said_not_drawn(tmp_path):
    """Found by a logging trial: with one source per task, relations.json held no cosine
    between tasks, and the report drew a heatmap of the diagonal, captioned as a measurement."""
    relations = {"tasks": ["a", "b"], "cosine": [[1.0, None], [None, 1.0]],
                 "conflict_measurements": 15, "space": "shared parameters (probe)"}  # fmt: skip
    (tmp_path / "relations.json").write_text(json.dumps(relations))
    report = build_report(tmp_path)
    assert "heatmap-cosine" not in report.plots
    assert "No two tasks were measured on the same batch" in " ".join(parse(report.html()).text)


def test_a_run_whose_best_evaluation_is_not_its_last_says_whose_weights_it_serves(tmp_path):
    """model.pt (and test_metrics.json) hold the best validation evaluation's weights: the
    report and the closing lines say which, not only when training stopped early."""
    import copy
    import io
    from contextlib import redirect_stderr, redirect_stdout

    import yaml

    from polytask.data import make_customers
    from polytask.train import load_checkpoint

    make_customers(300, seed=0).to_csv(tmp_path / "data.csv", index=False)
    config = copy.deepcopy(write_project.__globals__["CONFIG"])
    config["model"] = {"hidden": [128, 128]}  # 180 training rows: it overfits after a few
    config["balancer"] = {"name": "ew"}
    config["training"] = {"epochs": 12, "batch_size": 32, "lr": 0.01, "patience": None}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):  # the closing lines: on stderr
        assert main(["train", str(tmp_path / "config.yaml")]) == 0
    _, meta = load_checkpoint(tmp_path / "run" / "model.pt")
    losses = [(row["val/loss"], int(row["step"]), int(row["epoch"])) for row in meta["history"]]
    best = min(losses)
    assert meta["weights_step"] == best[1] != losses[-1][1]  # it did overfit
    printed = " ".join(out.getvalue().split())
    assert f"val/loss was best at epoch {best[2]} (step {best[1]}), whose weights are" in printed
    text = " ".join(" ".join(_page(tmp_path / "run" / "report.html").text).split())
    assert f"weights of the evaluation at epoch {best[2]} (step {best[1]}" in text


def test_a_groups_comparisons_report_draws_its_all_tasks_models_curves(trained, tmp_path):
    """compare --groups keeps its all-tasks model in seedN/all: its curves and relations
    were absent, said to be missing a metrics.csv."""
    shutil.copytree(trained[0], tmp_path / "seed0" / "all")
    run = read_run(tmp_path, measure_size=False)
    assert run.history_source == tmp_path / "seed0" / "all" and run.history
    assert run.relations is not None
