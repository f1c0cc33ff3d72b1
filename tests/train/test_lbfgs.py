"""`optimizer: lbfgs`: full-batch L-BFGS reaches the exact optimum of a convex multi-task
objective (the classic mean-regularised MTL, against its normal equations), with weight decay
as an L2 term; setups whose objective changes between evaluations are refused; a non-finite
evaluation leaves the weights as they were; a resumed run continues bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer
from polytask.balancers import make_balancer
from polytask.models import MeanRegularised, Multilevel
from polytask.train._guards import TrainingDiverged

SIZES = (40, 25, 15)
TASKS = [Task(f"t{k}", "regression") for k in range(len(SIZES))]


def _data(seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor], np.ndarray]:
    """Three linear tasks w0 + v_k of different sizes (rows label one task each)."""
    g = torch.Generator().manual_seed(seed)
    n, d = sum(SIZES), 4
    x = torch.randn(n, d, generator=g)
    owner = np.repeat(np.arange(len(SIZES)), SIZES)
    w0 = torch.randn(d, generator=g)
    targets = {}
    for k, t in enumerate(TASKS):
        w = w0 + 0.5 * torch.randn(d, generator=g)
        y = x @ w + k + 0.3 * torch.randn(n, generator=g)
        y[torch.from_numpy(owner != k)] = float("nan")
        targets[t.name] = y
    return x, targets, owner


def _exact(x: torch.Tensor, targets, owner, coupling: float, decay: float) -> np.ndarray:
    """argmin Σ_k mean_k (y − x·(w0 + v_k) − b0 − c_k)² + coupling Σ‖v_k‖² + decay/2 ‖θ‖²
    by least squares on stacked rows; returns each task's predictions on `x` (n, K)."""
    X = x.double().numpy()
    d = X.shape[1]
    K = len(SIZES)
    width = (d + 1) * (K + 1)  # [w0, b0, v_1, c_1, ..., v_K, c_K]
    rows, rhs = [], []
    for k, t in enumerate(TASKS):
        mine = owner == k
        block = np.zeros((int(mine.sum()), width))
        block[:, :d], block[:, d] = X[mine], 1.0
        s = (k + 1) * (d + 1)
        block[:, s : s + d], block[:, s + d] = X[mine], 1.0
        scale = 1 / np.sqrt(mine.sum())
        rows.append(block * scale)
        rhs.append(targets[t.name].double().numpy()[mine] * scale)
    for k in range(K):  # coupling on the deviations' weights, not their intercepts
        s = (k + 1) * (d + 1)
        block = np.zeros((d, width))
        block[:, s : s + d] = np.sqrt(coupling) * np.eye(d)
        rows.append(block)
        rhs.append(np.zeros(d))
    rows.append(np.sqrt(decay / 2) * np.eye(width))
    rhs.append(np.zeros(width))
    theta = np.linalg.lstsq(np.vstack(rows), np.concatenate(rhs), rcond=None)[0]
    w0, b0 = theta[:d], theta[d]
    out = []
    for k in range(K):
        s = (k + 1) * (d + 1)
        out.append(X @ (w0 + theta[s : s + d]) + b0 + theta[s + d])
    return np.stack(out, 1)


def _trainer(config: TrainConfig, coupling: float = 0.5, **kwargs) -> Trainer:
    torch.manual_seed(0)
    model = MeanRegularised(4, TASKS, hidden=(), coupling=coupling, **kwargs)
    return Trainer(model, config=config)


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_lbfgs_reaches_the_normal_equations_optimum(decay):
    x, targets, owner = _data()
    config = TrainConfig(epochs=40, batch_size=1000, lr=1.0, weight_decay=decay,
                         optimizer="lbfgs", progress=False, patience=None)  # fmt: skip
    trainer = _trainer(config)
    trainer.fit(TaskData(x, targets))
    with torch.no_grad():
        out = trainer.model(x)
    got = np.stack([out[t.name].double().numpy().reshape(-1) for t in TASKS], 1)
    want = _exact(x, targets, owner, coupling=0.5, decay=decay)
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()
    # the same budget of Adam steps is far from it: the optimum is L-BFGS's doing
    adam = _trainer(TrainConfig(epochs=40, batch_size=1000, lr=1e-2, weight_decay=decay,
                                progress=False, patience=None))  # fmt: skip
    adam.fit(TaskData(x, targets))
    with torch.no_grad():
        other = adam.model(x)
    far = np.stack([other[t.name].double().numpy().reshape(-1) for t in TASKS], 1)
    assert np.abs(far - want).max() > 10 * np.abs(got - want).max()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"balancer": "rlw"}, "fixed function"),
        ({"balancer": "dwa"}, "fixed function"),
        ({"balancer": "pcgrad"}, "fixed function"),
        ({"balancer": "uncertainty"}, "balancer 'uncertainty' does not"),
        ({"config": {"task_lr": {"t0": 2.0}}}, "task_lr"),
        ({"config": {"grad_clip": 1.0}}, "grad_clip"),
        ({"config": {"accumulate": 2}}, "training.accumulate to 1"),
        (
            {"config": {"precision": "bf16"}},
            "in float32: .* training.precision to 32",
        ),  # was ignored
        ({"model": {"dropout": 0.1, "hidden": (8,)}}, "dropout"),
    ],
)
def test_setups_whose_objective_changes_between_evaluations_are_refused(change, says):
    config = TrainConfig(optimizer="lbfgs", batch_size=1000, progress=False,
                         **change.get("config", {}))  # fmt: skip
    params = {"hidden": (), **change.get("model", {})}
    model = MeanRegularised(4, TASKS, **params)
    balancer = make_balancer(change["balancer"]) if "balancer" in change else None
    with pytest.raises(ValueError, match=says):
        Trainer(model, balancer, config=config)


