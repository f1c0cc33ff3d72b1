"""On tasks of controlled relatedness, sharing less helps the least related task."""

import numpy as np
import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, make_balancer
from polytask.data._synthetic import make_correlated_tasks
from polytask.models import PLE, MMoE, hard_sharing_mlp

NAMES = ["a", "b", "c"]  # cos(w_a, w_b) = 0.9, cos(w_a, w_c) = 0: c is the least related
TASKS = [Task(n, "regression") for n in NAMES]


def _data(x: np.ndarray, y: np.ndarray) -> TaskData:
    return TaskData(
        torch.tensor(x, dtype=torch.float32),
        {n: torch.tensor(y[:, i], dtype=torch.float32) for i, n in enumerate(NAMES)},
    )


def test_generator_controls_relatedness():
    _, y = make_correlated_tasks(n=500, correlations=(1.0, 1.0, -1.0), noise=0.0)
    np.testing.assert_allclose(y[:, 0], y[:, 1])
    assert not np.allclose(y[:, 0], y[:, 2])
    with pytest.raises(ValueError, match="correlations in"):
        make_correlated_tasks(correlations=(1.5,))


@pytest.mark.slow
def test_experts_beat_hard_sharing_on_the_less_related_task():
    builds = {  # about the same number of parameters (1.3k-1.6k)
        "hard": lambda: hard_sharing_mlp(16, TASKS, hidden=(64,)),
        "mmoe": lambda: MMoE(16, TASKS, num_experts=4, expert_hidden=(16,)),
        "ple": lambda: PLE(16, TASKS, levels=1, expert_hidden=(16,)),
    }
    errors: dict[str, list[float]] = {k: [] for k in builds}
    for seed in range(3):
        x, y = make_correlated_tasks(n=3000, seed=seed)
        train, val, test = (
            _data(x[:1500], y[:1500]),
            _data(x[1500:2000], y[1500:2000]),
            _data(x[2000:], y[2000:]),
        )
        for arch, build in builds.items():
            torch.manual_seed(seed)
            model = build()
            config = TrainConfig(epochs=20, batch_size=64, lr=6e-3, progress=False, seed=seed)
            Trainer(model, make_balancer("ew"), config).fit(train, val)
            with torch.no_grad():
                pred = model(test.x)["c"]
            errors[arch].append(float(((pred - test.targets["c"]) ** 2).mean()))
    # Measured (test MSE on c, mean over seeds 0-2, against hard sharing): MMoE 0.85, PLE 0.78;
    # over seeds 1-3, 2-4, 3-5: 0.89, 0.90, 0.89 and 0.82, 0.83, 0.81 (at 40 epochs, lr 3e-3,
    # as long again: 0.85, 0.82, 0.86, 0.85 and 0.81, 0.79, 0.81, 0.79)
    hard = np.mean(errors["hard"])
    assert np.mean(errors["mmoe"]) < hard and np.mean(errors["ple"]) < hard, errors
