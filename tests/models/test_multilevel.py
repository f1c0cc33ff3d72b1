"""`multilevel`: mean-regularised heads whose prior is fitted by empirical Bayes. Its fixed
point is the linear mixed model's maximum-likelihood fit (against an independent EM on the
marginal covariances), or for binary tasks the logistic mixed model's Laplace EM (against
Newton's method written out), which beats per-task and pooled logistic regression; it
learns which features vary between tasks; its penalty follows the balancer's scale; unfit
setups are refused; a resumed run continues bit for bit."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer
from polytask.balancers import make_balancer
from polytask.models import MeanRegularised, Multilevel, build_model

K, N, D = 12, 12, 3
SPREAD = np.array([1.5, 0.0, 0.3])  # task-to-task sd of each feature's weight
INTERCEPT_SPREAD = 1.0
TASKS = [Task(f"t{k}", "regression") for k in range(K)]


def _data(
    seed: int = 0, rows: int = N, draw: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor], np.ndarray]:
    """K linear tasks, w_k = w + spread ⊙ noise (drawn from `seed`), and `rows` rows of each
    (from `draw`: new rows of the same tasks); each row labels one task."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=D)
    weights = w + SPREAD * rng.normal(size=(K, D))
    intercepts = 2.0 + INTERCEPT_SPREAD * rng.normal(size=K)
    rows_rng = np.random.default_rng([seed, draw])
    x = rows_rng.normal(size=(K * rows, D))
    owner = np.repeat(np.arange(K), rows)
    y_all = np.einsum("ij,ij->i", x, weights[owner]) + intercepts[owner]
    y_all += 0.5 * rows_rng.normal(size=len(x))
    targets = {}
    for k, t in enumerate(TASKS):
        y = y_all.copy()
        y[owner != k] = np.nan
        targets[t.name] = torch.tensor(y, dtype=torch.float32)
    return torch.tensor(x, dtype=torch.float32), targets, owner


def _reference(
    x: np.ndarray,
    y: np.ndarray,
    owner: np.ndarray,
    full: bool,
    iters: int = 3000,
    tasks_alike: bool = False,
):
    """The linear mixed model y = Xβ + Z b_k + ε, b_k ~ N(0, Σ), by the textbook EM on the
    marginal covariance V_k = σ² I + Z_k Σ Z_kᵀ (rows × rows; not the model's code path).
    `tasks_alike`: β's least squares weigh task k's rows 1/n_k (each task alike, as the
    multi-task objective's mean loss per task does) instead of every row alike.
    Returns (each row's own task's prediction, Σ, σ²)."""
    K = int(owner.max()) + 1
    root = np.sqrt(1 / np.bincount(owner)[owner]) if tasks_alike else np.ones(len(y))
    X = np.c_[x, np.ones(len(x))]
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    s2, cov = np.var(y - X @ beta), np.eye(X.shape[1])
    for _ in range(iters):
        r = y - X @ beta
        moments, sse, shift = np.zeros_like(cov), 0.0, np.zeros(len(y))
        means = []
        for k in range(K):
            m = owner == k
            zk = X[m]
            vinv = np.linalg.inv(s2 * np.eye(int(m.sum())) + zk @ cov @ zk.T)
            mean = cov @ zk.T @ vinv @ r[m]
            post = cov - cov @ zk.T @ vinv @ zk @ cov
            moments += np.outer(mean, mean) + post
            e = r[m] - zk @ mean
            sse += e @ e + np.trace(zk @ post @ zk.T)
            shift[m] = zk @ mean
            means.append(mean)
        cov = moments / K if full else np.diag(np.diag(moments) / K)
        s2 = sse / len(y)
        beta = np.linalg.lstsq(X * root[:, None], (y - shift) * root, rcond=None)[0]
    pred = X @ beta + np.einsum("ij,ij->i", X, np.array(means)[owner])
    return pred, cov, s2


def _config(epochs: int = 300, **changes) -> TrainConfig:
    base = dict(optimizer="lbfgs", epochs=epochs, batch_size=100_000, lr=1.0, progress=False,
                patience=None)  # fmt: skip
    return TrainConfig(**{**base, **changes})


