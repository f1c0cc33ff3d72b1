"""Per-task model selection (issue 23): each task served from its own best evaluation, with
the trunk of that evaluation; the degradation alert; their settings, checkpoints and resume."""

import io
import logging

import numpy as np
import pytest
import torch
from rich.console import Console

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp
from polytask.app import DataConfig, FittedModel, ModelConfig, RunConfig, fit, load_frame, prepare
from polytask.data._synthetic import make_related_regression
from polytask.models._per_task import PerTaskSnapshots
from polytask.train import Callback, ProgressDisplay, load_checkpoint
from polytask.train._alerts import DegradationWatch

TASKS = [Task("a", "regression"), Task("b", "regression")]
PROBE = torch.tensor(make_related_regression(n=32, seed=9)[0], dtype=torch.float32)


def _data(n: int, seed: int, scale_b: float = 1.0) -> TaskData:
    x, ya, yb = make_related_regression(n=n, seed=seed)
    targets = {"a": torch.tensor(ya, dtype=torch.float32),
               "b": torch.tensor(scale_b * yb, dtype=torch.float32)}  # fmt: skip
    return TaskData(torch.tensor(x, dtype=torch.float32), targets)


TRAIN = _data(256, 0)
# b's validation target is b shrunk to a fifth (a shifted distribution): the untrained model's
# near-zero predictions fit it best, so b peaks at the first evaluation while a keeps improving
VAL = _data(128, 1, scale_b=0.2)


class Recorder(Callback):
    """The model's predictions on PROBE at each evaluation, by step."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[str, torch.Tensor]] = {}

    def on_eval_end(self, trainer, logs):
        self.seen[trainer.step] = trainer.predict(PROBE)


def _trainer(selection: str = "per_task", callbacks=(), run_dir=None, **kw) -> Trainer:
    torch.manual_seed(0)
    base = {"epochs": 8, "batch_size": 64, "lr": 1e-2, "progress": False, "patience": None,
            "selection": selection}  # fmt: skip
    model = hard_sharing_mlp(20, TASKS, hidden=(32,))
    config = TrainConfig(**{**base, **kw})
    return Trainer(model, config=config, callbacks=callbacks, run_dir=run_dir)


def _best_step(history, key: str) -> int:
    return int(history[int(np.argmin([h[key] for h in history]))]["step"])


@pytest.fixture(scope="module")
def served():
    """One per-task run (shared by the tests that only read it): the trainer, its history, its
    predictions at each evaluation and its progress display's text."""
    recorder, shown = Recorder(), io.StringIO()
    display = ProgressDisplay("run", console=Console(file=shown, width=300), lines=1000)
    trainer = _trainer(callbacks=[recorder, display])
    history = trainer.fit(TRAIN, VAL)
    return trainer, history, recorder.seen, shown.getvalue()


def test_an_early_peaking_task_is_served_from_its_own_best_evaluation(served):
    trainer, history, seen, _ = served
    a, b = trainer.selected["a"], trainer.selected["b"]
    assert b["step"] == _best_step(history, "val/b/rmse") < a["step"]
    assert a["step"] == _best_step(history, "val/a/rmse") > history[0]["step"]
    assert (a["by"], b["by"]) == ("rmse", "rmse")
    assert isinstance(trainer.model, PerTaskSnapshots)
    predictions = trainer.predict(PROBE)
    assert torch.equal(predictions["b"], seen[b["step"]]["b"])
    assert torch.equal(predictions["a"], seen[a["step"]]["a"])
    assert not torch.allclose(predictions["b"], seen[history[-1]["step"]]["b"])
    final = trainer.evaluate(VAL)
    assert final["b"]["rmse"] == pytest.approx(b["value"], rel=1e-5)
    assert final["a"]["rmse"] == pytest.approx(a["value"], rel=1e-5)


