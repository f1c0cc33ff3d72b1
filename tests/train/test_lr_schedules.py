"""Learning-rate schedules: their curves, config errors, per-group ratios, the plateau's
monitor and direction, the `lr` log, and an exact resume of a cosine-scheduled run."""

import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp
from polytask.data._synthetic import make_related_regression
from polytask.train import Callback
from polytask.train.lr import (
    LR_SCHEDULES,
    Cosine,
    LRScheduling,
    StepDecay,
    Warmup,
    make_lr_schedule,
)

TASKS = [Task("a", "regression"), Task("b", "regression")]


def _data(n: int = 160, seed: int = 0) -> TaskData:
    x, ya, yb = make_related_regression(n=n, seed=seed)
    targets = {
        "a": torch.tensor(ya, dtype=torch.float32),
        "b": torch.tensor(yb, dtype=torch.float32),
    }
    return TaskData(torch.tensor(x, dtype=torch.float32), targets)


def _cfg(**kw: object) -> TrainConfig:
    base = {"epochs": None, "steps": 20, "eval_every": 5, "batch_size": 32, "lr": 1e-2,
            "progress": False, "patience": None, "restore_best": False}  # fmt: skip
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_step_based_curves():
    assert [Warmup(4).scale(s, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [StepDecay(every=2, gamma=0.5).scale(s, 10) for s in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    cosine = Cosine(warmup=2, min_factor=0.1)
    assert cosine.scale(0, 12) == 0.5 and cosine.scale(1, 12) == 1.0 and cosine.scale(2, 12) == 1.0
    assert cosine.scale(7, 12) == pytest.approx(0.55)  # half-way through the decay
    assert cosine.scale(12, 12) == pytest.approx(0.1)
    values = [cosine.scale(s, 12) for s in range(2, 13)]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr_schedule": "cosin"}, r"lr_schedule: unknown .*'cosin' \(did you mean 'cosine'\?\)"),
        ({"lr_schedule_params": {"warmup": 5}},
         "lr_schedule_params .* is set but lr_schedule is not"),
        ({"lr_schedule": "step"}, "lr_schedule_params: .*'step': every: Field required"),
        ({"lr_schedule": "step", "lr_schedule_params": {"every": 2.5}}, "every: .*integer"),
        ({"lr_schedule": "plateau", "lr_schedule_params": {"factor": 1}}, "factor: .*less than 1"),
        ({"lr_schedule": "cosine", "lr_schedule_params": {"min_factor": 2}},
         "min_factor: .*less than or equal to 1"),
        ({"lr_schedule": "warmup", "lr_schedule_params": {"steps": 5}},
         r"steps: unknown parameter .*its parameters: warmup"),
    ],
)  # fmt: skip
def test_config_errors_name_the_field_and_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_every_schedule_is_registered_and_made_by_name():
    assert set(LR_SCHEDULES) == {"warmup", "cosine", "step", "plateau"}
    assert make_lr_schedule("step", every=3).every == 3  # type: ignore[attr-defined]


def test_groups_keep_their_ratios_and_the_lr_is_logged():
    cfg = _cfg(lr_schedule="cosine", lr_schedule_params={"min_factor": 0.1}, task_lr={"b": 3.0})
    trainer = Trainer(hard_sharing_mlp(20, TASKS, hidden=(8,), seed=0), config=cfg)
    seen: list[list[float]] = []

    class Watch(Callback):
        def on_step_end(self, trainer: Trainer, result: object) -> None:
            seen.append([g["lr"] for g in trainer.optimizer.param_groups])

    trainer.callbacks.insert(0, Watch())  # before the schedule steps: the lrs this step used
    history = trainer.fit(_data())
    assert len(seen) == 20
    for shared, a, b in seen:  # the shared group, then each task's own
        assert a == pytest.approx(shared) and b == pytest.approx(3 * shared)
    expected = [1e-2 * Cosine(min_factor=0.1).scale(s, 20) for s in range(20)]
    assert [s[0] for s in seen] == pytest.approx(expected)
    assert [h["lr"] for h in history] == pytest.approx([expected[s - 1] for s in (5, 10, 15, 20)])
    plain = Trainer(hard_sharing_mlp(20, TASKS, hidden=(8,), seed=0), config=_cfg())
    assert [h["lr"] for h in plain.fit(_data())] == [1e-2] * 4  # logged without a schedule too


def _plateau(monitor: str, patience: int = 2) -> tuple[Trainer, LRScheduling]:
    cfg = _cfg(
        lr_schedule="plateau",
        monitor=monitor,
        lr_schedule_params={"patience": patience, "factor": 0.5},
    )
    trainer = Trainer(hard_sharing_mlp(20, TASKS, hidden=(8,), seed=0), config=cfg)
    trainer.total_steps = 20
    assert trainer.lr_schedule is not None
    trainer.lr_schedule.begin(trainer, None, validated=True)
    return trainer, trainer.lr_schedule


@pytest.mark.parametrize(
    ("monitor", "key", "expected"),
    [  # patience 2: lowered at the second evaluation in a row without a strict improvement
        ("loss", "val/loss", [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]),  # rising: worse
        ("a/r2", "val/a/r2", [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25]),  # rising: better
    ],
)
def test_plateau_reads_the_monitor_in_its_direction(monitor, key, expected):
    trainer, schedule = _plateau(monitor, patience=2)
    lrs = []
    for value in [1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 2.0, 1.0]:
        schedule.on_eval_end(trainer, {key: value})
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-2 * f for f in expected])


