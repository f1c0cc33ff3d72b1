import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.balancers import DynamicWeightAverage, UncertaintyWeighting
from polytask.data._synthetic import make_related_regression
from polytask.train import CheckpointError, load_checkpoint


def _data(n=400, seed=0, n_b=None):
    x, ya, yb = make_related_regression(n=n, seed=seed)
    yb = yb.copy()
    if n_b is not None:
        yb[n_b:] = np.nan
    return TaskData(
        torch.tensor(x, dtype=torch.float32),
        {"a": torch.tensor(ya, dtype=torch.float32), "b": torch.tensor(yb, dtype=torch.float32)},
    )


TASKS = [Task("a", "regression"), Task("b", "regression")]


def _cfg(**kw):
    base = {"epochs": 5, "batch_size": 64, "progress": False, "lr": 3e-3}
    return TrainConfig(**{**base, **kw})


def test_training_reduces_validation_loss_and_writes_metrics(tmp_path):
    torch.manual_seed(0)
    model = hard_sharing_mlp(20, TASKS, hidden=(32,))
    trainer = Trainer(model, config=_cfg(epochs=8), run_dir=tmp_path)
    history = trainer.fit(_data(), _data(200, seed=1))
    assert history[-1]["val/loss"] < 0.5 * history[0]["val/loss"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert len(saved) == 8 and "val/a/rmse" in saved[0] and "weight/b" in saved[0]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "val/b/r2" in header


def test_training_by_steps_and_eval_every():
    model = hard_sharing_mlp(20, TASKS, hidden=(16,))
    trainer = Trainer(model, config=_cfg(epochs=None, steps=23, eval_every=10))
    history = trainer.fit(_data())
    assert trainer.step == 23
    assert [h["step"] for h in history] == [10.0, 20.0, 23.0]


def test_early_stopping_stops_and_restores_best():
    torch.manual_seed(0)
    model = hard_sharing_mlp(20, TASKS, hidden=(256, 256))
    # 24 training rows and a large model: validation loss turns up once it overfits
    cfg = _cfg(epochs=300, patience=3, batch_size=8, lr=1e-2)
    trainer = Trainer(model, config=cfg)
    val = _data(200, seed=2)
    history = trainer.fit(_data(24), val)
    assert len(history) < 300
    losses = [h["val/loss"] for h in history]
    best = min(losses)
    assert losses.index(best) == len(losses) - 1 - 3  # stopped after 3 evaluations without gain
    final = trainer.evaluate(val)
    assert sum(m["loss"] for m in final.values()) == pytest.approx(best, rel=1e-5)


def test_same_seed_same_result():
    def run():
        torch.manual_seed(1)
        model = hard_sharing_mlp(20, TASKS, hidden=(16,), dropout=0.2)
        Trainer(model, config=_cfg(epochs=2, seed=5)).fit(_data())
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(), run())


def test_uncertainty_parameters_are_trained():
    model = hard_sharing_mlp(20, TASKS, hidden=(16,))
    balancer = UncertaintyWeighting()
    Trainer(model, balancer, _cfg(epochs=3)).fit(_data())
    assert not torch.allclose(balancer.log_vars.detach(), torch.zeros(2))


def test_checkpoint_round_trip_restores_everything(tmp_path):
    torch.manual_seed(0)
    model = hard_sharing_mlp(20, TASKS, hidden=(16,))
    trainer = Trainer(model, DynamicWeightAverage(), _cfg(epochs=3))
    trainer.fit(_data())
    path = trainer.save(tmp_path / "ck.pt", meta={"note": "hi"})
    raw = torch.load(path, weights_only=True)  # no code execution needed
    assert raw["format"] == "polytask-checkpoint"

    torch.manual_seed(99)
    other = Trainer(hard_sharing_mlp(20, TASKS, hidden=(16,)), DynamicWeightAverage(), _cfg())
    meta = other.load(path)
    assert meta["note"] == "hi" and other.step == trainer.step
    x = _data(50, seed=3).x
    for k, v in trainer.predict(x).items():
        assert torch.equal(v, other.predict(x)[k])
    assert torch.equal(other.balancer.history, trainer.balancer.history)
    assert (
        other.optimizer.state_dict()["state"].keys()
        == trainer.optimizer.state_dict()["state"].keys()
    )