def test_the_served_model_holds_one_trunk_per_best_evaluation_and_each_head_once(served):
    model = served[0].model
    assert isinstance(model, PerTaskSnapshots) and len(model.members) == 2
    trunk = sum(p.numel() for p in model.members[0].trunk.parameters())
    heads = sum(p.numel() for h in model.members[0].heads.values() for p in h.parameters())
    assert sum(p.numel() for p in model.parameters()) == 2 * trunk + heads


def test_compare_counts_the_architecture_once_and_says_how_many_snapshots_it_serves(served):
    """Found by an outside review: `compare --architectures` gave hard_sharing 1,417
    parameters where the architecture has 521 (five snapshots of its trunk counted), a count
    that changed from run to run with the epochs the tasks peaked at."""
    from types import SimpleNamespace

    from polytask.analysis._baselines import model_cost
    from polytask.models._per_task import one_copy

    model = served[0].model
    own = sum(p.numel() for p in hard_sharing_mlp(20, TASKS, hidden=(32,)).parameters())
    assert sum(p.numel() for p in one_copy(model).parameters()) == own
    cost = model_cost(SimpleNamespace(model=model), 1.0)  # type: ignore[arg-type]
    assert (cost.snapshots, cost.architecture_parameters) == (2, own)
    assert cost.parameters == sum(p.numel() for p in model.parameters()) > own  # as served


def test_the_display_ends_with_where_each_task_is_served_from(served):
    trainer, _, _, shown = served
    a, b = trainer.selected["a"], trainer.selected["b"]
    assert shown.splitlines()[-1] == (
        f"run: served per task: a from epoch {a['epoch']} (step {a['step']}, rmse "
        f"{a['value']:.4g}), b from epoch {b['epoch']} (step {b['step']}, rmse {b['value']:.4g})"
    )


def test_joint_selection_is_unchanged():
    recorder = Recorder()
    trainer = _trainer("joint", callbacks=[recorder])
    model = trainer.model
    history = trainer.fit(TRAIN, VAL)
    assert trainer.model is model and trainer.selected == {}
    best = _best_step(history, "val/loss")
    served = trainer.predict(PROBE)
    assert all(torch.equal(served[t], recorder.seen[best][t]) for t in ("a", "b"))


def test_all_bests_at_one_evaluation_restore_the_ordinary_model():
    trainer = _trainer(epochs=2, lr=3e-3)
    model = trainer.model
    trainer.fit(TRAIN, _data(128, 1))  # both tasks improve every epoch this early
    steps = {s["step"] for s in trainer.selected.values()}
    assert steps == {trainer.step} and trainer.model is model


def test_per_task_patience_stops_when_every_task_has_run_out():
    trainer = _trainer(epochs=40, patience=1)
    history = trainer.fit(TRAIN, VAL)
    assert trainer.should_stop and len(history) < 40
    steps = [h["step"] for h in history]
    best = {t: steps.index(s["step"]) for t, s in trainer.selected.items()}
    assert best["b"] + 1 < len(history) - 1  # b's patience ran out, and it kept training
    assert len(history) == max(best.values()) + 1 + 1  # stopped when a's ran out too
    assert "no task's primary metric has improved for 1 evaluations" in trainer.stopper.describe(
        trainer
    )