def test_repeatable_balancers_are_listed_and_train():
    x, targets, _ = _data()
    with pytest.raises(ValueError) as refused:
        Trainer(MeanRegularised(4, TASKS, hidden=()), make_balancer("famo"),
                config=TrainConfig(optimizer="lbfgs", progress=False))  # fmt: skip
    assert "balancer 'famo'" in str(refused.value)
    for name in ("ew", "fixed", "gls", "mean"):
        assert f"'{name}'" in str(refused.value)
    assert "'uncertainty'" not in str(refused.value).split("one of")[1]
    assert "or use optimizer adamw" in str(refused.value)
    with pytest.raises(ValueError) as needs_lbfgs:  # refitted between steps: adamw is no way out
        Trainer(Multilevel(4, TASKS), make_balancer("famo"),
                config=TrainConfig(optimizer="lbfgs", progress=False))  # fmt: skip
    assert "balancer 'famo'" in str(needs_lbfgs.value)
    assert "adamw" not in str(needs_lbfgs.value)
    trainer = Trainer(MeanRegularised(4, TASKS, hidden=()), make_balancer("gls"),
                      config=TrainConfig(optimizer="lbfgs", epochs=3, batch_size=1000, lr=1.0,
                                         progress=False))  # fmt: skip
    before = trainer.model.shared_head.weight.detach().clone()
    trainer.fit(TaskData(x, targets))
    assert trainer.step == 3
    assert not torch.equal(trainer.model.shared_head.weight, before)


def test_more_than_one_batch_per_epoch_is_refused_with_the_size_to_set():
    x, targets, _ = _data()
    trainer = _trainer(TrainConfig(optimizer="lbfgs", batch_size=32, progress=False))
    with pytest.raises(ValueError, match=r"its 80 rows take 3 batches of 32: set training"
                       r".batch_size to at least 80"):  # fmt: skip
        trainer.fit(TaskData(x, targets))


def test_a_small_learning_rate_is_warned_about(caplog):
    with caplog.at_level("WARNING", logger="polytask"):
        _trainer(TrainConfig(optimizer="lbfgs", batch_size=1000, progress=False))
    assert "lr is the first step length" in caplog.text and "training.lr: 1" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="polytask"):
        _trainer(TrainConfig(optimizer="lbfgs", batch_size=1000, lr=1.0, progress=False))
    assert "first step length" not in caplog.text


class _Blows(MeanRegularised):
    """Its penalty is NaN once the shared head has moved 0.05 from where it started."""

    def penalty(self):
        start = getattr(self, "start", None)
        if start is None:
            self.start = self.shared_head.weight.detach().clone()
            start = self.start
        moved = (self.shared_head.weight - start).norm()
        base = super().penalty()
        return base + torch.where(moved > 0.05, torch.nan, 0.0)


def test_a_non_finite_evaluation_mid_step_leaves_the_weights_as_they_were():
    x, targets, _ = _data()
    torch.manual_seed(0)
    model = _Blows(4, TASKS, hidden=(), coupling=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(optimizer="lbfgs", epochs=2, batch_size=1000, progress=False)
    with pytest.raises(TrainingDiverged, match="penalty"):
        Trainer(model, config=config).fit(TaskData(x, targets))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_resume_continues_bit_for_bit(tmp_path):
    x, targets, _ = _data()
    data = TaskData(x, targets)

    def config(steps: int) -> TrainConfig:
        return TrainConfig(optimizer="lbfgs", epochs=None, steps=steps, batch_size=1000,
                           lr=0.5, progress=False, patience=None)  # fmt: skip

    whole = _trainer(config(6))
    whole.fit(data)
    first = _trainer(config(3))
    first.fit(data)
    first.save(tmp_path / "half.pt")
    second = _trainer(config(6))
    second.load(tmp_path / "half.pt")
    second.fit(data)
    for (k, a), b in zip(whole.model.state_dict().items(), second.model.state_dict().values(),
                         strict=True):  # fmt: skip
        assert torch.equal(a, b), k