def test_foreign_or_unsafe_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "polytask-checkpoint", "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused: loading it would run code"):
        load_checkpoint(path)
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a polytask checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 2, "steps": 3}, "one of epochs and steps, not both"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"lr": 0}, "lr must be a finite number > 0"),
        ({"device": "tpu"}, "device must be"),
        ({"monitor": "auc"}, "TASK/METRIC"),
    ],
)
def test_train_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_steps_alone_train_by_steps_and_neither_means_20_epochs():
    assert TrainConfig(steps=7).epochs is None and TrainConfig(steps=7).steps == 7
    assert TrainConfig().epochs == 20 and TrainConfig(epochs=None).epochs == 20


def test_monitor_must_name_a_task_metric():
    model = hard_sharing_mlp(20, TASKS, hidden=(8,))
    trainer = Trainer(model, config=_cfg(monitor="a/auc"))
    with pytest.raises(ValueError, match="names no task metric"):
        trainer.fit(_data(), _data(50))


class FakeTrainer:
    """What EarlyStopping reads of a Trainer."""

    step = epoch = 0
    should_stop = False
    model = torch.nn.Linear(1, 1)


def test_early_stopping_callback_on_scripted_values():
    from polytask.train import EarlyStopping

    stopper = EarlyStopping("val/a/auc", higher_is_better=True, patience=2, restore_best=False)
    fake = FakeTrainer()
    for step, value in enumerate([0.5, 0.7, 0.6, 0.7, 0.65], start=1):
        fake.step = step
        stopper.on_eval_end(fake, {"val/a/auc": value})
        if fake.should_stop:
            break
    assert fake.should_stop and fake.step == 4 and stopper.best_step == 2


def test_an_undefined_monitored_value_neither_stops_nor_is_selected(caplog):
    """NaN (an AUC on one-class validation rows) counted as 'not improved': training stopped
    after `patience` evaluations of no evidence, naming a best epoch that never was."""
    from polytask.train import EarlyStopping

    stopper = EarlyStopping("val/a/auc", higher_is_better=True, patience=2, restore_best=True)
    fake = FakeTrainer()
    with caplog.at_level("WARNING", logger="polytask"):
        for step, value in enumerate([math.nan, math.nan, math.nan, 0.6, math.nan, 0.5], 1):
            fake.step = fake.epoch = step
            stopper.on_eval_end(fake, {"val/a/auc": value})
            assert not fake.should_stop
    assert stopper.best_step == 4 and stopper.best == 0.6
    assert sum("undefined (NaN) at epoch 1" in r.message for r in caplog.records) == 1
    stopper.on_eval_end(fake, {"val/a/auc": 0.55})
    assert fake.should_stop  # two real evaluations without improvement


def test_settings_that_read_validation_data_are_refused_without_any():
    """selection per_task, keep_best and a monitor did nothing, silently, in a run without
    validation data; a misspelled monitor passed there too."""
    model = hard_sharing_mlp(20, TASKS, hidden=(8,))
    for kw in ({"selection": "per_task"}, {"keep_best": True}, {"monitor": "a/rmse"}):
        trainer = Trainer(model, config=_cfg(**kw))
        with pytest.raises(ValueError, match="there is no validation data: pass val to fit"):
            trainer.check_data(_data())
        with pytest.raises(ValueError, match="there is no validation data: pass val to fit"):
            trainer.fit(_data())
    with pytest.raises(ValueError, match="'a/rmsee' names no task metric"):
        Trainer(model, config=_cfg(monitor="a/rmsee")).fit(_data())


def test_fit_twice_on_one_trainer_is_refused():
    """The second call trained nothing and returned the first run's history."""
    model = hard_sharing_mlp(20, TASKS, hidden=(8,))
    trainer = Trainer(model, config=_cfg(epochs=1))
    trainer.fit(_data())
    with pytest.raises(RuntimeError, match=r"has trained already \(to step \d+\).*new Trainer"):
        trainer.fit(_data())
    Trainer(model, config=_cfg(epochs=1)).fit(_data())  # the way that works


@pytest.mark.parametrize(
    "mode", ["auto", "gramian", "representation", "subsample", "last_layer", "sketch"]
)
def test_gradient_balancer_trains_in_every_mode_and_logs_its_weights(mode):

    torch.manual_seed(0)
    trainer = Trainer(
        hard_sharing_mlp(20, TASKS, hidden=(32, 16)),
        make_balancer("upgrad"),
        _cfg(epochs=6, gradient_mode=mode, subsample_size=16),
    )
    history = trainer.fit(_data(), _data(200, seed=1))
    assert trainer.plan.mode == ("jacobian" if mode == "auto" else mode)
    assert history[-1]["val/loss"] < 0.7 * history[0]["val/loss"]
    assert history[-1]["weight/a"] > 0 and history[-1]["time/step_ms"] > 0