def test_a_resumed_per_task_run_ends_identical(tmp_path, served):
    whole = served[0]
    first = _trainer(epochs=5, run_dir=tmp_path)  # interrupted after 5 of 8 epochs
    first.fit(TRAIN, VAL)
    resumed = _trainer(run_dir=tmp_path)
    assert resumed.resume(tmp_path) is not None
    assert resumed.selected == first.selected != {}
    resumed.fit(TRAIN, VAL)
    assert resumed.selected == whole.selected and resumed.alerts == whole.alerts
    assert isinstance(resumed.model, PerTaskSnapshots)
    served, expected = resumed.predict(PROBE), whole.predict(PROBE)
    assert all(torch.equal(served[t], expected[t]) for t in ("a", "b"))
    meta = load_checkpoint(tmp_path / "checkpoints" / "step-00000032.pt")[1]
    assert meta["selected"] == whole.selected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"selection": "per_task", "restore_best": False}, "set restore_best: true, or selection"),
        ({"selection": "per_task", "monitor": "a/rmse"}, "remove monitor, or set selection: joint"),
        ({"selection": "best"}, "Input should be 'joint' or 'per_task'"),
        ({"degradation_window": 0}, "degradation_window must be at least 1 (or null to turn"),
        ({"selection": "per_task", "keep_best": True}, "set keep_best: false, or selection"),
    ],
)
def test_selection_settings_are_checked_up_front(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        TrainConfig(**kwargs)


def _logs(step: int, a: float, b: float, c: float) -> dict[str, float]:
    """One evaluation: rmse of a and b (lower is better), auc of c (higher is better)."""
    return {"step": step, "epoch": step, "val/a/rmse": a, "val/a/loss": a,
            "val/b/rmse": b, "val/b/loss": b, "val/c/auc": c, "val/c/loss": 1 - c}  # fmt: skip


ABC = [Task("a", "regression"), Task("b", "regression"), Task("c", "binary")]


def _run(rows) -> list[dict]:
    watch = DegradationWatch(ABC, window=3)
    return [a for step, row in enumerate(rows, 1) for a in watch.update(_logs(step, *row))]


def test_the_alert_names_a_task_worsening_while_the_others_improve_once_per_streak():
    rows = [(1.0, 0.50, 0.70), (0.9, 0.40, 0.72), (0.8, 0.45, 0.74), (0.7, 0.50, 0.76),
            (0.6, 0.60, 0.78), (0.5, 0.70, 0.80), (0.4, 0.65, 0.82), (0.3, 0.70, 0.84),
            (0.2, 0.80, 0.86), (0.1, 0.90, 0.88)]  # fmt: skip
    alerts = _run(rows)
    assert [(x["task"], x["step"]) for x in alerts] == [("b", 5), ("b", 10)]  # re-armed at 7
    first = alerts[0]
    assert (first["best"], first["best_step"], first["value"]) == (0.40, 2, 0.60)
    assert first["lost"] == pytest.approx(0.20)
    message = first["message"]
    assert "task 'b' is degrading" in message and "0.2 from its best 0.4" in message
    for hint in ("per_task", "task_lr", "tower", "balancer", "polytask analyze CONFIG"):
        assert hint in message
    # an optimizer without per-task learning rates (lbfgs) is not advised to use them
    watch = DegradationWatch(ABC, window=3, task_lr=False)
    found = [a for step, row in enumerate(rows, 1) for a in watch.update(_logs(step, *row))]
    assert "task_lr" not in found[0]["message"] and "per_task" in found[0]["message"]


def test_the_alert_stays_quiet_when_all_improve_or_all_worsen():
    improving = [(1 - 0.1 * i, 0.5 - 0.03 * i, 0.7 + 0.01 * i) for i in range(8)]
    assert _run(improving) == []
    worsening = [(1 + 0.1 * i, 0.5 + 0.03 * i, 0.7 - 0.01 * i) for i in range(8)]
    assert _run(worsening) == []  # overfitting everywhere is early stopping's business
    short = [(1.0, 0.5, 0.7), (0.9, 0.6, 0.72), (0.8, 0.7, 0.74), (0.7, 0.6, 0.76)] * 2
    assert _run(short) == []  # two worse evaluations in a row, never three
    # three worse evaluations, but 0.3% below its best in all: noise, not degradation
    creeping = [(1 - 0.1 * i, 0.5 + 0.0005 * i, 0.7 + 0.01 * i) for i in range(4)]
    assert _run(creeping) == []
    # b degrades while the others stand still (a float's rounding: 'improved by 1.2e-14%')
    still = [(1.0 - 1e-12 * i, 0.5 + 0.05 * i, 0.7) for i in range(5)]
    assert _run(still) == []


def test_the_alert_fires_in_training_and_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="polytask"):
        trainer = _trainer("joint")
        trainer.fit(TRAIN, VAL)
    assert [a["task"] for a in trainer.alerts][:1] == ["b"]
    assert "task 'b' is degrading" in caplog.text
    assert "training: task" not in caplog.text  # one model: no label
    caplog.clear()
    from types import SimpleNamespace

    from polytask.train._alerts import DegradationAlert

    alert = DegradationAlert(ABC, window=3)
    alert.watch = SimpleNamespace(update=lambda logs: [{"message": "task b is degrading"}])
    with caplog.at_level(logging.WARNING, logger="polytask"):  # `polytask train`'s one model
        alert.on_eval_end(SimpleNamespace(alerts=[], description="multi-task"), {})
    assert [r.getMessage() for r in caplog.records] == ["task b is degrading"]
    quiet = _trainer("joint", degradation_window=None, epochs=4)
    quiet.fit(TRAIN, VAL)
    assert quiet.alerts == []


