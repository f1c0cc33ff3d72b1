"""Loggers through one callback interface (issue 25): CSV and JSON always, TensorBoard and MLflow
by name, each logged step and value equal to metrics.csv's, also across a resume."""

import csv
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp
from polytask.train import LOGGERS, Logger
from polytask.train.loggers import MLflowLogger, make_logger
from polytask.train.loggers._csv import CSVLogger
from polytask.train.loggers._json import JSONLogger

TASKS = [Task("a", "regression"), Task("b", "regression")]
SKIP = ("step", "time/")  # the x axis, and the timings (which a resumed run does not repeat)


def _data(n: int = 64) -> TaskData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TaskData(x, {"a": x[:, 0], "b": x[:, 1] - x[:, 2]})


def _trainer(run_dir, steps=20, callbacks=(), **kw) -> Trainer:
    torch.manual_seed(0)
    config = TrainConfig(
        epochs=None, steps=steps, eval_every=5, batch_size=16, progress=False, **kw
    )
    model = hard_sharing_mlp(4, TASKS, hidden=(8,))
    return Trainer(model, config=config, callbacks=callbacks, run_dir=run_dir)


def _csv(run_dir) -> dict[str, dict[int, float]]:
    """metrics.csv as key → {step: value}."""
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {
        k: {int(r["step"]): float(r[k]) for r in rows if r[k] != ""}
        for k in rows[0]
        if not k.startswith(SKIP)
    }


def _tensorboard(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {k: [(e.step, e.value) for e in events.Scalars(k)] for k in events.Tags()["scalars"]}


def _mlflow(run_dir, **options) -> tuple[dict[str, list[tuple[int, float]]], dict[str, str]]:
    import json

    from mlflow.tracking import MlflowClient

    record = json.loads((run_dir / "mlflow_run.json").read_text())
    logger = MLflowLogger(run_dir, **options)
    with _allowed(record["tracking_uri"]):
        client = MlflowClient(record["tracking_uri"])
        run = client.get_run(record["run_id"])
        history = {
            k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
            for k in run.data.metrics
        }
    assert logger.uri() == record["tracking_uri"]
    return history, run.data.params


def _allowed(uri):
    from polytask.train.loggers._mlflow import _file_store_allowed

    return _file_store_allowed(uri)


def _same(logged: dict[str, list[tuple[int, float]]], expected: dict[str, dict[int, float]]):
    """Every metrics.csv column logged once per evaluation step, with its value."""
    assert set(logged) >= set(expected)
    for key, values in expected.items():
        steps = [s for s, _ in logged[key]]
        assert steps == sorted(values), key  # each step once
        for step, value in logged[key]:
            want = values[step]
            assert (math.isnan(value) and math.isnan(want)) or value == pytest.approx(want), key


def test_csv_and_json_are_always_written_and_a_custom_logger_gets_each_evaluation(tmp_path):
    class Remember(Logger):
        def __init__(self):
            self.calls = []

        def start(self, step, history):
            self.calls.append(("start", step, len(history)))

        def log_params(self, params):
            self.calls.append(("params", params["training"]["steps"]))

        def log_metrics(self, step, logs):
            self.calls.append(("metrics", step, logs["step"]))

        def close(self):
            self.calls.append(("close",))

    mine = Remember()
    trainer = _trainer(tmp_path, callbacks=[mine])
    history = trainer.fit(_data(), _data())
    assert mine.calls == [
        ("start", 0, 0),
        ("params", 20),
        *[("metrics", s, s) for s in (5, 10, 15, 20)],
        ("close",),
    ]
    assert sorted(_csv(tmp_path)["train/loss"]) == [h["step"] for h in history]
    assert (tmp_path / "metrics.json").is_file()
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "mlruns").exists()


def test_without_a_run_folder_no_logger_runs_and_asking_for_one_warns(caplog):
    trainer = _trainer(None, steps=5, loggers=("tensorboard",))
    assert "write into the run folder: there is none" in caplog.text
    assert not any(isinstance(cb, Logger) for cb in trainer.callbacks)