@functools.cache
def _fit(covariance: str, balancer: str = "ew", epochs: int = 150) -> Multilevel:
    x, targets, _ = _data()
    torch.manual_seed(0)
    model = Multilevel(D, TASKS, covariance=covariance)
    Trainer(model, make_balancer(balancer), config=_config(epochs)).fit(TaskData(x, targets))
    return model


def _own_predictions(model: Multilevel, x: torch.Tensor, owner: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(x)
    every = np.stack([out[t.name].double().numpy() for t in TASKS], 1)
    return every[np.arange(len(x)), owner]


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_fixed_point_is_the_mixed_models_maximum_likelihood_fit(covariance):
    x, targets, owner = _data()
    y = np.nansum(np.stack([t.numpy() for t in targets.values()], 1), 1)
    want, cov, s2 = _reference(x.double().numpy(), y, owner, covariance == "full")
    model = _fit(covariance)
    got = _own_predictions(model, x, owner)
    assert np.abs(got - want).max() < 2e-3 * np.abs(want).max()
    assert float(model.noise_variance) == pytest.approx(s2, rel=1e-2)
    fitted = model.prior_covariance.double().numpy()
    assert np.abs(fitted - cov).max() < 2e-2 * np.abs(cov).max()


@pytest.mark.parametrize("solver", ["exact", "lbfgs"])
def test_with_tasks_of_unequal_sizes_each_task_weighs_alike_in_the_shared_head(solver):
    """The multi-task objective is each task's mean loss, so β weighs task k's rows 1/n_k:
    the EM fit with that weighting, not the textbook one (every row alike), which differs
    here because the large tasks' intercepts are higher."""
    sizes = np.array([4, 6, 10, 16, 30, 60])
    rng = np.random.default_rng(1)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    x = rng.normal(size=(len(owner), D))
    weights = rng.normal(size=D) + SPREAD * rng.normal(size=(len(sizes), D))
    intercepts = 2.0 + rng.normal(size=len(sizes)) + 1.5 * (sizes > 12)
    y = np.einsum("ij,ij->i", x, weights[owner]) + intercepts[owner]
    y += 0.5 * rng.normal(size=len(y))
    tasks = [Task(f"t{k}", "regression") for k in range(len(sizes))]
    targets = {t.name: torch.tensor(np.where(owner == k, y, np.nan)) for k, t in enumerate(tasks)}
    torch.manual_seed(0)
    model = Multilevel(D, tasks, covariance="diagonal", solver=solver).double()
    Trainer(model, make_balancer("ew"), config=_config(300)).fit(TaskData(torch.tensor(x), targets))
    with torch.no_grad():
        out = model(torch.tensor(x))
    got = np.stack([out[t.name].numpy() for t in tasks], 1)[np.arange(len(x)), owner]
    alike, _, _ = _reference(x, y, owner, False, iters=1500, tasks_alike=True)
    textbook, _, _ = _reference(x, y, owner, False, iters=1500)
    assert np.abs(got - alike).max() < 5e-3 * np.abs(alike).max()
    assert np.abs(got - textbook).max() > 10 * np.abs(got - alike).max()


def test_features_that_vary_between_tasks_get_loose_priors():
    model = _fit("diagonal")
    sd = model.prior_covariance.diagonal().sqrt().numpy()
    assert sd[0] > 0.5 and sd[1] < 0.15  # the feature whose weight varies; the one whose does not
    assert sd[0] > 10 * sd[1] and sd[0] > 2 * sd[2]
    assert set(model.diagnostics()) == {"noise_sd", "intercept_sd", "weight_sd_mean"}


def test_beats_pooled_and_per_task_least_squares_on_new_rows():
    model = _fit("diagonal")
    x, targets, owner = _data()
    y = np.nansum(np.stack([t.numpy() for t in targets.values()], 1), 1)
    new_x, new_targets, new_owner = _data(draw=1, rows=200)  # new rows of the same tasks
    new_y = np.nansum(np.stack([t.numpy() for t in new_targets.values()], 1), 1)
    X, new_X = np.c_[x.numpy(), np.ones(len(x))], np.c_[new_x.numpy(), np.ones(len(new_x))]
    pooled = new_X @ np.linalg.lstsq(X, y, rcond=None)[0]
    per_task = np.empty(len(new_x))
    for k in range(K):
        fit = np.linalg.lstsq(X[owner == k], y[owner == k], rcond=None)[0]
        per_task[new_owner == k] = new_X[new_owner == k] @ fit

    def mse(p: np.ndarray) -> float:
        return float(np.mean((new_y - p) ** 2))

    got = mse(_own_predictions(model, new_x, new_owner))
    assert got < 0.5 * mse(pooled)
    assert got < 0.95 * mse(per_task)


def test_penalty_follows_the_balancers_weights():
    """`mean` weights each task's loss 1/K: the prior's penalty must shrink with it, or the
    deviations would be 12 times more tightly held than under `ew`."""
    x, _, owner = _data()
    ew = _own_predictions(_fit("diagonal", "ew", epochs=120), x, owner)
    mean = _own_predictions(_fit("diagonal", "mean", epochs=120), x, owner)
    assert np.abs(ew - mean).max() < 1e-3 * np.abs(ew).max()


def test_setups_it_cannot_fit_are_refused():
    with pytest.raises(ValueError, match=r"set training.optimizer: lbfgs"):
        Trainer(Multilevel(D, TASKS), config=TrainConfig(progress=False))
    with pytest.raises(
        ValueError,
        match=r"not both in one model .*; 1 are binary \(c: binary\) "
        r"and 2 regression \(t0: regression; t1: regression\): train them in two",
    ):
        Multilevel(D, [*TASKS[:2], Task("c", "binary")])
    with pytest.raises(
        ValueError,
        match=r"1 of 1 are neither \(m: kind multiclass\): make them "
        r"kind regression or kind binary \(a two-class multiclass",
    ):
        Multilevel(D, [Task("m", "multiclass", num_classes=3)])
    with pytest.raises(
        ValueError,
        match=r"log loss \(bce, the default loss of these tasks\), and "
        r"2 of 2 tasks are trained otherwise \(b0: loss gce; b1: loss gce\): leave",
    ):
        Multilevel(D, [Task(f"b{k}", "binary", loss="gce") for k in range(2)])
    with pytest.raises(ValueError, match=r"\(b: label_smoothing 0.2\): leave loss \(and label_sm"):
        Multilevel(D, [Task("b", "binary", label_smoothing=0.2)])
    with pytest.raises(ValueError, match=r"a binary task's heads have none: use solver lbfgs"):
        Multilevel(D, BINARY, solver="exact")
    # exact with a trunk ran no closed-form solve at all: lbfgs under another name
    with pytest.raises(ValueError, match=r"hidden \[4\] puts a trained trunk .* set hidden: \[\]"):
        Multilevel(D, TASKS, hidden=(4,), solver="exact")
    many = [Task(f"r{k}", "regression", loss="l1") for k in range(5)]
    with pytest.raises(
        ValueError,
        match=r"squared error \(mse, the default loss of these tasks\), "
        r"and 5 of 5 .*\(r0: loss l1; r1: loss l1; r2: loss l1 \(and 2 more\)",
    ):
        Multilevel(D, many)
    with pytest.raises(ValueError, match=r"hidden: \[\] has none"):
        Multilevel(D, TASKS, dropout=0.2)
    with pytest.raises(ValueError, match="covariance"):
        build_model("multilevel", ["a", "b"], TASKS[:2], covariance="spherical")
    with pytest.raises(ValueError, match="dropout"):
        Trainer(Multilevel(D, TASKS, hidden=(4,), dropout=0.2), config=_config())


BINARY = [Task(f"b{k}", "binary") for k in range(K)]


def _binary_data(
    seed: int = 0, rows: int = 60, draw: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    """K logistic tasks, logit_k = x·w_k + c_k with w_k = w + spread ⊙ noise, and `rows` rows
    of each (from `draw`: new rows of the same tasks). Also each row's true P(class 1)."""
    rng = np.random.default_rng(seed)
    w = 1.5 * rng.normal(size=D)
    weights = w + SPREAD * rng.normal(size=(K, D))
    intercepts = INTERCEPT_SPREAD * rng.normal(size=K)
    rows_rng = np.random.default_rng([seed, draw])
    x = rows_rng.normal(size=(K * rows, D))
    owner = np.repeat(np.arange(K), rows)
    p = 1 / (1 + np.exp(-(np.einsum("ij,ij->i", x, weights[owner]) + intercepts[owner])))
    y_all = (rows_rng.random(len(x)) < p).astype(float)
    targets = {}
    for k, t in enumerate(BINARY):
        y = y_all.copy()
        y[owner != k] = np.nan
        targets[t.name] = torch.tensor(y, dtype=torch.float32)
    return torch.tensor(x, dtype=torch.float32), targets, owner, p


def _logistic_reference(x: np.ndarray, y: np.ndarray, owner: np.ndarray, iters: int = 200):
    """The logistic mixed model logit = Xβ + X b_k, b_k ~ N(0, D) with D diagonal, by Laplace
    EM written out (not the model's code path): Newton's method on the joint posterior of β and
    every b_k, then D = the tasks' mean of b b' + (Hessian of task k's part)⁻¹, diagonal.
    Returns (each row's own task's logit, D)."""
    X = np.c_[x, np.ones(len(x))]
    q = X.shape[1]
    theta = np.zeros(q * (K + 1))  # β, then each b_k
    cov = np.full(q, 0.1)
    for _ in range(iters):
        for _newton in range(50):
            beta, b = theta[:q], theta[q:].reshape(K, q)
            logit = X @ beta + np.einsum("ij,ij->i", X, b[owner])
            p = 1 / (1 + np.exp(-logit))
            grad, hess = np.zeros_like(theta), np.zeros((len(theta), len(theta)))
            for k in range(K):
                m = owner == k
                g = X[m].T @ (p[m] - y[m])
                h = (X[m] * (p[m] * (1 - p[m]))[:, None]).T @ X[m]
                own = slice(q * (k + 1), q * (k + 2))
                grad[:q] += g
                grad[own] += g + b[k] / cov
                hess[:q, :q] += h
                hess[:q, own] += h
                hess[own, :q] += h
                hess[own, own] += h + np.diag(1 / cov)
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
            theta -= step
            if np.abs(step).max() < 1e-10:
                break
        beta, b = theta[:q], theta[q:].reshape(K, q)
        logit = X @ beta + np.einsum("ij,ij->i", X, b[owner])
        p = 1 / (1 + np.exp(-logit))
        moments = np.zeros(q)
        for k in range(K):
            m = owner == k
            h = (X[m] * (p[m] * (1 - p[m]))[:, None]).T @ X[m] + np.diag(1 / cov)
            moments += b[k] ** 2 + np.diag(np.linalg.inv(h))
        cov = moments / K
    return logit, cov


@functools.cache
def _binary_fit(epochs: int = 200) -> Multilevel:
    x, targets, _, _ = _binary_data()
    torch.manual_seed(0)
    model = Multilevel(D, BINARY)
    Trainer(model, make_balancer("ew"), config=_config(epochs)).fit(TaskData(x, targets))
    return model


def test_binary_tasks_fit_the_logistic_mixed_models_laplace_em():
    x, targets, owner, _ = _binary_data()
    y = np.nansum(np.stack([t.numpy() for t in targets.values()], 1), 1)
    want, cov = _logistic_reference(x.double().numpy(), y, owner)
    model = _binary_fit()
    with torch.no_grad():
        out = model(x)  # binary outputs are logits
    every = np.stack([out[t.name].double().numpy() for t in BINARY], 1)
    got = every[np.arange(len(x)), owner]
    # as probabilities: L-BFGS in float32 leaves a logit of 11 a little short, which is no error
    assert np.abs(1 / (1 + np.exp(-got)) - 1 / (1 + np.exp(-want))).max() < 0.015
    fitted = model.prior_covariance.diagonal().double().numpy()
    assert np.abs(fitted - cov).max() < 2e-2 * cov.max()
    sd = np.sqrt(cov)
    assert sd[0] > 3 * sd[1]  # learnt: the first feature's weight varies between tasks
    assert set(model.diagnostics()) == {"intercept_sd", "weight_sd_mean"}  # no noise variance


def test_binary_penalty_is_each_tasks_log_prior_on_its_mean_loss_scale():
    """Task k's part of the objective is w_k × its mean log loss; its log prior must enter as
    w_k / n_k × ½ v_k' P v_k, so that the minimum is the posterior's mode."""
    x, targets, _, _ = _binary_data()
    model = Multilevel(D, BINARY)
    masks = [t.mask(targets[t.name]) for t in BINARY]
    weights = torch.linspace(0.5, 2.0, K)
    for _ in range(2):
        assert model.refit(x, targets, masks, weights)
    with torch.no_grad():
        for layer in model.deviations.values():
            layer.weight.normal_()
            layer.bias.normal_()
        v = model.deviations_matrix().double()
        precision = model.prior_precision.double()
        rows = torch.tensor([float(m.sum()) for m in masks], dtype=torch.float64)
        want = (weights.double() / rows * 0.5 * ((v @ precision) * v).sum(1)).sum()
        assert float(model.penalty()) == pytest.approx(float(want), rel=1e-6)


@pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-learn's notes on coming defaults
def test_binary_tasks_beat_per_task_and_pooled_logistic_regression_on_new_rows():
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    x, targets, owner, _ = _binary_data(rows=40)
    y = np.nansum(np.stack([t.numpy() for t in targets.values()], 1), 1)
    new_x, _, new_owner, new_p = _binary_data(rows=400, draw=1)
    model = Multilevel(D, BINARY)
    torch.manual_seed(0)
    Trainer(model, make_balancer("ew"), config=_config(100)).fit(TaskData(x, targets))
    with torch.no_grad():
        out = model(new_x)
    logits = np.stack([out[t.name].double().numpy() for t in BINARY], 1)
    got = 1 / (1 + np.exp(-logits[np.arange(len(new_x)), new_owner]))
    xn = x.numpy()
    pooled = LogisticRegression(C=1e4).fit(xn, y).predict_proba(new_x.numpy())[:, 1]
    per_task = np.empty(len(new_x))
    for k in range(K):
        m, new = owner == k, new_owner == k
        fit = LogisticRegressionCV(Cs=10, cv=3, scoring="neg_log_loss").fit(xn[m], y[m])
        per_task[new] = fit.predict_proba(new_x.numpy()[new])[:, 1]

    def loss(p: np.ndarray) -> float:
        """Expected log loss of new labels drawn with the true probabilities."""
        p = np.clip(p, 1e-9, 1 - 1e-9)
        return float(-np.mean(new_p * np.log(p) + (1 - new_p) * np.log(1 - p)))

    best = loss(new_p)  # the labels' own entropy
    excess = loss(got) - best
    assert excess < 0.5 * (loss(pooled) - best)
    assert excess < 0.7 * (loss(per_task) - best)


def test_a_new_binary_tasks_probability_averages_over_its_deviations_prior():
    """A task the model has not seen gets the mean of σ over its deviation's prior (fitted D),
    not σ at the prior's mean: checked against Monte Carlo, and on tasks drawn new from the
    data's own process its expected log loss is below the plug-in's."""
    model = _binary_fit()
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=(300, D)), dtype=torch.float32)
    with torch.no_grad():
        got = torch.sigmoid(model.shared_prediction(x)).double().numpy().ravel()
        centre = MeanRegularised.shared_prediction(model, x).double().numpy().ravel()
    cov = model.prior_covariance.double().numpy()
    z = np.c_[x.double().numpy(), np.ones(len(x))]
    v = rng.multivariate_normal(np.zeros(len(cov)), cov, size=20_000)
    sampled = (1 / (1 + np.exp(-(centre[:, None] + z @ v.T)))).mean(1)
    assert np.abs(got - sampled).max() < 0.02  # the probit approximation's accuracy
    plug_in = 1 / (1 + np.exp(-centre))
    assert (np.abs(got - 0.5) <= np.abs(plug_in - 0.5) + 1e-9).all()  # less sure of itself
    assert np.abs(got - plug_in).max() > 0.05

    truth = np.random.default_rng(0)  # the tasks' common weights, as _binary_data draws them
    w = 1.5 * truth.normal(size=D)
    new = np.random.default_rng(7)
    tasks = 200
    weights = w + SPREAD * new.normal(size=(tasks, D))
    intercepts = INTERCEPT_SPREAD * new.normal(size=tasks)
    p = 1 / (1 + np.exp(-(x.double().numpy() @ weights.T + intercepts)))  # rows × new tasks

    def loss(q: np.ndarray) -> float:
        q = np.clip(q, 1e-9, 1 - 1e-9)[:, None]
        return float(-np.mean(p * np.log(q) + (1 - p) * np.log(1 - q)))

    assert loss(got) < loss(plug_in) - 0.01