def test_sketch_mode_is_refused_up_front_for_a_trunk_it_cannot_sketch():
    from polytask.models._hard_sharing import MultiTaskModel

    trunk = nn.Sequential(nn.Linear(20, 16), nn.LayerNorm(16))
    model = MultiTaskModel(trunk, TASKS, trunk_out_dim=16)
    with pytest.raises(ValueError, match=r"nn.Linear, got LayerNorm.*training.gradient_mode"):
        Trainer(model, make_balancer("upgrad"), _cfg(gradient_mode="sketch"))


def test_incompatible_gradient_mode_is_refused_before_training():

    model = hard_sharing_mlp(20, TASKS, hidden=(16,))
    with pytest.raises(
        ValueError, match=r"needs mode='jacobian' or 'representation'.*gradient_mode"
    ):
        Trainer(model, make_balancer("graddrop"), _cfg(gradient_mode="last_layer"))


@pytest.mark.parametrize(
    ("name", "kwargs", "state"),
    [
        ("auto_lambda", {}, "lam"),
        ("moml", {}, "lam"),
        # FORUM moves α only while its constraint is active (ν > 0); at the default ρ = 0.1 a
        # quarter of initialisations keep ν = 0 throughout on this well-aligned data
        ("forum", {"rho": 2.0}, "alpha"),
    ],
)
def test_bilevel_balancer_needs_validation_data(name, kwargs, state):
    model = hard_sharing_mlp(20, TASKS, hidden=(16,))  # seeded by conftest's autouse fixture
    trainer = Trainer(model, make_balancer(name, **kwargs), _cfg())
    with pytest.raises(ValueError, match="pass val to fit"):
        trainer.fit(_data())
    start = getattr(trainer.balancer, state).clone()
    history = trainer.fit(_data(), _data(200, seed=1))
    assert not torch.allclose(getattr(trainer.balancer, state), start)
    assert history[-1]["val/loss"] < history[0]["val/loss"]


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_fused_optimizer_takes_the_same_step(name):
    from polytask.train._loop import OPTIMIZERS, make_optimizer

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fast = make_optimizer(name, [{"params": params, "weight_decay": 0.01}], 0.1)
    plain = OPTIMIZERS[name]([{"params": twins, "weight_decay": 0.01}], lr=0.1, foreach=False)
    assert fast.defaults.get("fused") is True  # this torch has CPU fused kernels
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, twins, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        fast.step(), plain.step()
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_coordinate_methods_fit_logged_weights_on_a_sample_of_steps(monkeypatch):
    import polytask.train._loop as loop

    fits: list[bool] = []
    fitted: list[torch.Tensor | None] = []
    real = loop.train_step

    def spy(*args, **kwargs):
        fits.append(kwargs["fit_weights"])
        result = real(*args, **kwargs)
        fitted.append(result.weights)
        return result

    monkeypatch.setattr(loop, "train_step", spy)
    torch.manual_seed(0)
    trainer = Trainer(
        hard_sharing_mlp(20, TASKS, hidden=(16,)), make_balancer("moco"), _cfg(conflict_every=None)
    )
    history = trainer.fit(_data(), _data(200, seed=1))
    per_epoch = len(fits) // 5
    expected = [
        s % loop.WEIGHT_FIT_EVERY == 0 or (s + 1) % per_epoch == 0 for s in range(len(fits))
    ]
    assert fits == expected and sum(fits) < len(fits) / 2
    assert all((w is not None) == f for w, f in zip(fitted, fits, strict=True))
    last = [w for w in fitted[-per_epoch:] if w is not None]
    assert history[-1]["weight/a"] == pytest.approx(float(torch.stack(last).mean(0)[0]), rel=1e-5)


