"""Training on per-task data sets under a schedule: allocation is logged, validation works
per source, a resumed run matches an uninterrupted one, temperature sampling helps a tiny task."""

import dataclasses

import numpy as np
import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.data._synthetic import make_unequal_tasks

TASKS = [Task("big", "regression"), Task("tiny", "regression")]


def _make(n: int, seed: int, task: str) -> TaskData:
    x, y = make_unequal_tasks({"big": 0, "tiny": 0, task: n}, seed=seed)[task]
    return TaskData(
        torch.tensor(x, dtype=torch.float32), {task: torch.tensor(y, dtype=torch.float32)}
    )


def _sources(seed: int, tiny: int = 60, big: int = 5000) -> dict[str, TaskData]:
    return {"big": _make(big, seed, "big"), "tiny": _make(tiny, seed, "tiny")}


def _trainer(seed: int, schedule: str, *, steps: int = 300, eval_every: int = 100,
             **params) -> Trainer:  # fmt: skip
    torch.manual_seed(seed)
    config = TrainConfig(epochs=None, steps=steps, eval_every=eval_every, batch_size=32,
                         lr=3e-3, patience=None, progress=False, seed=seed, restore_best=False,
                         schedule=schedule, schedule_params=params)  # fmt: skip
    return Trainer(hard_sharing_mlp(10, TASKS, hidden=(64, 64)), make_balancer("ew"), config)


def test_temperature_sampling_helps_the_tiny_task_over_proportional():
    test = {"big": _make(2000, 999, "big"), "tiny": _make(2000, 998, "tiny")}
    rmse: dict[str, list[float]] = {"proportional": [], "temperature": []}
    for seed in range(3):
        for schedule in rmse:
            trainer = _trainer(
                seed, schedule, **({"temperature": 3.0} if schedule == "temperature" else {})
            )
            trainer.fit(_sources(seed))
            rmse[schedule].append(trainer.evaluate(test)["tiny"]["rmse"])
    # benchmarks/results/sampling.md: proportional 1.28, temperature (T = 3) 0.71 over 5 seeds
    # at 600 steps. Here 300 steps: the ratio per seed over seeds 0-7 is 0.32-0.50 (at 600
    # steps 0.39-0.91; any 3 consecutive seeds' ratio of means at most 0.41, at 600 0.63).
    assert np.mean(rmse["temperature"]) < 0.85 * np.mean(rmse["proportional"])


def test_allocation_is_logged_and_validation_is_per_source():
    trainer = _trainer(0, "temperature", temperature=2.0)
    history = trainer.fit(_sources(0), {"big": _make(200, 5, "big"), "tiny": _make(50, 6, "tiny")})
    p_tiny = 60**0.5 / (60**0.5 + 5000**0.5)
    assert history[-1]["sample/tiny"] == pytest.approx(p_tiny)
    assert {"val/big/rmse", "val/tiny/rmse"} <= set(history[-1])
    counts = trainer.sampler.counts
    assert counts.sum() == 300 and abs(counts[1] / 300 - p_tiny) < 0.05


@pytest.mark.parametrize("schedule", ["dynamic", "temperature"])
def test_a_resumed_run_ends_bit_identical(tmp_path, schedule):
    # 150 steps, windows of 25 (the dynamic schedule updates at each), 32 + 2 steps per epoch:
    # stopped at step 75 (mid-epoch, after two epochs and three windows), resumed to 150
    sources = _sources(0, big=1000)
    whole = _trainer(0, schedule, steps=150, eval_every=25)
    whole.fit(sources)
    first = _trainer(0, schedule, steps=150, eval_every=25)
    first.config = dataclasses.replace(first.config, steps=75)
    first.fit(sources)
    first.save(tmp_path / "mid.pt")
    resumed = _trainer(0, schedule, steps=150, eval_every=25)
    resumed.load(tmp_path / "mid.pt")
    resumed.fit(sources)
    assert resumed.step == whole.step == 150
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_task_without_data_is_refused():
    trainer = _trainer(0, "uniform")
    with pytest.raises(ValueError, match=r"tasks \['tiny'\] have no labels in any training data"):
        trainer.fit({"big": _make(100, 0, "big")})
    misnamed = _make(50, 1, "tinny")  # its target's key spelt unlike the task
    with pytest.raises(
        ValueError, match=r"targets \['tinny'\] are no task's: did you mean 'tinny' "
    ):
        trainer.fit({"big": _make(100, 0, "big"), "small": misnamed})
