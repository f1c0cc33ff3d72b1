"""Models for many small tasks of one kind: `low_rank` (heads U a_k + v_k: a shared basis of
`rank` directions) and `task_embedding` (one network told the task by a learnt vector)."""

import numpy as np
import pandas as pd
import pytest
import torch

from polytask import Task, TrainConfig
from polytask.analysis import classic_baselines
from polytask.app import ModelConfig, RunConfig, fit, load_prepared
from polytask.models import LowRank, TaskEmbedding, build_model
from polytask.tasks import TaskColumn

TASKS = [Task(f"t{i}", "regression") for i in range(6)]


def test_low_rank_heads_span_the_shared_basis_until_a_task_deviates():
    torch.manual_seed(0)
    model = LowRank(5, TASKS, rank=2)
    stacked = torch.cat(list(model.task_weights().values()))  # (6, 5)
    assert torch.linalg.matrix_rank(stacked.detach()) <= 2  # deviations start at zero
    assert {id(p) for p in model.shared_parameters()} == {id(model.basis.weight)}
    with torch.no_grad():
        model.deviations["t0"].fill_(1.0)
    assert float(model.penalty()) == pytest.approx(1e-2 * 5)  # coupling × ‖v‖²
    x = torch.randn(4, 5)
    w = model.task_weights()["t0"]
    torch.testing.assert_close(model(x)["t0"], (x @ w.T).squeeze(1) + model.coefficients["t0"].bias)


def test_task_embedding_tells_tasks_apart_by_their_vectors_only():
    torch.manual_seed(0)
    model = build_model("task_embedding", ["a", "b", "c"], TASKS, hidden=[8], embedding=3)
    assert isinstance(model, TaskEmbedding)
    assert [p.shape for p in model.task_parameters("t1")] == [torch.Size([3])]
    x = torch.randn(5, 3)
    out = model(x)
    assert not torch.allclose(out["t0"], out["t1"])
    with torch.no_grad():
        model.vectors["t1"].copy_(model.vectors["t0"])
    torch.testing.assert_close(model(x)["t1"], model(x)["t0"])


def _low_rank_tasks(path, n_tasks=24, rows=12, features=10, seed=0):  # type: ignore[no-untyped-def]
    """Tasks whose weights lie in a 2-dimensional subspace, each with few rows."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((2, features))
    frames = []
    for t in range(n_tasks):
        w = rng.standard_normal(2) @ basis
        x = rng.standard_normal((rows, features))
        frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(features)])
        frame["task"], frame["y"] = f"t{t}", x @ w + 0.3 * rng.standard_normal(rows)
        frames.append(frame)
    pd.concat(frames).to_csv(path, index=False)
    return [f"x{j}" for j in range(features)]


def test_low_rank_learns_tasks_of_a_shared_subspace_better_than_a_ridge_per_task(tmp_path):
    features = _low_rank_tasks(tmp_path / "rows.csv")
    config = RunConfig(
        data={"path": str(tmp_path / "rows.csv"), "features": {"numeric": features},
              "split": {"val_fraction": 0.2, "test_fraction": 0.3, "seed": 0}},
        tasks=TaskColumn("task", "y", "regression", min_rows=5),
        model=ModelConfig("low_rank", {"rank": 2, "coupling": 1.0}),
        training=TrainConfig(epochs=150, batch_size=64, lr=0.02, progress=False, seed=0),
    )  # fmt: skip
    data = load_prepared(config)
    fitted = fit(config, data)
    assert fitted.trainer is not None
    mine = fitted.trainer.evaluate(data.test, summaries=True)["task: task mean"]["rmse"]
    ridge = classic_baselines(data, boosting=False).metrics["linear per task"]
    assert mine < 0.9 * float(np.mean(list(ridge.values())))  # 2.15 against 2.64 when written