def test_tensorboard_scalars_equal_metrics_csv(tmp_path):
    _trainer(tmp_path, loggers=("tensorboard",)).fit(_data(), _data())
    logged = _tensorboard(tmp_path)
    assert "val/a/rmse" in logged and "weight/b" in logged and "step" not in logged
    _same(logged, _csv(tmp_path))


def test_mlflow_metrics_and_params_equal_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    _trainer(tmp_path, loggers=("mlflow",), logger_params={"mlflow": {"experiment": "t"}}).fit(
        _data(), _data()
    )
    logged, params = _mlflow(tmp_path)
    _same(logged, _csv(tmp_path))
    assert params["training.lr"] == "0.001" and params["training.loggers"] == '["mlflow"]'
    assert params["balancer"] == "EqualWeights" and (tmp_path / "mlruns").is_dir()
    assert "MLFLOW_ALLOW_FILE_STORE" not in __import__("os").environ  # set for its calls only


def test_mlflow_tracking_uri_from_the_environment(tmp_path, monkeypatch):
    store = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    _trainer(tmp_path / "run", steps=5, loggers=("mlflow",)).fit(_data())
    assert (store / "0").is_dir() and not (tmp_path / "run" / "mlruns").exists()
    logged, _ = _mlflow(tmp_path / "run")
    assert [s for s, _ in logged["train/loss"]] == [5]