def test_resume_continues_bit_for_bit(tmp_path):
    x, targets, _ = _data()
    data = TaskData(x, targets)

    def trainer(steps: int) -> Trainer:
        torch.manual_seed(0)
        return Trainer(Multilevel(D, TASKS), config=_config(None, steps=steps))

    whole = trainer(8)
    whole.fit(data)
    first = trainer(4)
    first.fit(data)
    first.save(tmp_path / "half.pt")
    second = trainer(8)
    second.load(tmp_path / "half.pt")
    second.fit(data)
    for (k, a), b in zip(whole.model.state_dict().items(), second.model.state_dict().values(),
                         strict=True):  # fmt: skip
        assert torch.equal(a, b), k


def test_mean_regularised_computes_every_deviation_as_its_own_head_would():
    torch.manual_seed(0)
    model = MeanRegularised(D, TASKS, hidden=(5,), coupling=0.1)
    for layer in model.deviations.values():
        torch.nn.init.normal_(layer.weight)
        torch.nn.init.normal_(layer.bias)
    x = torch.randn(7, D)
    out = model(x)
    z = model.trunk(x)
    for t in TASKS:
        want = (model.shared_head(z) + model.deviations[t.name](z)).squeeze(-1)
        torch.testing.assert_close(out[t.name], want)