def test_metrics_csv_counts_steps_and_epochs_as_integers_from_epoch_1(tmp_path):
    """metrics.csv and the progress lines count epochs from 1, with `step,epoch` as integers
    (not `4.0,0.0`); the checkpoints record the same epoch."""
    import csv
    import io

    from rich.console import Console

    from polytask.train import ProgressDisplay

    model = hard_sharing_mlp(20, TASKS, hidden=(8,))
    shown = io.StringIO()
    display = ProgressDisplay("run", console=Console(file=shown, width=200), lines=10)
    trainer = Trainer(model, config=_cfg(epochs=3), callbacks=[display], run_dir=tmp_path)
    trainer.fit(_data(), _data(100, seed=1))  # 400 rows, batch 64: 7 steps per epoch
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["epoch"]) for r in rows] == [("7", "1"), ("14", "2"), ("21", "3")]
    assert "run epoch 1 step 7:" in shown.getvalue() and "epoch 0" not in shown.getvalue()
    assert trainer.epoch == 3
    meta = load_checkpoint(tmp_path / "checkpoints" / "step-00000021.pt")[1]
    assert (meta["step"], meta["epoch"]) == (21, 3)


def test_epochs_of_windows_shorter_than_an_epoch_count_from_1():
    model = hard_sharing_mlp(20, TASKS, hidden=(8,))
    history = Trainer(model, config=_cfg(epochs=2, eval_every=3)).fit(_data())  # 7 per epoch
    assert [(h["step"], h["epoch"]) for h in history] == [(3, 1), (6, 1), (9, 2), (12, 2), (14, 2)]
    assert all(isinstance(h["step"], int) and isinstance(h["epoch"], int) for h in history)


def test_early_stopping_says_where_it_stopped_in_epochs_from_1():
    import io

    from rich.console import Console

    from polytask.train import ProgressDisplay

    torch.manual_seed(0)
    model = hard_sharing_mlp(20, TASKS, hidden=(256, 256))
    shown = io.StringIO()
    display = ProgressDisplay("run", console=Console(file=shown, width=60), lines=1000)
    cfg = _cfg(epochs=300, patience=3, batch_size=8, lr=1e-2)
    history = Trainer(model, config=cfg, callbacks=[display]).fit(_data(24), _data(200, seed=2))
    n = len(history)  # 3 steps per epoch: one evaluation per epoch
    assert n < 300
    message = shown.getvalue().splitlines()[-1]
    assert message == (
        f"run: stopped early at epoch {n} (step {3 * n}): val/loss has not improved for 3 "
        f"evaluations; best at epoch {n - 3} (step {3 * (n - 3)}), whose weights are restored"
    )


def test_validation_or_evaluation_targets_named_unlike_the_tasks_are_refused():
    data = _data()
    renamed = TaskData(
        data.x, {"A": data.targets["a"], "b": data.targets["b"]}
    )  # a typo in one name
    model = hard_sharing_mlp(data.x.shape[1], TASKS, hidden=(8,), seed=0)
    trainer = Trainer(model, make_balancer("ew"), _cfg(epochs=1, patience=1))
    said = r"no targets for task 'a', and its target 'A' is no task's: did you mean 'a'\?"
    with pytest.raises(ValueError, match="the validation data: " + said):
        trainer.fit(data, renamed)  # its loss read 0 for 'a': early stopping kept epoch 1
    with pytest.raises(ValueError, match="the data to evaluate: " + said):
        trainer.evaluate(renamed)  # returned 'b' alone, 'a' gone without a word
    other = TaskData(data.x, {"y": data.targets["a"]})
    with pytest.raises(ValueError, match=r"its targets \['y'\] name none of the tasks"):
        trainer.evaluate(other)
    only_b = TaskData(data.x, {"b": data.targets["b"], "extra": data.targets["a"]})
    assert set(trainer.evaluate(only_b)) == {"b"}  # a subset of the tasks: scored as it is


def test_a_task_with_no_labelled_training_row_is_refused():
    data = _data()
    empty = TaskData(
        data.x, {"a": data.targets["a"], "b": torch.full_like(data.targets["b"], float("nan"))}
    )
    trainer = Trainer(hard_sharing_mlp(data.x.shape[1], TASKS, hidden=(8,), seed=0),
                      make_balancer("ew"), _cfg(epochs=1))  # fmt: skip
    with pytest.raises(ValueError, match=r"task 'b' has no labelled row in the training data"):
        trainer.fit(empty)  # trained, then scored NaN, without a word
    trainer.fit(data)  # one labelled row is enough to train on