def test_mlflow_tracking_uri_as_a_plain_path_is_a_file_store_polytask_opens(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = str(tmp_path / "plain")  # no file: scheme; MLflow 3 refused it at the first eval
    _trainer(tmp_path / "run", steps=5, loggers=("mlflow",),
             logger_params={"mlflow": {"tracking_uri": store}}).fit(_data())  # fmt: skip
    assert (tmp_path / "plain" / "0").is_dir()
    logged = _mlflow(tmp_path / "run", tracking_uri=store)[0]
    assert [s for s, _ in logged["train/loss"]] == [5]


@pytest.mark.parametrize("value", ["false", "0", "False"])
def test_a_file_store_the_environment_forbids_is_refused_before_training(monkeypatch, value):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", value)
    with pytest.raises(ValueError, match=r"forbids its default store.*sqlite:///mlflow\.db"):
        TrainConfig(loggers=("mlflow",))
    with pytest.raises(ValueError, match="forbids the file store '/x/mlruns'"):
        TrainConfig(loggers=("mlflow",), logger_params={"mlflow": {"tracking_uri": "/x/mlruns"}})
    TrainConfig(loggers=("mlflow",), logger_params={"mlflow": {"tracking_uri": "sqlite:///m.db"}})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")
    TrainConfig(loggers=("mlflow",))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    TrainConfig(loggers=("mlflow",))


def test_a_resumed_run_logs_each_step_once_with_the_uninterrupted_values(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    kw = {"loggers": ("tensorboard", "mlflow"), "keep_last": 3}
    _trainer(tmp_path, **kw).fit(_data(), _data())
    whole = _csv(tmp_path)
    # as if killed after logging steps 15 and 20 but before their checkpoints were written
    for name in ("step-00000015.pt", "step-00000020.pt"):
        (tmp_path / "checkpoints" / name).unlink()
    resumed = _trainer(tmp_path, **kw)
    assert resumed.resume(tmp_path).name == "step-00000010.pt"
    resumed.fit(_data(), _data())
    again = _csv(tmp_path)
    assert again == whole  # bit-identical resume; metrics.csv keeps the full history once
    _same(_tensorboard(tmp_path), again)
    _same(_mlflow(tmp_path)[0], again)


def test_a_run_stopped_before_an_evaluations_checkpoint_leaves_mlflow_without_it(
    tmp_path, monkeypatch
):
    """Found by a logging trial: stopped after MLflow took step 15 but before its checkpoint,
    the resume (from step 10, with the length changed and a cosine schedule, so step 15's
    values change) skipped step 15 as held: MLflow kept the stopped run's values (and, stopped
    while MLflow wrote them, only some of its keys)."""
    from polytask.train._callbacks import Checkpointer

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    real = Checkpointer.on_eval_end

    def stop_at_15(self, trainer, logs):  # type: ignore[no-untyped-def]
        if trainer.step == 15:
            raise KeyboardInterrupt
        real(self, trainer, logs)

    kw = {"loggers": ("mlflow",), "lr_schedule": "cosine"}
    monkeypatch.setattr(Checkpointer, "on_eval_end", stop_at_15)
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path, **kw).fit(_data(), _data())
    held, _ = _mlflow(tmp_path)
    assert [s for s, _ in held["train/loss"]] == [5, 10]  # 15 waited for its checkpoint
    monkeypatch.setattr(Checkpointer, "on_eval_end", real)
    unsaved = _trainer(tmp_path / "none", keep_last=0, **kw)  # keeps no checkpoint to resume

    class Stop(Logger):
        def on_eval_end(self, trainer, logs):  # type: ignore[no-untyped-def]
            if trainer.step == 15:
                raise KeyboardInterrupt

    unsaved.callbacks.append(Stop())
    with pytest.raises(KeyboardInterrupt):  # after the loggers took step 15
        unsaved.fit(_data(), _data())
    assert [s for s, _ in _mlflow(tmp_path / "none")[0]["train/loss"]] == [5, 10, 15]
    resumed = _trainer(tmp_path, steps=30, **kw)
    assert resumed.resume(tmp_path).name == "step-00000010.pt"
    resumed.fit(_data(), _data())
    _same(_mlflow(tmp_path)[0], _csv(tmp_path))  # each step once, the resumed run's values


def test_loggers_added_on_resume_get_the_earlier_evaluations(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _trainer(tmp_path, steps=10).fit(_data(), _data())
    resumed = _trainer(tmp_path, steps=20, loggers=("tensorboard", "mlflow"))
    resumed.resume(tmp_path)  # longer, and with loggers: both allowed on resume
    resumed.fit(_data(), _data())
    expected = _csv(tmp_path)
    assert sorted(expected["train/loss"]) == [5, 10, 15, 20]
    _same(_tensorboard(tmp_path), expected)
    _same(_mlflow(tmp_path)[0], expected)


def test_loggers_and_their_options_may_change_on_resume_other_nested_settings_may_not():
    from polytask.train._checkpoint import run_differences

    def run(experiment, lr):
        training = {"loggers": [], "logger_params": {"mlflow": {"experiment": experiment}},
                    "task_lr": {"a": lr}}  # fmt: skip
        return {"training": training, "config": {"training": training}}

    assert run_differences(run("x", 1.0), run("y", 1.0)) == []
    assert run_differences(run("x", 1.0), run("x", 2.0)) == [
        "config.training.task_lr.a: 1.0 → 2.0",
        "training.task_lr.a: 1.0 → 2.0",
    ]


def test_an_unknown_logger_lists_the_known_ones_with_the_nearest():
    with pytest.raises(ValueError, match=r"unknown logger 'tensorbord' \(did you mean "
                       r"'tensorboard'\?\); allowed: csv, json, mlflow, tensorboard"):  # fmt: skip
        TrainConfig(loggers=("tensorbord",))
    with pytest.raises(ValueError, match=r"tracking_ur: unknown parameter \(did you mean "):
        TrainConfig(loggers=("mlflow",), logger_params={"mlflow": {"tracking_ur": "x"}})
    with pytest.raises(ValueError, match="logger_params names 'mlflow', which loggers does not"):
        TrainConfig(logger_params={"mlflow": {}})


@pytest.mark.parametrize(("name", "module"), [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_missing_package_names_the_pip_extra_before_training(name, module, monkeypatch):
    config = TrainConfig(loggers=(name,))  # installed here
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not
    message = rf"logger '{name}': .* needs the {module} package.*pip install 'polytask\[{name}\]'"
    with pytest.raises(ValueError, match=message):
        TrainConfig(loggers=(name,))
    with pytest.raises(ValueError, match=message):  # at Trainer construction, not mid-run
        Trainer(hard_sharing_mlp(4, TASKS, hidden=(8,)), config=config, run_dir="unused")
    with pytest.raises(ValueError, match=message):
        make_logger(name, "unused")


def test_the_yaml_config_takes_loggers_and_refuses_an_unknown_one():
    from polytask.cli._config_io import ConfigError, parse_config

    raw = yaml.safe_load(
        textwrap.dedent(
            """
            data: {builtin: customers}
            tasks: [{name: churn, kind: binary}]
            training: {loggers: [tensorboard, mlflow], logger_params: {mlflow: {experiment: x}}}
            """
        )
    )
    config = parse_config(raw)
    assert config.training.loggers == ("tensorboard", "mlflow")
    assert config.training.logger_params == {"mlflow": {"experiment": "x"}}
    raw["training"] = {"loggers": ["mlflo"]}
    with pytest.raises(ConfigError, match=r"unknown logger 'mlflo' \(did you mean 'mlflow'\?\)"):
        parse_config(raw)


def test_tensorboard_and_mlflow_are_imported_only_where_used():
    """No module-level import of them anywhere in polytask (the subprocess test checks it)."""
    import ast
    from pathlib import Path

    import polytask

    for path in Path(polytask.__file__).parent.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in ("tensorboard", "mlflow") for n in names), path
            assert "torch.utils.tensorboard" not in names, path


@pytest.mark.slow
def test_importing_polytask_and_validating_loggers_imports_neither():
    assert set(LOGGERS) == {"csv", "json", "tensorboard", "mlflow"}
    code = (
        "import sys, polytask, polytask.train, polytask.app\n"
        "from polytask.train import TrainConfig\n"
        "TrainConfig(loggers=('tensorboard', 'mlflow'))\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'mlflow')]\n"
        "assert not loaded and 'torch.utils.tensorboard' not in sys.modules, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("logger", "rewrites"), [(CSVLogger, [2, 3, 4]), (JSONLogger, [2, 4])])
def test_history_files_appended_row_by_row_equal_one_written_whole(tmp_path, logger, rewrites):
    """Rows are appended to the file the logger wrote last (the first row, a new CSV column, or
    a file changed by someone else rewrite it whole): the file is byte for byte the one written
    at once."""
    rows = [{"step": 1, "a": 1.5}, {"step": 2, "a": 2.5}, {"step": 3, "a": 3.0, "b": 1.0},
            {"step": 4, "a": float("nan")}, {"step": 5, "b": 2.0}]  # fmt: skip
    written = []

    class Counted(logger):  # type: ignore[misc,valid-type]
        def write(self, path):  # type: ignore[no-untyped-def]
            written.append(int(self.rows[-1]["step"]))
            super().write(path)

    log = Counted(tmp_path / "run")
    log.start(0, rows[:1])  # a resumed run: its earlier rows come from the checkpoint
    path = tmp_path / "run" / logger.file_name
    for i, row in enumerate(rows[1:], start=2):
        if i == 4:  # touched from outside: the next write starts again from the rows
            path.write_text("edited")
        log.log_metrics(i, row)
        whole = logger(tmp_path / "whole")
        whole.rows = rows[:i]
        whole.write(tmp_path / f"whole{i}")
        assert path.read_text() == (tmp_path / f"whole{i}").read_text()
    assert written == rewrites


def test_a_cli_run_with_loggers_does_not_say_they_are_off(tmp_path, capsys, monkeypatch):
    """Found by a logging trial: every `polytask train` with loggers warned 'there is none, so
    they are off' (from its check of the data, made without a run folder), then logged."""
    from polytask.cli._main import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = {
        "data": {"builtin": "customers", "options": {"n": 300}},
        "tasks": [{"name": "churn", "kind": "binary"}, {"name": "ltv", "kind": "regression"}],
        "model": {"hidden": [8]},
        "training": {"epochs": 1, "batch_size": 64, "progress": False, "loggers": ["mlflow"]},
        "output_dir": str(tmp_path / "run"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "c.yaml"), "--no-report"]) == 0
    said = capsys.readouterr()
    assert "so they are off" not in said.out + said.err
    assert (tmp_path / "run" / "mlruns").is_dir()
