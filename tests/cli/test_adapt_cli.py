"""`polytask adapt` and `polytask edit` from the command line: the adapted model predicts
every task, the old ones exactly as before; bad input is one clear error, exit code 2, and the
checkpoint read is never touched."""

from __future__ import annotations

import hashlib
import shutil

import pandas as pd
import pytest
import yaml

from polytask.cli._main import main
from polytask.data import make_customers

CONFIG = {
    "data": {
        "path": "data.csv",
        "features": {"numeric": ["usage_0", "usage_1", "age"], "categorical": ["region"]},
    },
    "tasks": [{"name": "churn", "kind": "binary"}, {"name": "ltv", "kind": "regression"}],
    "model": {"hidden": [8]},
    "training": {"epochs": 2, "batch_size": 64, "progress": False},
    "output_dir": "run",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained churn + ltv model (run/model.pt) and new rows that label plan (new.csv)."""
    folder = tmp_path_factory.mktemp("adapt_cli")
    make_customers(300, seed=0).to_csv(folder / "data.csv", index=False)
    make_customers(200, seed=1, missing={"plan": 0.0}).to_csv(folder / "new.csv", index=False)
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    # --no-report: a module fixture runs before tests/conftest.py's per-test report switch
    assert main(["-q", "train", str(folder / "config.yaml"), "--no-report"]) == 0
    return folder


@pytest.fixture
def project(trained, tmp_path):
    """A copy of the trained model and the new rows, for one test to write beside."""
    (tmp_path / "run").mkdir()
    shutil.copy(trained / "run" / "model.pt", tmp_path / "run" / "model.pt")
    shutil.copy(trained / "new.csv", tmp_path / "new.csv")
    return tmp_path


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_adapt_writes_a_model_that_predicts_old_tasks_exactly_as_before(project, capsys):
    model, new = project / "run" / "model.pt", project / "new.csv"
    assert main(["predict", str(model), str(new)]) == 0
    before = capsys.readouterr().out
    code = main(
        ["adapt", str(model), "--task", "plan:multiclass", "--data", str(new), "--steps", "50"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 (unchanged)" in out and "plan (new)" in out and "macro_f1" in out
    assert (project / "run" / "model-plan.pt").is_file()
    assert main(["predict", str(project / "run" / "model-plan.pt"), str(new)]) == 0
    after = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    old = pd.read_csv(pd.io.common.StringIO(before))
    pd.testing.assert_frame_equal(after[old.columns], old, check_exact=True)
    assert "plan_prob_premium" in after.columns


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "churn:binary"], "already has a task 'churn'"),
        (["--task", "plan:binary"], "use kind: multiclass"),
        (["--task", "tier:multiclass"], "new.csv: task 'tier': target columns ['tier'] not found"),
        (["--task", "plan:multiclas"], "did you mean 'multiclass'"),
        (["--task", "plan:multiclass", "--strategy", "l2"], "did you mean 'l2sp'"),
        (["--task", "plan:multiclass", "--param", "strength=-1"], "strength"),
        (["--task", "plan:multiclass", "--out", "run/model.pt"], "never overwritten"),
        (["--task", "plan:multiclass", "--out", "new.csv", "--overwrite"], "the --data file"),
        (["--task", "rec:reconstruction"], "learns from the inputs alone"),
        (["--task", "seg:segmentation"], "predicts per position of an image or a sequence"),
        (["--task", "tags:token"], "adapt adds tasks to models of table rows"),
        (
            ["--task", "m:multilabel"],
            "or sets num_classes; give its target column(s) with --target COL (once per column)",
        ),
        (["--task", "plan:multiclass", "--param", "strength=abc"], "expected a number"),
    ],
)
def test_bad_input_is_one_error_and_leaves_the_checkpoint_untouched(project, capsys, args, message):
    model = project / "run" / "model.pt"
    digest, files = _digest(model), sorted(p.name for p in (project / "run").iterdir())
    argv = ["adapt", str(model), "--data", str(project / "new.csv"), *args]
    if "--out" in args:
        out = args[args.index("--out") + 1]
        argv[argv.index("--out") + 1] = str(model if out.startswith("run/") else project / out)
    digest_data = _digest(project / "new.csv")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    if "already has" in message or "inputs alone" in message:  # refused before it says fitting
        assert "fitting" not in err
    assert _digest(model) == digest and _digest(project / "new.csv") == digest_data
    assert sorted(p.name for p in (project / "run").iterdir()) == files


def test_a_data_file_without_a_models_feature_is_named(project, capsys):
    """Found by trying adapt: a missing column was 'not found in the data', with no word of
    which of its two files (--data, --eval-data) lacked it."""
    model = project / "run" / "model.pt"
    pd.read_csv(project / "new.csv").drop(columns="age").to_csv(project / "eval.csv")
    argv = ["adapt", str(model), "--task", "plan:multiclass", "--data", str(project / "new.csv")]
    assert main([*argv, "--eval-data", str(project / "eval.csv")]) == 2
    err = capsys.readouterr().err
    assert "eval.csv: feature columns ['age'] not found" in err, err
    assert "fitting" not in err  # refused before any fitting


def test_evaluation_rows_without_the_new_tasks_column_score_the_old_tasks(project, capsys):
    """Found by review: --eval-data ('any rows with the features and some of the tasks'
    columns') was refused when it lacked the new task's column."""
    model = project / "run" / "model.pt"
    pd.read_csv(project / "new.csv").drop(columns="plan").to_csv(project / "eval.csv")
    argv = ["adapt", str(model), "--task", "plan:multiclass", "--data", str(project / "new.csv"),
            "--eval-data", str(project / "eval.csv"), "--out", str(project / "a.pt"),
            "--steps", "5"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "plan is not scored: give --eval-data rows that label it" in out
    assert main([*argv, "--curve", "--ks", "4", "--overwrite"]) == 2  # a curve scores plan
    assert "eval.csv: task 'plan': target columns ['plan'] not found" in capsys.readouterr().err


def test_task_spec_without_kind_is_a_usage_error(project):
    with pytest.raises(SystemExit) as stop:
        main(["adapt", str(project / "run" / "model.pt"), "--task", "plan", "--data", "x.csv"])
    assert stop.value.code == 2


def test_curve_prints_the_table_and_writes_nothing(project, capsys):
    model = project / "run" / "model.pt"
    argv = ["adapt", str(model), "--task", "plan:multiclass", "--data", str(project / "new.csv")]
    code = main([*argv, "--curve", "--ks", "5,10", "--repeats", "1", "--steps", "20"])
    out = capsys.readouterr().out
    assert code == 0
    assert "k-shot curve of 'plan'" in out and "k=10" in out and "scratch" in out
    assert not (project / "run" / "model-plan.pt").exists()


def test_edit_renames_and_removes_tasks(project, capsys):
    model = project / "run" / "model.pt"
    assert main(["edit", str(model), "--rename", "churn=leaves", "--remove", "ltv"]) == 0
    assert "tasks leaves" in capsys.readouterr().out
    edited = project / "run" / "model-edited.pt"
    assert main(["predict", str(edited), str(project / "new.csv")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "leaves,leaves_prob"
    assert main(["edit", str(model), "--remove", "ltv"]) == 2  # model-edited.pt exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["edit", str(model)]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert main(["edit", str(model), "--remove", "ltv", "--rename", "ltv=x", "--overwrite"]) == 2
    assert "--remove and --rename both name ['ltv']" in capsys.readouterr().err


def test_adapt_table_says_what_the_change_is_in_and_flags_an_old_task_made_worse():
    from types import SimpleNamespace

    from rich.console import Console

    from polytask import Task
    from polytask.cli._adapt import adapt_table

    old = [Task("churn", "binary"), Task("ltv", "regression")]
    result = SimpleNamespace(
        task="plan", strategy="finetune", init="random", rows=40,
        old_change={"churn": 10.8, "ltv": 4.5},
        old_before={"churn": {"auc": 0.80}, "ltv": {"rmse": 50.0}},
        old_after={"churn": {"auc": 0.79}, "ltv": {"rmse": 178.0}},  # auc −1.25%, rmse +256%
        new_metrics={}, fitted=SimpleNamespace(tasks=[*old, Task("plan", "multiclass")]),
    )  # fmt: skip
    console = Console(width=400, record=True)
    console.print(adapt_table(result, SimpleNamespace(tasks=old)))  # type: ignore[arg-type]
    text = console.export_text()
    assert "largest raw output change" in text and "logits" in text
    assert "⚠ ltv: rmse worse by 256% after adapting (finetune)" in text
    assert "⚠ churn" not in text  # 1.25% worse: under the 5% flag
    assert "plan is not scored: give --eval-data rows that label it" in text
    result.old_before["ltv"]["rmse"] = 0.0  # a perfect fit before: any error is worse
    console = Console(width=400, record=True)
    console.print(adapt_table(result, SimpleNamespace(tasks=old)))  # type: ignore[arg-type]
    assert "⚠ ltv: rmse worse (from 0) after adapting" in console.export_text()