@pytest.mark.parametrize("collinear", [False, True])
def test_exact_solver_leaves_the_heads_at_the_objectives_minimum(collinear):
    """After a refit with `solver: exact`, the training objective's gradient with respect to
    every head is zero, whatever weights the balancer gives the tasks, and with an input that
    repeats another (the shared head's equations are then singular)."""
    x, targets, _ = _data()
    if collinear:
        x = torch.cat([x, x[:, :1]], 1)
    model = Multilevel(x.shape[1], TASKS, solver="exact")
    masks = [t.mask(targets[t.name]) for t in TASKS]
    weights = torch.linspace(0.5, 2.0, K)
    for _ in range(3):  # the first sets the starting prior; then EM steps
        assert model.refit(x, targets, masks, weights)
    out = model(x)
    losses = torch.stack([((out[t.name] - targets[t.name])[m] ** 2).mean()
                          for t, m in zip(TASKS, masks, strict=True)])  # fmt: skip
    objective = (weights * losses).sum() + model.penalty()
    grads = torch.autograd.grad(objective, list(model.parameters()))
    assert max(float(g.abs().max()) for g in grads) < 1e-4
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_exact_and_lbfgs_solvers_reach_the_same_fit():
    x, targets, owner = _data()
    fits = []
    for solver in ("exact", "lbfgs"):
        torch.manual_seed(0)
        model = Multilevel(D, TASKS, solver=solver)
        Trainer(model, make_balancer("ew"), config=_config(40)).fit(TaskData(x, targets))
        fits.append(_own_predictions(model, x, owner))
    assert np.abs(fits[0] - fits[1]).max() < 1e-3 * np.abs(fits[0]).max()


