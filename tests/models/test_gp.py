"""`gp` (a multi-task Gaussian process grown in refit): its prediction is the posterior mean
computed independently in numpy (per task, chunked or not); the Box-Cox warp inverts and, on a
skewed target, is fitted below power 1 and predicts better than no warp; on tasks sharing a
smooth function plus their own lines it beats one ridge per task; a grown process saves and
loads into a fresh one; the refusals say what to do."""

from __future__ import annotations

import logging
import re
import warnings

import numpy as np
import pytest
import torch

from polytask import Task
from polytask.models import MultiTaskGP, build_model
from polytask.models import _gp as gp_module
from polytask.models._base import model_size

TASKS = [Task("a", "regression"), Task("b", "regression"), Task("c", "regression")]


def _rows(
    n: int = 240, seed: int = 0, skew: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor], np.ndarray]:
    """Rows of three tasks (in turn): a shared sine in x0 plus each task's own slope in x1;
    the noiseless values returned too. `skew`: the exponential of that (right-skewed)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    owner = np.arange(n) % 3
    slope = np.array([1.0, -1.0, 0.3])[owner]
    clean = np.sin(2 * x[:, 0]) + slope * x[:, 1]
    y = clean + 0.2 * rng.standard_normal(n)
    if skew:
        clean, y = np.exp(clean), np.exp(y)
    targets = {
        t.name: torch.from_numpy(np.where(owner == k, y, np.nan)) for k, t in enumerate(TASKS)
    }
    masks = [torch.from_numpy(owner == k) for k in range(len(TASKS))]
    return torch.from_numpy(x).float(), targets, masks, clean


def _grown(seed: int = 0, skew: bool = False, **params: object) -> MultiTaskGP:
    model = build_model("gp", 3, TASKS, seed=seed, steps=60, subset=200, **params)
    assert isinstance(model, MultiTaskGP)
    x, targets, masks, _ = _rows(skew=skew)
    assert model.refit(x, targets, masks, torch.ones(3))
    assert not model.refit(x, targets, masks, torch.ones(3))  # grown once
    return model


def _numpy_mean(model: MultiTaskGP, new: np.ndarray) -> np.ndarray:
    """The posterior mean of each task at `new`, written out from the formula in numpy."""
    h = {k: v.numpy() for k, v in model.hyper().items()}
    x, targets, masks, _ = _rows()
    center = x.numpy().astype(np.float64).mean(0)
    spread = x.numpy().astype(np.float64).std(0, ddof=1)

    def part(prefix: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ls = np.exp(h[prefix + "scale"])
        d2 = (((a[:, None, :] - b[None, :, :]) / ls) ** 2).sum(-1)
        lin = (a * np.exp(h[prefix + "lin"])) @ b.T
        const = "const" if not prefix else "task_const"
        rbf = "rbf" if not prefix else "task_rbf"
        return np.exp(h[const]) + lin + np.exp(h[rbf]) * np.exp(-0.5 * d2)

    rows, owners, ys = [], [], []
    for k, task in enumerate(TASKS):
        m = masks[k].numpy()
        rows.append(x.numpy()[m].astype(np.float64))
        ys.append(targets[task.name].numpy()[m])
        owners.append(np.full(m.sum(), k))
    z = (np.concatenate(rows) - center) / spread
    owner, y = np.concatenate(owners), np.concatenate(ys)
    same = owner[:, None] == owner[None, :]
    k = part("", z, z) + same * part("task_", z, z) + (np.exp(h["noise"]) + 1e-6) * np.eye(len(z))
    alpha = np.linalg.solve(k, y)
    q = (new - center) / spread
    out = np.empty((len(new), len(TASKS)))
    for t in range(len(TASKS)):
        out[:, t] = part("", q, z) @ alpha + part("task_", q, z) @ (alpha * (owner == t))
    return out


def test_the_prediction_is_the_posterior_mean_chunked_or_not(monkeypatch):
    model = _grown(warp="none")
    new = torch.randn(40, 3)
    expected = _numpy_mean(model, new.numpy().astype(np.float64))
    out = model(new)
    got = np.stack([out[t.name].detach().numpy() for t in TASKS], 1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(gp_module, "CHUNK", 7 * 240)  # 7 rows at a time
    chunked = model(new)
    for t in TASKS:
        torch.testing.assert_close(chunked[t.name], out[t.name])


def test_a_new_tasks_prediction_is_the_pooled_parts_posterior_mean():
    """With no warp, a new task's prediction is the pooled kernel's part of every task's mean
    (each task's own part is its mean minus it); with the warp, finite; unfitted, none."""
    model = _grown(warp="none")
    new = torch.randn(40, 3)
    expected = _numpy_mean(model, new.numpy().astype(np.float64))
    shared = model.shared_prediction(new)
    assert shared is not None and shared.shape == (40, 1)
    h = model.hyper()
    z = (new.double() - model.center) / model.spread
    _, task = gp_module._parts(h, z, model.inputs)
    own = (task @ model.own).numpy()  # each task's own part at the new rows
    np.testing.assert_allclose(shared.numpy()[:, 0], (expected - own)[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(expected - own, np.repeat(expected[:, :1] - own[:, :1], 3, 1),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    warped = _grown(skew=True).shared_prediction(new)
    assert warped is not None and bool(torch.isfinite(warped).all())
    unfitted = build_model("gp", 3, TASKS, seed=0)
    assert isinstance(unfitted, MultiTaskGP) and unfitted.shared_prediction(new) is None


def test_the_warp_inverts_and_fits_a_skewed_target_better_than_none():
    h = gp_module._initial(3) | {"power": torch.tensor(0.4, dtype=torch.float64)}
    y = torch.linspace(-2.0, 5.0, 50, dtype=torch.float64)
    lowest = y.min()
    u, _ = gp_module._warp(h, y, lowest)
    torch.testing.assert_close(gp_module._unwarp(h, u, lowest), y)
    h["power"] = torch.tensor(0.0, dtype=torch.float64)  # the log, its limit
    u, _ = gp_module._warp(h, y, lowest)
    torch.testing.assert_close(gp_module._unwarp(h, u, lowest), y)

    x, _, _, clean = _rows(seed=1, skew=True)
    errors = {}
    for warp in ("boxcox", "none"):
        model = _grown(skew=True, warp=warp)
        out = model(x)
        predicted = np.stack([out[t.name].detach().numpy() for t in TASKS], 1)
        mine = predicted[np.arange(len(x)), np.arange(len(x)) % 3]
        errors[warp] = float(((mine - clean) ** 2).mean())
        if warp == "boxcox":
            assert float(model.power) < 0.8  # exp-skewed data: a power well under 1 (log: 0)
    assert errors["boxcox"] < 0.8 * errors["none"], errors


def test_it_beats_a_ridge_per_task_on_a_shared_curve_plus_own_lines():
    model = _grown()
    x, _, masks, clean = _rows(seed=1)  # new rows of the same tasks
    out = model(x)
    got = np.stack([out[t.name].detach().numpy() for t in TASKS], 1)
    mine = got[np.arange(len(x)), np.arange(len(x)) % 3]
    gp_error = float(((mine - clean) ** 2).mean())
    train_x, targets, train_masks, _ = _rows()
    ridge_error = 0.0
    for k, task in enumerate(TASKS):
        m = train_masks[k].numpy()
        a = np.c_[np.ones(m.sum()), train_x.numpy()[m]]
        w = np.linalg.solve(a.T @ a + 1e-3 * np.eye(4), a.T @ targets[task.name].numpy()[m])
        n = masks[k].numpy()
        ridge_error += float(((np.c_[np.ones(n.sum()), x.numpy()[n]] @ w - clean[n]) ** 2).sum())
    ridge_error /= len(x)
    assert gp_error < 0.5 * ridge_error, (gp_error, ridge_error)


def test_the_fit_is_logged_and_lowers_the_objective(caplog):
    with caplog.at_level(logging.INFO, logger="polytask.models._gp"), warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing for the user to puzzle over
        model = _grown(skew=True)
    line = next(r.getMessage() for r in caplog.records if "marginal likelihood" in r.getMessage())
    found = re.search(r"on 240 labels in 60 steps .*a label (\S+) -> (\S+)\); warp power ([-\d.]+)",
                      line)  # fmt: skip
    assert found, line
    start, end, power = (float(v) for v in found.groups())
    assert end < start - 0.1
    assert power == pytest.approx(float(model.power), abs=1e-3)


def test_a_grown_process_loads_into_a_fresh_one():
    model = _grown()
    fresh = build_model("gp", 3, TASKS, seed=5)
    assert not fresh.fitted
    assert all(float(v.detach().abs().max()) == 0 for v in fresh(torch.randn(4, 3)).values())
    fresh.load_state_dict(model.state_dict())
    new = torch.randn(9, 3)
    for name, value in model(new).items():
        torch.testing.assert_close(fresh(new)[name], value)


def test_the_written_out_gradient_equals_autograd_through_the_cholesky_factor():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(40, 3, dtype=torch.float64, generator=gen)
    scale = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_(True)
    u = torch.randn(40, dtype=torch.float64, generator=gen).requires_grad_(True)

    def covariance() -> torch.Tensor:
        b = rows * scale.exp()
        return b @ b.T + torch.exp(-gp_module._squared(b, b)) + torch.eye(40, dtype=b.dtype)

    fast = gp_module.gaussian_fit(covariance(), u)
    chol = torch.linalg.cholesky(covariance())
    alpha = torch.cholesky_solve(u[:, None], chol)[:, 0]
    slow = 0.5 * (u * alpha).sum() + torch.log(torch.diagonal(chol)).sum()
    torch.testing.assert_close(fast, slow)
    for a, b in zip(torch.autograd.grad(fast, (scale, u)), torch.autograd.grad(slow, (scale, u)),
                    strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)


def test_its_size_counts_what_the_fit_keeps():
    """A grown model trains no parameter: its size (in compare and the report) is the rows,
    owners and weights it keeps, beside its hyper-parameters."""
    fresh, model = build_model("gp", 3, TASKS, seed=5), _grown()
    (before, _), (after, size) = model_size(fresh), model_size(model)
    assert after - before == 240 * 3 + 240 + 240  # rows × columns, owners, weights
    assert size >= after * 4 and before > len(gp_module.SCALARS)
    mlp = build_model("hard_sharing", 3, TASKS, seed=0)
    assert model_size(mlp)[0] == sum(p.numel() for p in mlp.parameters())


def test_the_refusals_say_what_to_do():
    with pytest.raises(ValueError, match="one-output regression with the mse loss"):
        build_model("gp", 3, [Task("k", "binary")])
    model = build_model("gp", 3, TASKS, max_rows=100, steps=1)
    x, targets, masks, _ = _rows()
    with pytest.raises(ValueError, match=r"this data has 240 \(max_rows: 100\).*raise max_rows"):
        model.refit(x, targets, masks, torch.ones(3))
    masks[2] = torch.zeros_like(masks[2])
    with pytest.raises(ValueError, match="task 'c' has no labelled training rows"):
        build_model("gp", 3, TASKS, steps=1).refit(x, targets, masks, torch.ones(3))
    one = [torch.arange(240) == k for k in (0, 1, 2)]  # one labelled row in all
    with pytest.raises(ValueError, match="hold 1: give it at least 2 labelled rows"):
        build_model("gp", 3, TASKS[:1], steps=1).refit(x, targets, one[:1], torch.ones(1))
    constant = {t.name: torch.ones(240) for t in TASKS}  # no spread: finite predictions
    flat = build_model("gp", 3, TASKS, steps=3)
    flat.refit(x, constant, [torch.ones(240, dtype=torch.bool)] * 3, torch.ones(3))
    assert all(bool(torch.isfinite(v).all()) for v in flat(x[:5]).values())
    with pytest.raises(ValueError, match="lr must be above 0"):
        build_model("gp", 3, TASKS, lr=0.0)
