"""Numerical guards: a non-finite loss or gradient never reaches the optimizer; the task is
named; `skip` steps over it and counts it, `stop` ends the run with the last good weights."""

import math

import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.train._checkpoint import load_checkpoint
from polytask.train._guards import TrainingDiverged

TASKS = [Task("a", "regression"), Task("b", "regression")]


def _data(poison_rows: slice | None = None) -> TaskData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    b = x[:, 1].clone()
    if poison_rows is not None:
        b[poison_rows] = float("inf")  # a broken label: b's loss is infinite on those rows
    return TaskData(x, {"a": x[:, 0], "b": b})


def _trainer(policy: str, balancer: str = "ew", run_dir=None) -> Trainer:
    torch.manual_seed(0)
    config = TrainConfig(epochs=2, batch_size=16, progress=False, on_nonfinite=policy,
                         patience=None)  # fmt: skip
    model = hard_sharing_mlp(4, TASKS, hidden=(8,))
    return Trainer(model, make_balancer(balancer), config, run_dir=run_dir)


@pytest.mark.parametrize("balancer", ["ew", "upgrad"])
def test_stop_names_the_task_and_keeps_the_last_good_weights(tmp_path, balancer):
    trainer = _trainer("stop", balancer, run_dir=tmp_path)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    data = _data(slice(0, 64))  # every batch poisoned: the first step already stops
    with pytest.raises(TrainingDiverged, match=r"step 1: non-finite loss in \['b'\]"):
        trainer.fit(data)
    for p, q in zip(before, trainer.model.parameters(), strict=True):
        assert torch.equal(p, q)  # the bad step was never applied
    states, _ = load_checkpoint(tmp_path / "last_good.pt")
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(states["model"][name], value)


def test_skip_counts_per_task_and_training_goes_on():
    trainer = _trainer("skip")
    history = trainer.fit(_data(slice(0, 1)))  # one poisoned row: its batch is skipped
    assert trainer.step == 8 and trainer.skipped == {"b": 2}  # once per epoch
    assert history[-1]["skipped/b"] == 2.0
    assert all(math.isfinite(p.sum().item()) for p in trainer.model.parameters())


def test_non_finite_gradient_is_traced_to_the_task():
    trainer = _trainer("skip")
    head = trainer.model.heads["a"]
    head.weight.register_hook(lambda g: torch.full_like(g, float("nan")))
    trainer.fit(_data())
    assert trainer.skipped == {"a": 8}


def test_gradient_norms_are_logged_per_part():
    history = _trainer("stop").fit(_data())
    assert {"grad_norm/shared", "grad_norm/a", "grad_norm/b"} <= set(history[-1])
    assert history[-1]["grad_norm/a"] > 0


def test_nan_in_the_inputs_is_named_as_the_cause_not_the_learning_rate():
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = x[:, 0].clone()
    x[3, 2] = float("nan")  # one missing feature value
    trainer = Trainer(
        hard_sharing_mlp(4, [Task("a", "regression")], hidden=(8,), seed=0),
        make_balancer("ew"),
        TrainConfig(epochs=1, batch_size=64, progress=False, on_nonfinite="skip"),
    )
    with pytest.raises(TrainingDiverged, match=r"inputs hold NaN or infinite values \(columns "
                       r"\[2\] of x\): fill or drop them"):  # fmt: skip
        trainer.fit(TaskData(x, {"a": y}))  # was: "Lower training.lr, set grad_clip ..."


@pytest.mark.parametrize("seed", range(4))
def test_a_skipped_step_that_ends_a_window_still_evaluates_and_checkpoints(tmp_path, seed):
    """The loop went on past the window's end when its last step was skipped: that evaluation,
    its checkpoint and the balancer's window end were lost (the run's final one as well)."""
    config = TrainConfig(epochs=2, batch_size=16, eval_every=2, progress=False, seed=seed,
                         on_nonfinite="skip", patience=None, conflict_every=None)  # fmt: skip
    model = hard_sharing_mlp(4, TASKS, hidden=(8,), seed=0)
    trainer = Trainer(model, make_balancer("ew"), config, run_dir=tmp_path)
    history = trainer.fit(_data(slice(0, 1)), _data())
    assert trainer.skipped == {"b": 2}
    assert [h["step"] for h in history] == [2, 4, 6, 8]
    assert all(math.isfinite(h["val/b/rmse"]) for h in history)


def test_a_window_whose_every_step_was_skipped_logs_nan_training_figures():
    trainer = _trainer("skip")
    trainer.model.heads["a"].weight.register_hook(lambda g: torch.full_like(g, float("nan")))
    history = trainer.fit(_data(), _data())
    assert trainer.skipped == {"a": 8} and [h["step"] for h in history] == [4, 8]
    for logs in history:
        assert math.isnan(logs["train/loss"]) and math.isnan(logs["weight/a"])
        assert math.isfinite(logs["val/a/rmse"])