@pytest.mark.slow
def test_a_per_task_model_saves_loads_and_predicts_the_same(tmp_path):
    config = RunConfig(
        data=DataConfig(builtin="customers", options={"n": 400, "seed": 0}),
        tasks=(
            Task("churn", "binary"),
            Task("ltv", "regression"),
            Task("plan", "multiclass", num_classes=3),
        ),
        model=ModelConfig(params={"hidden": (16,)}),
        training=TrainConfig(
            epochs=15, batch_size=32, lr=1e-2, progress=False, patience=None, selection="per_task"
        ),
    )
    frame = load_frame(config)
    fitted = fit(config, prepare(config, frame))
    assert isinstance(fitted.model, PerTaskSnapshots)  # the tasks peaked at different epochs
    assert fitted.model is fitted.trainer.model
    path = fitted.save(tmp_path / "model.pt")
    loaded = FittedModel.load(path)
    assert isinstance(loaded.model, PerTaskSnapshots)
    assert loaded.model.routes == fitted.model.routes
    rows = frame.head(50)
    torch.testing.assert_close(
        torch.tensor(loaded.predict(rows).select_dtypes("number").to_numpy()),
        torch.tensor(fitted.predict(rows).select_dtypes("number").to_numpy()),
        rtol=0,
        atol=0,
    )


def test_many_alerts_do_not_drown_the_log(caplog):
    from types import SimpleNamespace

    from polytask.train._alerts import WARNED, DegradationAlert

    alert = DegradationAlert(ABC, window=3)
    fake = [{"message": f"task t{i} is degrading"} for i in range(WARNED + 3)]
    alert.watch = SimpleNamespace(update=lambda logs: fake)
    trainer = SimpleNamespace(alerts=[], description="seed 1 STL t0")  # one of many models
    with caplog.at_level(logging.INFO, logger="polytask"):
        alert.on_eval_end(trainer, {})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == "seed 1 STL t0: task t0 is degrading"  # which model, as its progress
    assert len(trainer.alerts) == WARNED + 3  # every alert is kept
    assert len(warnings) == WARNED + 1 and "more tasks are degrading" in warnings[-1]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 3


def test_a_refitted_prior_raises_no_alerts():
    """multilevel refits its prior each epoch, shrinking some tasks more and others less: one
    task worsening while the others improve is that shrinkage, not a conflict to alert about."""
    from types import SimpleNamespace

    from polytask.models import MeanRegularised, Multilevel
    from polytask.train._alerts import DegradationAlert

    alert = DegradationAlert(ABC, window=3)
    fake = [{"message": "task b is degrading"}]
    config = SimpleNamespace(optimizer="lbfgs")
    model = Multilevel(2, [Task("r", "regression")])
    trainer = SimpleNamespace(alerts=[], history=[], config=config, model=model)
    alert.on_fit_start(trainer)
    alert.watch = SimpleNamespace(update=lambda logs: fake)
    alert.on_eval_end(trainer, {})
    assert trainer.alerts == []
    trainer.model = MeanRegularised(2, [Task("r", "regression")], hidden=())  # the same, fixed
    alert.on_fit_start(trainer)
    alert.watch = SimpleNamespace(update=lambda logs: fake)
    alert.on_eval_end(trainer, {})
    assert trainer.alerts == fake
