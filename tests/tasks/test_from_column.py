"""Many tasks from one column: `Task.where` (a task labels only its rows), `TaskColumn` (one
task per value, too few rows refused or dropped), the split drawn within each value, and the
task mean / pooled summaries of evaluation, from Python and from a YAML config."""

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from polytask import Task
from polytask.app import FittedModel, RunConfig, load_prepared
from polytask.cli._config_io import load_config
from polytask.cli._main import main
from polytask.data import DataError, DataWarning, make_many_tasks
from polytask.data._split import split_within
from polytask.data._tabular import TabularPreprocessor
from polytask.tasks._from_column import TaskColumn


def test_a_task_with_where_labels_only_its_rows():
    frame = pd.DataFrame({"school": [5, 5.0, 7, "5", 8], "y": [1.0, 2.0, 3.0, 4.0, np.nan],
                          "x": [0.0, 1, 2, 3, 4]})  # fmt: skip
    task = Task("s5", "regression", target="y", where={"school": 5})
    labelled = task.labelled_frame(frame)
    # 5, 5.0 and "5" are the number 5 in a column of numbers; 8 is another school
    assert labelled["y"].notna().tolist() == [True, True, False, True, False]
    assert frame["y"].notna().sum() == 4  # the data itself untouched
    text = Task("s5", "regression", target="y", where={"school": "5"})
    assert text.labelled_frame(frame.astype({"school": str}))["y"].notna().tolist() == [
        True,
        False,
        False,
        True,
        False,
    ]  # fmt: skip  ("5.0" is not the text "5")
    pre = TabularPreprocessor.fit(frame, ["x"], [], [task])
    encoded = pre.transform_target(task, frame)
    assert np.isnan(encoded[2].item()) and not np.isnan(encoded[0].item())
    with pytest.raises(DataError, match=r"columns \['region'\] of its where are not in the data"):
        Task("r", "regression", target="y", where={"region": 1}).labelled_frame(frame)
    with pytest.raises(ValueError, match="where names its own target"):
        Task("r", "regression", target="y", where={"y": 1})
    assert Task(**task.to_dict()).where == {"school": 5}  # saved with the model


def test_task_column_makes_one_task_per_value_in_order():
    frame = pd.DataFrame({"g": ["b"] * 12 + ["a"] * 11 + ["c c"] * 10 + [None] * 3,
                          "y": np.arange(36.0)})  # fmt: skip
    tasks = TaskColumn("g", "y", "regression").tasks(frame)
    assert [t.name for t in tasks] == ["g_a", "g_b", "g_c_c"]
    assert [t.where for t in tasks] == [{"g": "a"}, {"g": "b"}, {"g": "c c"}]
    assert {t.target_columns for t in tasks} == {("y",)}
    named = TaskColumn("g", "y", "regression", name="school{value}").tasks(frame)
    assert [t.name for t in named] == ["schoola", "schoolb", "schoolc_c"]
    numbers = pd.DataFrame({"id": [10, 9, 10, 9, 100] * 10, "y": 1.0})
    assert [t.name for t in TaskColumn("id", "y", "regression").tasks(numbers)] == [
        "id_9",
        "id_10",
        "id_100",
    ]  # fmt: skip  (numbers sort as numbers)


def test_values_with_too_few_rows_are_refused_naming_them_or_dropped():
    frame = pd.DataFrame({"g": ["a"] * 12 + ["b"] * 4 + ["c"] * 3, "y": 1.0})
    frame.loc[15, "y"] = np.nan  # an unlabelled row does not count
    spec = TaskColumn("g", "y", "regression")
    with pytest.raises(
        DataError,
        match=r"2 values of 'g' label fewer than 10 rows \(rows: b \(3\), c \(3\)\).*too_few: drop",
    ):
        spec.tasks(frame, "data.csv")
    with pytest.warns(
        DataWarning, match=r"left out the 2 values of 'g' with fewer than 10 .*\); their 6 label"
    ):
        kept = TaskColumn("g", "y", "regression", too_few="drop").tasks(frame)
    assert [t.name for t in kept] == ["g_a"]
    assert [t.name for t in TaskColumn("g", "y", "regression", min_rows=3).tasks(frame)] == [
        "g_a", "g_b", "g_c",
    ]  # fmt: skip
    with pytest.raises(DataError, match="give the same task name"):
        TaskColumn("g", "y", "regression", name="t{value}", min_rows=1).tasks(
            pd.DataFrame({"g": ["a b", "a-b", "a b"], "y": 1.0}).replace({"a-b": "a_b"})
        )
    with pytest.raises(ValueError, match=r"must contain \{value\}"):
        TaskColumn("g", "y", "regression", name="task")
    with pytest.raises(ValueError, match=r"did you mean .regression."):
        TaskColumn("g", "y", "regresion")
    # the shared settings are checked on a stand-in task: the message names the column instead
    with pytest.raises(ValueError, match=r"error, the tasks made from 'g': unknown loss") as err:
        TaskColumn("g", "y", "binary", loss="focal")
    assert "'check'" not in str(err.value)
    with pytest.raises(ValueError, match=r"made from 'g': primary_metric 'r2' is not one of"):
        TaskColumn("g", "y", "binary", primary_metric="r2")