def test_plateau_needs_validation_data_and_warmup_must_fit_the_run():
    trainer = Trainer(
        hard_sharing_mlp(20, TASKS, hidden=(8,), seed=0), config=_cfg(lr_schedule="plateau")
    )
    with pytest.raises(ValueError, match=r"plateau.*no validation data: pass val to fit"):
        trainer.fit(_data())
    cfg = _cfg(lr_schedule="warmup", lr_schedule_params={"warmup": 20})
    trainer = Trainer(hard_sharing_mlp(20, TASKS, hidden=(8,), seed=0), config=cfg)
    with pytest.raises(ValueError, match=r"warm-up of 20 steps is not shorter than the run \(20"):
        trainer.fit(_data())
    with pytest.raises(ValueError, match=r"warm-up of 20 steps"):  # said before any step
        trainer.check_data(_data())
    assert trainer.step == 0


SCHEDULES = {
    "cosine": {"warmup": 4, "min_factor": 0.05},
    "plateau": {"patience": 1, "factor": 0.5},
}


def _trainer(schedule: str, run_dir: object = None, stop_at: int | None = None) -> Trainer:
    class Stop(Callback):
        def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
            trainer.should_stop = trainer.step == stop_at

    cfg = _cfg(steps=40, eval_every=5, seed=3, lr=5e-2, lr_schedule=schedule,
               lr_schedule_params=SCHEDULES[schedule], task_lr={"a": 0.5})  # fmt: skip
    model = hard_sharing_mlp(20, TASKS, hidden=(16,), dropout=0.1, seed=0)
    return Trainer(model, config=cfg, run_dir=run_dir, callbacks=[Stop()] if stop_at else [])


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_an_interrupted_scheduled_run_resumes_bit_identical(tmp_path, schedule):
    data, val = _data(), _data(40, seed=1)
    whole = _trainer(schedule)
    whole.fit(data, val)
    _trainer(schedule, tmp_path, stop_at=20).fit(data, val)  # checkpoints up to step 20
    resumed = _trainer(schedule, tmp_path)
    assert resumed.resume(tmp_path) is not None and resumed.step == 20
    resumed.fit(data, val)
    assert resumed.step == whole.step == 40
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    lrs = [h["lr"] for h in whole.history]
    assert [h["lr"] for h in resumed.history] == lrs
    assert lrs[3] != lrs[-1], lrs  # the rate moved after the interruption (at step 20)
