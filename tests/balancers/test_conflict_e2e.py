"""End to end: a large-scale and a small-scale task that need different features. EW lets the
large task's gradients drive the shared trunk; a scale-invariant gradient method (Nash-MTL)
gives the small task its features, and wins on Δm (relative test RMSE, mean over seeds)."""

import numpy as np
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.analysis._compare import delta_m


def _data(seed: int) -> tuple[TaskData, TaskData]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1500, 8, generator=g)
    wa, wb = torch.randn(4, generator=g), torch.randn(4, generator=g)
    ya = 100.0 * torch.tanh(x[:, :4] @ wa) + torch.randn(1500, generator=g)
    yb = 0.01 * torch.tanh(x[:, 4:] @ wb) ** 2 + 1e-4 * torch.randn(1500, generator=g)
    make = lambda s: TaskData(x[s], {"a": ya[s], "b": yb[s]})  # noqa: E731
    return make(slice(0, 1000)), make(slice(1000, None))


def _rmse(name: str, seed: int) -> dict[str, float]:
    train, test = _data(seed)
    tasks = [Task("a", "regression"), Task("b", "regression")]
    cfg = TrainConfig(epochs=30, patience=None, progress=False, seed=seed, lr=3e-3, batch_size=100)
    torch.manual_seed(seed)
    trainer = Trainer(hard_sharing_mlp(8, tasks, hidden=(32, 8)), make_balancer(name), cfg)
    trainer.fit(train)
    metrics = trainer.evaluate(test)
    return {t: metrics[t]["rmse"] for t in ("a", "b")}


def test_scale_invariant_method_beats_ew_on_delta_m():
    gains = [
        delta_m(_rmse("nash_mtl", s), _rmse("ew", s), {"a": False, "b": False}) for s in range(5)
    ]
    # Δm in percent, positive: Nash-MTL better than EW. Training this unscaled pair is chaotic:
    # the same seed gives other floats on another CPU, so one seed may flip. Measured on two
    # machines: +34.1, +20.4, +39.4, +36.1, +38.7 and +36.4, -31.4, +44.2, +34.1, +34.4.
    assert np.mean(gains) > 5.0, gains
    assert sum(g > 0 for g in gains) >= 4, gains