def test_split_within_gives_every_group_rows_in_every_part():
    groups = np.repeat(["a", "b", "c", "d"], [5, 9, 30, 2])
    split = split_within(groups, 0.2, 0.2, seed=0)
    every = np.sort(np.concatenate([split.train, split.val, split.test]))
    assert np.array_equal(every, np.arange(len(groups)))  # each row once
    for g, n in (("a", 5), ("b", 9), ("c", 30)):
        rows = np.flatnonzero(groups == g)
        sizes = [len(np.intersect1d(part, rows)) for part in (split.train, split.val, split.test)]
        assert sum(sizes) == n and min(sizes) >= 1
    assert len(np.intersect1d(split.train, np.flatnonzero(groups == "d"))) >= 1
    again = split_within(groups, 0.2, 0.2, seed=0)
    assert np.array_equal(again.test, split.test)
    assert not np.array_equal(split_within(groups, 0.2, 0.2, seed=1).test, split.test)
    # one row per value: not a task column; every part but training would be empty
    with (
        pytest.warns(DataWarning, match="groups hold fewer than 3 rows"),
        pytest.raises(
            DataError, match=r"at most 1 rows with .* leave the validation and test splits without"
        ),
    ):
        split_within(np.arange(20), 0.2, 0.2, seed=0)
    # groups of 2: their shares round to 0 (was 40 training rows, none to validate or test)
    with pytest.raises(DataError, match="leave the validation and test splits without rows"):
        split_within(np.repeat(np.arange(20), 2), 0.15, 0.2, seed=0)
    train = np.arange(0, len(groups), 2)  # a split file's training rows
    carved = split_within(groups, 0.25, 0.0, seed=0, train=train)
    assert not len(carved.test) and set(carved.val) <= set(train)
    assert np.array_equal(np.sort(np.concatenate([carved.train, carved.val])), train)


