"""The Trainer's per-window summary: each task's loss and weight over the steps that labelled it."""

import torch

from polytask.train._step import StepResult
from polytask.train._window import Window


def result(losses: list[float], weights: list[float] | None, labelled: list[bool]) -> StepResult:
    return StepResult(
        torch.tensor(losses),
        None if weights is None else torch.tensor(weights),
        {"shared": 1.0},
        torch.tensor(labelled),
    )


def test_losses_and_weights_are_averaged_over_the_steps_that_labelled_each_task():
    window = Window()
    window.add(result([1.0, 0.0], [0.6, 0.0], [True, False]), 0.01)
    window.add(result([3.0, 2.0], [0.2, 0.8], [True, True]), 0.01)
    window.add(result([5.0, 4.0], None, [True, True]), 0.01)  # weights not fitted this step
    summary = window.close()
    assert torch.allclose(summary.losses, torch.tensor([3.0, 3.0]))
    assert summary.weights is not None
    assert torch.allclose(summary.weights, torch.tensor([0.4, 0.8]))  # not (0.8 + 0) / 2
    assert len(window) == 0


def test_a_task_never_labelled_in_the_window_gets_its_mean_weight_over_all_steps():
    window = Window()
    window.add(result([1.0, 0.0], [0.5, 0.1], [True, False]), 0.01)
    window.add(result([1.0, 0.0], [0.7, 0.3], [True, False]), 0.01)
    summary = window.close()
    assert summary.weights is not None
    assert torch.allclose(summary.weights, torch.tensor([0.6, 0.2]))


def test_task_gradient_norms_are_averaged_over_the_steps_that_labelled_the_task():
    """Found by a logging trial: `grad_norm/ltv` averaged every step of the window, a step
    that did not label ltv counting 0 (0.2655 logged for a true 0.7966, one step in three),
    and a window that never drew it logged 0.0, not a blank."""
    window = Window()
    for norms, labelled in (({"shared": 1.0, "a": 2.0, "b": 0.0}, [True, False]),
                            ({"shared": 3.0, "a": 4.0, "b": 0.0}, [True, False]),
                            ({"shared": 2.0, "a": 0.0, "b": 0.9}, [False, True])):  # fmt: skip
        window.add(StepResult(torch.ones(2), None, norms, torch.tensor(labelled)), 0.01)
    summary = window.close(["a", "b"])
    assert summary.grad_norms == {"grad_norm/shared": 2.0, "grad_norm/a": 3.0,
                                  "grad_norm/b": 0.9}  # fmt: skip
    window.add(StepResult(torch.ones(2), None, {"shared": 1.0, "a": 1.0, "b": 0.0},
                          torch.tensor([True, False])), 0.01)  # fmt: skip
    norms = window.close(["a", "b"]).grad_norms
    assert norms["grad_norm/a"] == 1.0 and norms["grad_norm/b"] != norms["grad_norm/b"]  # NaN


def test_a_loss_weightings_logged_weights_are_those_of_the_tasks_the_window_labelled():
    """One step a window, sources drawn in turn: each window labels one task. GLS's weight of
    it is G / (K L) with G and K over the labelled tasks: 1; the others 0. The undrawn tasks'
    losses of 0 made the geometric mean 0 and every weight 0 (FAMO's all on the undrawn)."""
    from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer

    g = torch.Generator().manual_seed(0)
    tasks = [Task(n, "regression") for n in "abc"]
    train = {
        f"s{t.name}": TaskData(x := torch.randn(24, 3, generator=g), {t.name: x[:, 0]})
        for t in tasks
    }
    config = TrainConfig(
        steps=6, eval_every=1, batch_size=8, schedule="round_robin", progress=False,
        conflict_every=None,
    )  # fmt: skip
    for name in ("gls", "famo"):
        trainer = Trainer(
            hard_sharing_mlp(3, tasks, hidden=(4,), seed=0), make_balancer(name), config
        )
        for logs in trainer.fit(train):
            drawn = [
                t.name
                for t in tasks
                if logs[f"train/{t.name}/loss"] == logs[f"train/{t.name}/loss"]
            ]
            assert len(drawn) == 1, logs
            weights = {t.name: logs[f"weight/{t.name}"] for t in tasks}
            assert abs(weights[drawn[0]] - 1.0) < 1e-6, (name, weights)
            assert all(w == 0 for t, w in weights.items() if t != drawn[0]), (name, weights)