def test_inputs_of_another_precision_than_the_model_are_refused_with_the_fix():
    data = _data()
    doubled = TaskData(data.x.double(), data.targets)  # e.g. torch.from_numpy of float64
    trainer = Trainer(hard_sharing_mlp(data.x.shape[1], TASKS, hidden=(8,), seed=0),
                      make_balancer("ew"), _cfg(epochs=1))  # fmt: skip
    with pytest.raises(ValueError, match=r"inputs x of 'train' are torch.float64 and the model's "
                       r"weights torch.float32 .*x.to\(torch.float32\)"):  # fmt: skip
        trainer.fit(doubled)  # was torch's "mat1 and mat2 must have the same dtype"


@pytest.mark.parametrize("name", ["dwa", "famo", "uncertainty"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_loss_weightings_logged_weights_are_the_mean_of_those_its_steps_applied(name, accumulate):
    """weight/TASK is the mean over the window's steps of ∂combine/∂L_k as each step applied
    it (DWA logged the next window's; FAMO and uncertainty their end-of-window state)."""
    torch.manual_seed(0)
    balancer = make_balancer(name)
    applied: list[torch.Tensor] = []
    combine, weights = balancer.combine, balancer.weights
    reading = []  # weights() of a method without loss_weights probes combine: not a step

    def spy(losses: torch.Tensor) -> torch.Tensor:
        total = combine(losses)
        if not reading:
            (grad,) = torch.autograd.grad(total, losses, retain_graph=True)
            applied.append(grad.detach().clone())
        return total

    def read(losses: torch.Tensor) -> torch.Tensor:
        reading.append(True)
        try:
            return weights(losses)
        finally:
            reading.pop()

    balancer.combine, balancer.weights = spy, read  # type: ignore[method-assign]
    model = hard_sharing_mlp(20, TASKS, hidden=(16,))
    trainer = Trainer(model, balancer, config=_cfg(epochs=4, batch_size=100, accumulate=accumulate))
    history = trainer.fit(_data(300))
    assert len(applied) == 4 * 3
    for epoch, logs in enumerate(history):
        want = torch.stack(applied[epoch * 3 : (epoch + 1) * 3]).mean(0)
        got = [logs["weight/a"], logs["weight/b"]]
        assert got == pytest.approx(want.tolist(), rel=1e-5), epoch
    assert history[1]["weight/a"] != pytest.approx(history[3]["weight/a"])  # the weights move


def test_a_model_leaving_a_parameter_out_of_both_sets_is_refused_for_gradient_methods():
    """A model of one's own that forgets a parameter in shared_parameters(): a gradient
    balancer never updated it (a loss weighting's plain backward did), without a word."""
    from polytask.models import MultiTaskNet

    class Slip(MultiTaskNet):
        def __init__(self) -> None:
            super().__init__()
            self._init_tasks(TASKS)
            self.trunk = nn.Linear(20, 8)
            self.heads = nn.ModuleDict({t.name: nn.Linear(8, 1) for t in TASKS})

        def forward(self, x):
            z = torch.relu(self.trunk(x))
            return {t.name: self.heads[t.name](z).squeeze(-1) for t in TASKS}

        def shared_parameters(self):
            yield self.trunk.weight  # the bias forgotten

        def task_parameters(self, name):
            yield from self.heads[name].parameters()

    Trainer(Slip(), make_balancer("ew"), _cfg(epochs=1))  # a plain backward trains it
    with pytest.raises(ValueError, match=r"Slip: trainable parameters in neither .*: trunk\.bias"):
        Trainer(Slip(), make_balancer("upgrad"), _cfg(epochs=1))
    frozen = Slip()
    frozen.trunk.bias.requires_grad_(False)
    Trainer(frozen, make_balancer("upgrad"), _cfg(epochs=1))


def test_an_interrupted_fit_claims_no_restored_model():
    """Ctrl-C after the best evaluation: the display's end said the model and its test
    metrics were that evaluation's, and the CLI wrote neither."""
    import io

    from rich.console import Console

    from polytask.train import Callback, ProgressDisplay

    class Stop(Callback):
        def on_step_end(self, trainer, result):
            if trainer.step == 30:
                raise KeyboardInterrupt

    shown = io.StringIO()
    display = ProgressDisplay("run", console=Console(file=shown, width=300), lines=100)
    torch.manual_seed(0)
    trainer = Trainer(hard_sharing_mlp(20, TASKS, hidden=(8,)), make_balancer("ew"),
                      _cfg(epochs=20, eval_every=7, lr=0.3, patience=None),
                      callbacks=[display, Stop()])  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(_data(), _data(100, seed=1))
    assert trainer.interrupted and "run epoch" in shown.getvalue()
    assert "whose weights are restored" not in shown.getvalue()