@pytest.fixture
def many(tmp_path):
    frame = make_many_tasks(n_tasks=12, rows_per_task=40, n_features=4, seed=3)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    config = {
        "data": {"path": "rows.csv", "features": {"numeric": ["x0", "x1", "x2", "x3"]},
                 "split": {"val_fraction": 0.15, "test_fraction": 0.25, "seed": 0}},
        "tasks": {"from_column": "task", "target": "y", "kind": "regression"},
        "model": {"architecture": "hard_sharing", "hidden": [16]},
        "training": {"epochs": 30, "batch_size": 64, "lr": 0.01, "progress": False},
        "output_dir": "run",
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path, frame


def test_a_config_makes_the_tasks_from_its_column_and_splits_within_them(many):
    folder, _frame = many
    config = load_config(folder / "config.yaml")  # the data's path is relative to the YAML
    order = (0, 1, 10, 11, *range(2, 10))  # text values sort as text
    assert [t.name for t in config.tasks] == [f"task_t{i}" for i in order]
    assert config.data.split.within == "task"
    data = load_prepared(config)
    for task in config.tasks:  # every task has rows in every part
        for part in (data.train, data.val, data.test):
            assert task.mask(part.targets[task.name]).any(), task.name
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        RunConfig(
            data={"path": str(folder / "rows.csv"), "features": {"numeric": ["x0"]}},
            tasks=TaskColumn("task", "y", "regression"),
        )  # the same from Python


def test_task_mean_and_pooled_metrics_are_each_tasks_and_all_rows(many, capsys):
    folder, frame = many
    assert main(["-q", "train", str(folder / "config.yaml"), "--no-report"]) == 0, (
        capsys.readouterr().err
    )
    printed = capsys.readouterr().out
    assert "task: task mean" in printed and "task: pooled" in printed
    metrics = json.loads((folder / "run" / "test_metrics.json").read_text())
    names = [n for n in metrics if not n.startswith("task: ")]
    assert len(names) == 12
    assert metrics["task: task mean"]["rmse"] == pytest.approx(
        np.mean([metrics[n]["rmse"] for n in names])
    )
    # pooled: every test row predicted by its own task's head, scored together
    config = load_config(folder / "config.yaml")
    data = load_prepared(config)
    from polytask.app._data import make_split

    split = make_split(config, len(frame), frame=frame)
    with np.load(folder / "run" / "split.npz") as written:  # the run's parts, as the docs say
        for part in ("train", "val", "test"):
            assert np.array_equal(written[f"{part}_idx"], getattr(split, part)), part
    test = frame.iloc[split.test]
    loaded = FittedModel.load(folder / "run" / "model.pt")
    predicted = loaded.predict(test)
    own = predicted.to_numpy()[np.arange(len(test)), predicted.columns.get_indexer(
        [f"task_{t}" for t in test["task"]]
    )]  # fmt: skip
    y = test["y"].to_numpy()
    # each row's own task's prediction in the target's column; other tasks' cells left blank
    assert np.allclose(predicted["y"].to_numpy(), own)
    assert int(predicted.drop(columns="y").notna().sum(axis=1).max()) == 1
    beside = loaded.predict(test, id_columns=["y"])  # the true values kept beside
    assert np.allclose(beside["y_predicted"].to_numpy(), own)
    assert np.array_equal(beside["y"].to_numpy(), test["y"].to_numpy())
    with pytest.warns(DataWarning, match=r"row\(s\) hold values no task was made for"):
        unseen = loaded.predict(test.assign(task="t99"))  # a value no task was made for
    assert unseen.isna().all().all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        two = loaded.predict(test, tasks=["task_t0", "task_t1"])  # the others not chosen
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(said) == 1 and "belong to tasks not chosen for prediction" in said[0]
    chosen = test["task"].isin(["t0", "t1"]).to_numpy()
    assert two["y"].notna().to_numpy().tolist() == chosen.tolist()
    anonymous = loaded.predict(test.drop(columns="task"))  # whose rows: unknown, so all tasks
    assert "y" not in anonymous and anonymous.notna().all().all()
    rmse = float(np.sqrt(np.mean((own - y) ** 2)))
    r2 = 1 - float(np.sum((own - y) ** 2) / np.sum((y - y.mean()) ** 2))
    assert metrics["task: pooled"]["rmse"] == pytest.approx(rmse, rel=1e-4)
    assert metrics["task: pooled"]["r2"] == pytest.approx(r2, rel=1e-4)
    assert r2 > 0.3  # the tasks share most of their model: learnt
    assert loaded.tasks[0].where == {"task": "t0"}
    assert len(data.tasks) == 12


def test_split_by_group_puts_each_group_whole_in_one_part():
    from polytask.data._split import split_by_group

    groups = np.repeat([f"p{i}" for i in range(10)], 7)
    split = split_by_group(groups, 0.2, 0.3, seed=0)
    parts = [set(groups[rows]) for rows in (split.train, split.val, split.test)]
    assert [len(p) for p in parts] == [5, 2, 3]  # of 10 patients: 30% test, 20% validation
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sum(len(r) for r in (split.train, split.val, split.test)) == len(groups)
    with pytest.raises(DataError, match="cannot be split into whole groups"):
        split_by_group(np.array(["a", "a", "b"]), 0.4, 0.5, seed=0)
    # 3 groups, validation's share rounds to 0 groups: trained without validation, silently
    with pytest.raises(DataError, match="3 groups cannot be split into whole groups"):
        split_by_group(np.repeat(["a", "b", "c"], 10), 0.15, 0.2, seed=0)
    with pytest.raises(ValueError, match=r"split\.by .* excludes split\.within"):
        RunConfig(
            data={"builtin": "many_tasks", "split": {"by": "task", "within": "task"}},
            tasks=TaskColumn("task", "y", "regression"),
        )


def test_a_config_split_by_puts_whole_groups_in_parts_and_large_ids_stay_apart():
    from polytask.app._config import SplitConfig
    from polytask.app._data import make_split

    frame = pd.DataFrame({"g": np.repeat(list("abcdefghij"), 5)})
    split = make_split(SplitConfig(by="g", val_fraction=0.2, test_fraction=0.3), 50, "x", frame)
    parts = [set(frame.g.to_numpy()[rows]) for rows in (split.train, split.val, split.test)]
    assert [len(p) for p in parts] == [5, 2, 3] and not parts[0] & parts[2]
    big = pd.DataFrame({"id": [2**53, 2**53 + 1] * 3, "y": 1.0})  # equal as floats
    tasks = TaskColumn("id", "y", "regression", min_rows=1).tasks(big)
    assert [int(t.labelled_frame(big)["y"].notna().sum()) for t in tasks] == [3, 3]
    floats = pd.DataFrame({"id": [1.0, 2.0, np.nan] * 4, "y": 1.0})  # ids read with a NaN
    assert [t.name for t in TaskColumn("id", "y", "regression", min_rows=1).tasks(floats)] == [
        "id_1", "id_2",
    ]  # fmt: skip


def test_progress_lines_show_the_task_mean_of_many_tasks_from_a_column():
    from types import SimpleNamespace

    from polytask.train._callbacks import _summary

    tasks = (
        *TaskColumn("g", "y", "regression", min_rows=1).tasks(
            pd.DataFrame({"g": list(range(15)), "y": 1.0})
        ),
        Task("other", "binary"),
    )
    logs = {f"val/g_{i}/rmse": float(i) for i in range(15)} | {"val/other/auc": 0.75}
    line = _summary(SimpleNamespace(tasks=tasks), {"train/loss": 1.0, **logs})
    assert line == "train/loss=1  val/g: task mean rmse=7  val/other/auc=0.75"


def test_predictions_find_a_rows_task_as_training_does():
    """A number in `where` matches its text and float forms, as when the tasks were made."""
    from polytask.app._fitted import _inside

    frame = pd.DataFrame({"store": ["3", "x", "3.0", 3, None]})
    assert _inside({"store": 3}, frame).tolist() == [True, False, True, True, False]
    assert _inside({"store": "x"}, frame).tolist() == [False, True, False, False, False]


@pytest.mark.parametrize("kind", ["regression", "binary"])
def test_a_new_groups_rows_are_predicted_by_the_shared_part_where_the_model_has_one(many, kind):
    """mean_regularised / multilevel predict a value no task was made for by the shared head
    alone (a new school's deviation at its prior mean, zero; for binary tasks averaged over
    it); rows of known values keep their
    own task's prediction; an architecture without a shared part leaves them blank."""
    from polytask import TrainConfig
    from polytask.app import ModelConfig, fit

    folder, frame = many
    target = "y" if kind == "regression" else "high"
    frame = frame.assign(high=(frame["y"] > frame["y"].median()).astype(int))
    frame.to_csv(folder / "rows2.csv", index=False)
    config = RunConfig(
        data={"path": str(folder / "rows2.csv"), "features": {"numeric": ["x0", "x1", "x2", "x3"]},
              "split": {"val_fraction": 0.0, "test_fraction": 0.25, "seed": 0}},
        tasks=TaskColumn("task", target, kind),
        model=ModelConfig("multilevel"),
        training=TrainConfig(optimizer="lbfgs", lr=1.0, batch_size=10**6, epochs=20,
                             progress=False, patience=None),
    )  # fmt: skip
    fitted = fit(config, load_prepared(config))
    rows = frame.iloc[:30].assign(task=["t99"] * 10 + list(frame["task"].iloc[10:30]))
    with pytest.warns(DataWarning, match=r"10 row\(s\) hold values no task was made for .*"
                      r"predictions are the model's shared part's, as for a new"):  # fmt: skip
        predicted = fitted.predict(rows)
    column = target if kind == "regression" else f"{target}_prob"
    x = fitted.preprocessor.source(rows.iloc[:10], None, ()).x  # type: ignore[union-attr]
    with torch.no_grad():
        raw = fitted.model.shared_prediction(x).reshape(-1).double()  # type: ignore[union-attr]
    if kind == "regression":
        mean, std = fitted.preprocessor.target_fit(fitted.tasks[0]).scale
        want = (raw * std + mean).numpy()
    else:
        want = torch.sigmoid(raw).numpy()
    assert np.allclose(predicted[column].to_numpy()[:10], want, rtol=1e-4, atol=1e-5)
    known = fitted.predict(rows.iloc[10:])
    assert np.allclose(predicted[column].to_numpy()[10:], known[column].to_numpy())
    assert predicted[column].notna().all()
    with torch.no_grad():  # a new task's head is the centre of the tasks' heads
        heads = torch.stack(list(fitted.model(x).values())).mean(0)  # type: ignore[operator]
    if kind == "binary":  # its logit shrunk by the spread of its deviation (the probit rule)
        assert ((raw.abs() < heads.reshape(-1).abs()) & (raw * heads.reshape(-1) > 0)).all()
    else:
        torch.testing.assert_close(heads.reshape(-1), raw.float(), rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        odd = fitted.predict(rows.iloc[:12].assign(task=[None, None] + [" t0"] * 10))
    said = {str(w.message): w.filename for w in caught if issubclass(w.category, DataWarning)}
    assert set(said.values()) == {__file__}  # pointed at the caller's line, not polytask's
    missing, spaced = sorted(said, key=lambda m: "no 'task' value" not in m)
    assert missing.startswith("2 row(s) have no 'task' value") and "as for a new group" in missing
    assert spaced.startswith("10 row(s) hold values no task was made for (e.g. {'task': ' t0'})")
    assert "no row holds a value the tasks were made for (t0, t1, t10" in spaced
    assert odd[column].notna().all()
    hard = dataclasses.replace(
        config, model=ModelConfig("hard_sharing", {"hidden": (8,)}),
        training=TrainConfig(epochs=2, batch_size=64, progress=False),
    )  # fmt: skip
    with pytest.warns(DataWarning, match=r"predictions are blank: the model has no shared part"):
        blank = fit(hard, load_prepared(hard)).predict(rows)
    assert blank[column].isna().to_numpy()[:10].all() and blank[column].notna()[10:].all()
    if kind == "binary":  # labels as trained, 0 / 1 (not 0.0 / 1.0), blank rows as <NA>
        own = blank[fitted.tasks[0].name]  # one task's column: blank on the others' rows
        for labels in (predicted[target], blank[target], own):
            assert pd.api.types.is_integer_dtype(labels), labels.dtype
            assert set(labels.dropna().tolist()) <= {0, 1}
        assert blank[target].isna().to_numpy()[:10].all() and own.isna().any()
        assert own.notna().any() and predicted[target].notna().all()


def test_a_split_files_validation_rows_are_carved_within_each_value(many):
    folder, frame = many
    rows = np.arange(len(frame))
    np.savez(folder / "split.npz", train_idx=rows[rows % 4 != 0], test_idx=rows[rows % 4 == 0])
    raw = yaml.safe_load((folder / "config.yaml").read_text())
    raw["data"]["split"] = {"file": "split.npz", "val_fraction": 0.15}
    (folder / "file.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(folder / "file.yaml")
    assert config.data.split.within == "task"
    data = load_prepared(config)
    assert data.val is not None
    values = frame["task"].to_numpy()
    for task in config.tasks:  # each value's training rows: round(0.15 n) to validation
        own = values == task.where["task"]
        n_train, n_test = int((own & (rows % 4 != 0)).sum()), int((own & (rows % 4 == 0)).sum())
        assert int(task.mask(data.val.targets[task.name]).sum()) == round(0.15 * n_train)
        assert int(task.mask(data.test.targets[task.name]).sum()) == n_test


def test_rows_without_a_target_or_a_value_are_warned_about_and_split_apart(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"task": np.repeat(["t0", "t1", "t2"], [12, 10, 10]),
                          "x0": rng.normal(size=32), "x1": rng.normal(size=32)})  # fmt: skip
    frame["y"] = frame["x0"] + rng.normal(size=32)
    frame.loc[[0, 2, 4, 6, 8, 10], "y"] = np.nan  # half of t0's rows unlabelled
    frame.loc[[12, 13], "task"] = np.nan
    frame.to_csv(tmp_path / "rows.csv", index=False)
    with pytest.warns(DataWarning) as seen:
        config = RunConfig(
            data={"path": str(tmp_path / "rows.csv"), "features": {"numeric": ["x0", "x1"]},
                  "split": {"val_fraction": 0.2, "test_fraction": 0.35}},
            tasks=TaskColumn("task", "y", "regression", min_rows=5),
        )  # fmt: skip
    said = " | ".join(str(w.message) for w in seen)
    assert "2 rows with a 'y' target but no 'task' value: they train no task" in said
    assert "6 rows with no 'y' target: they label no task" in said
    data = load_prepared(config)
    t0 = config.tasks[0]
    assert t0.name == "task_t0"
    counts = [int(t0.mask(p.targets[t0.name]).sum()) for p in (data.train, data.val, data.test)]
    assert counts == [3, 1, 2]  # its 6 labelled rows cut by the fractions, blank rows apart


def test_a_missing_task_column_names_the_field_and_a_close_match(many):
    folder, _frame = many
    raw = yaml.safe_load((folder / "config.yaml").read_text())
    raw["tasks"]["from_column"] = "tasks"
    (folder / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match=r"tasks.from_column column \['tasks'\] not found \(did you "
                       r"mean 'task'\?\)"):  # fmt: skip
        load_config(folder / "bad.yaml")
    with pytest.raises(DataError, match=r"tasks.target column \['Y'\] not found \(did you mean "
                       r"'y'"):  # fmt: skip
        TaskColumn("task", "Y", "regression").tasks(pd.DataFrame({"task": [1], "y": [2.0]}))


def test_a_column_of_measurements_is_refused_as_the_task_column():
    frame = pd.DataFrame({"x0": np.linspace(0, 1, 60), "y": 1.0})  # every row its own value
    for too_few in ("refuse", "drop"):
        with pytest.raises(DataError, match=r"the 60 values of 'x0' label 60 rows, none of them "
                           r"10 or more: tasks.from_column names the column whose values are "
                           r"the tasks"):  # fmt: skip
            TaskColumn("x0", "y", "regression", too_few=too_few).tasks(frame)


def test_an_exported_models_new_group_rows_are_blank_saying_why(many, tmp_path):
    # the warning said the model had no shared part (multilevel has one): the export has not
    from polytask import TrainConfig
    from polytask.app import ModelConfig, fit
    from polytask.serve import export_model, load_exported

    folder, frame = many
    config = RunConfig(
        data={"path": str(folder / "rows.csv"), "features": {"numeric": ["x0", "x1", "x2", "x3"]},
              "split": {"val_fraction": 0.0, "test_fraction": 0.25, "seed": 0}},
        tasks=TaskColumn("task", "y", "regression"),
        model=ModelConfig("multilevel"),
        training=TrainConfig(optimizer="lbfgs", lr=1.0, batch_size=10**6, epochs=5,
                             progress=False, patience=None),
    )  # fmt: skip
    fitted = fit(config, load_prepared(config))
    export_model(fitted, tmp_path / "out", "torchscript")
    rows = frame.iloc[:12].assign(task=["t99"] * 4 + list(frame["task"].iloc[4:12]))
    with pytest.warns(DataWarning, match=r"4 row\(s\) hold values no task was made for .*"
                      r"an exported graph holds the model's own tasks only"):  # fmt: skip
        predicted = load_exported(tmp_path / "out").predict(rows)
    assert predicted["y"].isna().tolist() == [True] * 4 + [False] * 8


def test_ids_beyond_2_53_read_as_floats_are_refused():
    # a blank cell made pandas read 64-bit store ids as floats: two stores became one task
    frame = pd.DataFrame({"store": [9007199254740993.0, 9007199254740995.0, np.nan] * 4,
                          "y": 1.0})  # fmt: skip
    with pytest.raises(DataError, match=r"'store' holds ids beyond 2\*\*53 as floats"):
        TaskColumn("store", "y", "regression", min_rows=1).tasks(frame)
    exact = pd.DataFrame({"store": [9007199254740993, 9007199254740995] * 4, "y": 1.0})
    assert len(TaskColumn("store", "y", "regression", min_rows=1).tasks(exact)) == 2


def test_tasks_of_one_column_but_different_targets_are_no_family():
    """Found by review: two tasks on one group column, predicting different target columns
    (y and 100·y + 500), were averaged and pooled into 'grp: task mean' and 'grp: pooled'
    (a pooled r2 of 0.72 from tasks of r2 0.06 and -1.0)."""
    from polytask.train._evaluate import task_families

    same = [Task(f"t{g}", "regression", target="y", where={"grp": g}) for g in "ab"]
    assert list(task_families(same)) == ["grp"]
    mixed = [Task("east", "regression", target="y", where={"grp": "e"}),
             Task("fast", "regression", target="y2", where={"grp": "f"})]  # fmt: skip
    assert task_families(mixed) == {}