def test_shrinkage_pulls_a_full_covariance_towards_the_diagonal():
    x, targets, owner = _data()

    def fit(covariance: str, shrinkage: float = 0.0) -> Multilevel:
        torch.manual_seed(0)
        model = Multilevel(D, TASKS, covariance=covariance, solver="exact", shrinkage=shrinkage)
        Trainer(model, make_balancer("ew"), config=_config(60)).fit(TaskData(x, targets))
        return model

    def off_diagonal(model: Multilevel) -> torch.Tensor:
        cov = model.prior_covariance
        return cov - torch.diag(torch.diagonal(cov))

    full, half, whole, diagonal = fit("full"), fit("full", 0.5), fit("full", 1.0), fit("diagonal")
    assert float(off_diagonal(full).abs().max()) > 0.05
    assert float(off_diagonal(whole).abs().max()) == 0.0
    assert 0 < float(off_diagonal(half).abs().sum()) < float(off_diagonal(full).abs().sum())
    same = _own_predictions(whole, x, owner), _own_predictions(diagonal, x, owner)
    assert np.abs(same[0] - same[1]).max() < 1e-4 * np.abs(same[1]).max()  # 1: the diagonal EM
    with pytest.raises(ValueError, match="covariance diagonal has none"):
        Multilevel(D, TASKS, shrinkage=0.3)
    with pytest.raises(ValueError, match="shrinkage"):
        build_model("multilevel", ["a", "b"], TASKS[:2], covariance="full", shrinkage=1.5)
