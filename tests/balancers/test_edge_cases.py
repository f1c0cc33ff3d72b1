"""Edge cases from the outside review (issue 20): task gradients whose norms differ by orders of
magnitude (item 3), task gradients that cancel (item 4), and NaN/inf reaching the balancers
(item 11). Each method is checked against its own optimality conditions, not against itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import quadprog
import torch
from torch import Tensor, nn

from polytask.balancers import BALANCERS, BilevelBalancer, GradientInfo, make_balancer
from polytask.balancers._cagrad import cagrad_weights
from polytask.balancers._solvers import project_simplex, project_to_dual_cone
from polytask.gradients import backward, split_features
from tests.balancers.helpers import GRADIENT_METHODS, make

RATIOS = [1e4, 1e6, 1e8]
TASKS = ["a", "b", "c", "d"]


def _spread(ratio: float) -> Tensor:
    """4 random rows (16 columns, float64) scaled geometrically from ratio^−½ to ratio^½: at
    1e6 by 1e-3, 1e-1, 1e1 and 1e3, as in the review."""
    g = torch.Generator().manual_seed(0)
    half = 0.5 * math.log10(ratio)
    scales = torch.logspace(-half, half, 4, dtype=torch.float64)
    return torch.randn(4, 16, generator=g, dtype=torch.float64) * scales[:, None]


def _coef(name: str, jac: Tensor, **params: object) -> Tensor:
    b = make_balancer(name, **params)
    b.setup(TASKS[: jac.shape[0]])
    losses = torch.ones(jac.shape[0], dtype=torch.float64)
    return b.coefficients(GradientInfo(losses, gramian=jac @ jac.T))


# -- item 3: task gradients of very different norms ------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_non_conflicting_methods_conflict_with_no_task(name, ratio):
    """Before: a ridge of 1e-10 × G's mean diagonal swamped the small tasks' rows, and the
    update had cosine −0.14 with the smallest task at 1e6 (−7e-4 for DualProj at 1e4)."""
    jac = _spread(ratio)
    d = jac.T @ _coef(name, jac)
    cosines = (jac @ d) / (jac.norm(dim=1) * d.norm())
    assert cosines.min() >= -1e-9, cosines


@pytest.mark.parametrize("ratio", RATIOS)
def test_dual_cone_projections_satisfy_their_kkt_conditions(ratio):
    """Each column of UPGrad: v ≥ u, g_iᵀd ≥ 0 for every task and g_iᵀd = 0 where v_i > u_i
    (each relative to ‖g_i‖‖d‖), which characterise the projection exactly."""
    jac = _spread(ratio)
    g = jac @ jac.T
    prefs = torch.eye(4, dtype=torch.float64) / 4
    v = project_to_dual_cone(g, prefs)
    norms = jac.norm(dim=1)
    for j in range(4):
        d = jac.T @ v[:, j]
        scale = norms * d.norm()
        assert (v[:, j] >= prefs[:, j]).all()
        assert ((jac @ d) >= -1e-9 * scale).all()
        free = (v[:, j] - prefs[:, j]) * norms > 1e-9 * d.norm()
        assert ((jac @ d).abs()[free] <= 1e-9 * scale[free]).all(), j
    torch.testing.assert_close(_coef("upgrad", jac), v.sum(1))


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("normalize", ["none", "l2"])
def test_mgda_is_the_min_norm_point(ratio, normalize):
    """λ on the simplex with g_iᵀd ≥ ‖d‖² for every task proves d = Jᵀλ the min-norm point of
    the hull (before: cosine −0.46 with a task at 1e8, where MGDA never conflicts). Rounding
    bounds g_iᵀd to ~1e-16‖g_i‖‖d‖, hence the second tolerance."""
    jac = _spread(ratio)
    lam = _coef("mgda", jac, normalize=normalize)
    scaled = jac if normalize == "none" else jac / jac.norm(dim=1, keepdim=True)
    weights = lam if normalize == "none" else lam * jac.norm(dim=1)  # λ on the unit gradients
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-12)
    d = scaled.T @ weights
    floor = (1 - 1e-9) * (d @ d) - 1e-12 * scaled.norm(dim=1) * d.norm()
    assert ((scaled @ d) >= floor).all(), (scaled @ d) / (d @ d)


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize(("name", "params", "power"), [
    ("nash_mtl", {"normalize": False}, 1.0),
    ("fairgrad", {"alpha": 2.0}, 0.5), ("fairgrad", {"alpha": 0.5}, 2.0),
])  # fmt: skip
def test_power_equation_holds_for_every_task(name, params, power, ratio):
    """(G w)_i = w_i^(−p), checked relative to each task (before: (Gw)_i w_i = −0.06 instead
    of 1 for the smallest task at 1e6, which Nash-MTL then pushes against)."""
    jac = _spread(ratio)
    w = _coef(name, jac, **params)
    assert (w > 0).all()
    residual = (jac @ jac.T @ w) * w**power
    # 1e-7: at a 1e6 spread the Gramian's condition number (~1e12) leaves ~1e-8 of float64
    # rounding in the smallest task's residual, which varies with the NumPy / LAPACK build
    torch.testing.assert_close(residual, torch.ones(4, dtype=torch.float64), rtol=1e-7, atol=0)


@pytest.mark.parametrize("ratio", RATIOS)
def test_sdmgrad_inner_problem_is_optimal(ratio):
    """w = argmin_Δ ½‖g_w‖² + λ g_wᵀg0: ∂_i ≥ wᵀ∂ on the simplex, with ∂ = J(g_w + λ g0)."""
    jac = _spread(ratio)
    lam = 0.3
    c = _coef("sdmgrad", jac, lam=lam)
    w = c * (1 + lam) - lam / 4  # c = (w + λ/K)/(1 + λ)
    assert w.min() >= -1e-12
    e = jac.T @ w + lam * jac.mean(0)
    gaps = jac @ e - (jac.T @ w) @ e
    assert (gaps >= -1e-9 * (jac.norm(dim=1) + (jac.T @ w).norm()) * e.norm()).all(), gaps


@pytest.mark.parametrize("ratio", RATIOS)
def test_aligned_mtl_keeps_every_task_direction(ratio):
    """d = J̃ᵀ1 with J̃ = σ_min U Vᵀ from J's own SVD (before: eigenvalues of G below
    K·eps32·λ_max counted as zero, which dropped the smallest task's direction at 1e4 and
    left it a cosine of −0.27)."""
    jac = _spread(ratio)
    u, sigma, vt = torch.linalg.svd(jac, full_matrices=False)
    expected = sigma.min() * vt.T @ (u.T @ torch.ones(4, dtype=torch.float64))
    d = jac.T @ _coef("aligned_mtl", jac)
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-7 * float(expected.norm()))


def _cagrad_dual(jac: Tensor, c: float) -> float:
    """f(w) = g_wᵀg0 + √φ‖g_w‖ at the solver's w: an upper bound on the primal value t*."""
    w = torch.from_numpy(cagrad_weights(jac @ jac.T, c))
    gw, g0 = jac.T @ w, jac.mean(0)
    return float(gw @ g0 + c * g0.norm() * gw.norm())


@pytest.mark.parametrize("ratio", RATIOS)
def test_cagrad_reaches_the_primal_optimum(ratio):
    """d = (1 + c²)Jᵀcoef lies in the ball ‖d − g0‖ ≤ c‖g0‖ and its worst task gets the dual's
    value: min_i g_iᵀd ≥ f(w) ≥ t* up to 1e-6, so d is the primal optimum (before: the small
    tasks' constraints were settled only on G's overall scale, min_i g_iᵀd = −9.4 < 0 < t* at
    1e8 and 4e-5 short of t* at 1e6)."""
    jac = _spread(ratio)
    c = 0.5
    d = jac.T @ _coef("cagrad", jac, c=c) * (1 + c**2)
    g0 = jac.mean(0)
    assert (d - g0).norm() <= c * g0.norm() * (1 + 1e-9)
    value = _cagrad_dual(jac, c)
    assert value > 0
    assert (jac @ d).min() >= value * (1 - 1e-6), ((jac @ d).min(), value)


# -- item 4: CAGrad when the task gradients cancel --------------------------------------------


def _nearest_conflict_free(jac: np.ndarray) -> np.ndarray:
    """The point of {d : J d ≥ 0} nearest the mean gradient, by a QP in d (n variables)."""
    n = jac.shape[1]
    g0 = jac.mean(0)
    d: np.ndarray = quadprog.solve_qp(np.eye(n), g0, jac.T.copy(), np.zeros(len(jac)), 0)[0]
    return d


def _linear_tasks(jac: Tensor) -> tuple[Tensor, Tensor]:
    """Losses L_k = g_kᵀθ (float32) whose gradients are exactly the rows of `jac`, and θ."""
    theta = nn.Parameter(torch.zeros(jac.shape[1]))
    return jac @ theta, theta


@pytest.mark.parametrize("extra", [1, 2])
def test_cagrad_with_opposed_tasks_returns_the_bounded_primal_optimum(extra):
    """Tasks a and −a put 0 in the hull, so the primal value is t* = 0 and the dual's optimum
    has g_w* = 0, where the closed form √φ w/‖g_w‖ divides by zero. The optimum is then every
    d of the ball with J d ≥ 0; the nearest to g0 is returned (here inside the ball).

    Before: coefficients of 1e9 and, through the float32 engine, an update of the wrong size
    and direction (cosine ±0.23 with the opposed tasks instead of 0)."""
    g = torch.Generator().manual_seed(0)
    a, *others = torch.randn(1 + extra, 20, generator=g)
    jac = torch.stack([a, -a, *others])
    c = 0.5
    reference = _nearest_conflict_free(jac.double().numpy())
    g0 = jac.double().mean(0).numpy()
    assert np.linalg.norm(reference - g0) < c * np.linalg.norm(g0)  # t* = 0 is attained
    balancer = make_balancer("cagrad", c=c)
    balancer.setup(TASKS[: len(jac)])
    losses, theta = _linear_tasks(jac)
    result = backward(losses, [theta], balancer)
    assert result.weights is not None and result.weights.abs().max() <= 1.0  # bounded
    update = theta.grad
    assert update is not None
    expected = torch.from_numpy(reference / (1 + c**2)).float()
    torch.testing.assert_close(update, expected, rtol=0, atol=1e-5 * float(expected.norm()))
    cosines = (jac @ update) / (jac.norm(dim=1) * update.norm())
    assert cosines.min() >= -1e-5, cosines


def test_cagrad_with_two_opposed_tasks_of_unequal_size_stays_put():
    """g_b = −2 g_a with c = 2: the ball around g0 = −g_a/2 reaches {d : g_aᵀd = 0} only at
    d = 0 in the tasks' span, the primal optimum (before: coefficients ~1e9)."""
    a = torch.randn(20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    jac = torch.stack([a, -2 * a])
    coef = _coef("cagrad", jac, c=2.0)
    assert coef.abs().max() <= 1.0
    assert (jac.T @ coef).norm() <= 1e-8 * a.norm()


@pytest.mark.parametrize("c", [0.5, 1.0])
def test_cagrad_with_one_task_steps_as_with_two_identical_ones(c):
    """d = g0 + c‖g0‖ g_w / ‖g_w‖ = (1 + c) g0 for K = 1, rescaled by 1 / (1 + c²): 1.2 g at
    c = 0.5 (it gave 0.8, so a batch labelling one task stepped 1.5 times shorter)."""
    g = torch.randn(12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    alone = _coef("cagrad", g[None], c=c)
    assert float(alone[0]) == pytest.approx((1 + c) / (1 + c**2))
    twice = _coef("cagrad", torch.stack([g, g]), c=c)
    assert float(twice.sum()) == pytest.approx(float(alone[0]), rel=1e-6)


# -- item 11: NaN and inf never reach a balancer ----------------------------------------------


def _problem(kind: str, balancer_name: str):
    """A trunk and four heads; task "b" gets an infinite loss ("loss") or a finite loss with an
    infinite derivative on its own copy of z ("gradient"), as split_features gives each head."""
    torch.manual_seed(0)
    trunk = nn.Linear(4, 6)
    heads = nn.ModuleList([nn.Linear(6, 1) for _ in TASKS])
    z = trunk(torch.randn(8, 4))
    zs = split_features(z, len(TASKS))
    losses = [h(zk).squeeze(1).pow(2).mean() for h, zk in zip(heads, zs, strict=True)]
    if kind == "loss":
        losses[1] = losses[1] * float("inf")
    else:  # √|x − x| is 0, its derivative is not
        losses[1] = losses[1] + (zs[1][:, 0] - zs[1][:, 0].detach()).abs().sqrt().mean()
    balancer = make(balancer_name, TASKS)
    val_loss = None
    if isinstance(balancer, BilevelBalancer):
        val_loss = heads[0](trunk(torch.randn(8, 4))).pow(2).mean()
    return torch.stack(losses), trunk, z, zs, balancer, val_loss


@pytest.mark.parametrize("name", sorted(BALANCERS))
def test_every_balancer_names_the_task_with_a_non_finite_loss(name):
    """Before: LAPACK "INTERNAL ASSERT FAILED" (IMTL), "eigh ... ill-conditioned" (Aligned-MTL,
    ConFIG), or NaN written silently into .grad (PCGrad, GradVac, RGW, GradNorm, every loss
    weighting)."""
    losses, trunk, z, zs, balancer, val_loss = _problem("loss", name)
    with pytest.raises(FloatingPointError, match=r"non-finite loss in task\(s\) \['b'\]") as err:
        backward(losses, balancer=balancer, features=z, task_features=zs, val_loss=val_loss)
    assert err.value.tasks == ["b"]  # type: ignore[attr-defined]
    assert trunk.weight.grad is None


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_gradient_methods_name_the_task_with_a_non_finite_gradient(name):
    """A finite loss whose gradient is not: the check on the task gradients (the Gramian's
    diagonal, or J's row sums) names the task before the balancer or its state sees it."""
    losses, trunk, z, zs, balancer, val_loss = _problem("gradient", name)
    before = {k: v.clone() for k, v in balancer.state_dict().items()}
    with pytest.raises(FloatingPointError, match=r"non-finite gradient in task\(s\) \['b'\]") as e:
        backward(losses, balancer=balancer, features=z, task_features=zs, val_loss=val_loss)
    assert e.value.tasks == ["b"]  # type: ignore[attr-defined]
    assert trunk.weight.grad is None  # nothing reached the shared parameters
    for key, value in balancer.state_dict().items():
        assert torch.equal(value, before[key]), key  # nor the balancer's running state


LOSS_METHODS = sorted(set(BALANCERS) - set(GRADIENT_METHODS))


@pytest.mark.parametrize("name", LOSS_METHODS)
def test_loss_weightings_refuse_a_non_finite_gradient_after_back_propagating(name):
    """They never form one task's gradient, so the check is on the shared parameters' .grad
    once written (before: NaN left there silently, the docstring promising an error)."""
    losses, _, z, zs, balancer, _ = _problem("gradient", name)
    with pytest.raises(FloatingPointError, match="non-finite gradient") as err:
        backward(losses, balancer=balancer, features=z, task_features=zs)
    assert "zero the gradients" in str(err.value) and err.value.tasks == TASKS  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["mgda", "nash_mtl", "upgrad", "pcgrad"])
def test_a_task_whose_loss_misses_the_shared_parameters_is_left_out_with_a_warning(name):
    """A head-only regulariser given as a task: before, MGDA put all its weight on it (a zero
    shared update) and Nash-MTL weighed it 1e5. Now each step equals the step without it."""

    def step(with_extra: bool) -> tuple[Tensor, Tensor]:
        torch.manual_seed(0)
        trunk = nn.Linear(4, 8)
        heads = nn.ModuleList([nn.Linear(8, 1), nn.Linear(8, 1)])
        x, y = torch.randn(32, 4), torch.randn(32, 2)
        z = trunk(x)
        losses = [nn.functional.mse_loss(heads[k](z).squeeze(1), y[:, k]) for k in range(2)]
        extra = nn.Parameter(torch.ones(1))
        names = ["a", "b", "reg"] if with_extra else ["a", "b"]
        torch.manual_seed(1)  # pcgrad's task order
        result = backward(torch.stack(losses + [(extra**2).sum()] * with_extra),
                          list(trunk.parameters()), make(name, names))  # fmt: skip
        assert result.weights is not None and trunk.weight.grad is not None
        return trunk.weight.grad, result.weights

    with pytest.warns(
        UserWarning, match=r"task\(s\) \[.reg.\] on the shared parameters is exactly zero"
    ):
        grad, weights = step(True)
    alone, alone_weights = step(False)
    assert torch.allclose(grad, alone, atol=1e-6) and float(alone.norm()) > 0.1
    assert weights[2] == 0 and torch.allclose(weights[:2], alone_weights, atol=1e-5)


@pytest.mark.parametrize("name", ["upgrad", "graddrop"])
def test_the_representation_mode_names_the_task_too(name):
    losses, trunk, z, zs, balancer, _ = _problem("gradient", name)
    with pytest.raises(FloatingPointError, match=r"non-finite gradient in task\(s\) \['b'\]"):
        backward(losses, balancer=balancer, mode="representation", features=z, task_features=zs)
    assert trunk.weight.grad is None


def test_one_infinite_derivative_on_the_whole_graph_is_reported_with_its_spread():
    """Without per-task copies of z, the batched backward sends a 0 cotangent through task
    b's loss, and 0·inf turns every task's row NaN: all tasks are named, and the message says
    why (a non-finite loss, by contrast, is named alone before any backward)."""
    torch.manual_seed(0)
    trunk, heads = nn.Linear(4, 6), nn.ModuleList([nn.Linear(6, 1) for _ in TASKS])
    z = trunk(torch.randn(8, 4))
    losses = [h(z).squeeze(1).pow(2).mean() for h in heads]
    losses[1] = losses[1] + (z[:, 0] - z[:, 0].detach()).abs().sqrt().mean()
    with pytest.raises(FloatingPointError, match="0·inf") as err:
        backward(torch.stack(losses), list(trunk.parameters()), make("upgrad", TASKS))
    assert err.value.tasks == TASKS  # type: ignore[attr-defined]


def test_tasks_are_named_by_index_before_setup():
    losses, _, z, zs, _, _ = _problem("loss", "upgrad")
    with pytest.raises(FloatingPointError, match=r"\['task 1'\]"):
        backward(losses, balancer=make_balancer("upgrad"), features=z, task_features=zs)


def test_solvers_refuse_a_non_finite_gramian_with_a_clear_error():
    gramian = torch.eye(3, dtype=torch.float64)
    gramian[1, 1] = float("nan")
    for name in ("upgrad", "dualproj", "mgda", "nash_mtl", "cagrad"):
        b = make_balancer(name)
        b.setup(TASKS[:3])
        with pytest.raises(FloatingPointError, match=r"non-finite entries .* tasks \[1\]"):
            b.coefficients(GradientInfo(torch.ones(3), gramian=gramian))


@pytest.mark.parametrize(("v", "expected"), [
    ([1e20, 1.0, -1e20], [1.0, 0.0, 0.0]),  # the top entry's test failed by rounding
    ([1e308, -1e308, 5.0], [1.0, 0.0, 0.0]),  # v − max(v) overflows to −inf
    ([0.0, -1e308, -1e308], [1.0, 0.0, 0.0]),  # a cumulative sum overflows to −inf
    ([math.inf, 1.0, math.inf], [0.5, 0.0, 0.5]),  # the limit: +inf entries share the mass
    ([-math.inf, -math.inf], [0.5, 0.5]),
    ([0.6, 0.3, 1.1], [0.25, 0.0, 0.75]),
])  # fmt: skip
def test_project_simplex_on_extreme_input(v, expected):
    """Before: `max(): Expected reduction dim` on very large input (MoDo, MOML, FORUM)."""
    out = project_simplex(torch.tensor(v, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def test_project_simplex_refuses_nan():
    with pytest.raises(FloatingPointError, match="NaN"):
        project_simplex(torch.tensor([0.5, math.nan], dtype=torch.float64))


def test_power_equation_says_when_it_is_solved_only_approximately():
    """FairGrad at α = 100 with gradient norms spread 100-fold: some weights belong near
    1e-270, and the solver stopped at 200 Newton steps with residuals up to 1e2, silently."""
    import warnings

    import numpy as np

    from polytask.balancers._solvers import solve_power_equation

    rng = np.random.default_rng(7)
    residuals, warned = [], 0
    for k, spread, alpha in ((7, 2, 100.0), (7, 2, 50.0), (3, 0, 1.0), (5, 1, 2.0)):
        for _ in range(3):
            jac = rng.normal(size=(k, 20)) * 10.0 ** rng.uniform(-spread, spread, size=(k, 1))
            g = jac @ jac.T
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                w = solve_power_equation(torch.tensor(g), 1 / alpha).numpy()
            residual = float(np.abs(g @ w * w ** (1 / alpha) - 1).max())
            said = [x for x in seen if "solved only to a relative residual" in str(x.message)]
            assert bool(said) == (residual > 1e-6), (k, alpha, residual)
            warned += bool(said)
            if alpha <= 2:
                residuals.append(residual)
    assert warned >= 1 and max(residuals) < 1e-9


@pytest.mark.parametrize(("name", "params", "message"), [
    ("famo", {"lr": -1}, "FAMO lr must be > 0"),
    ("db_mtl", {"beta": 1.5}, r"DB-MTL beta must be in \[0, 1\)"),
    ("moco", {"beta": 2.0}, r"moco beta must be in \(0, 1\]"),
    ("moco", {"rho": -0.1}, "moco rho must be >= 0"),
    ("gradnorm", {"alpha": -1}, "GradNorm alpha must be >= 0"),
    ("modo", {"gamma": -1}, "MoDo gamma must be > 0"),
    ("auto_lambda", {"meta_lr": -1}, "Auto-Lambda meta_lr must be > 0"),
    ("excess_mtl", {"robust_step_size": -1}, "ExcessMTL robust_step_size must be > 0"),
    ("nash_mtl", {"max_norm": -1}, "Nash-MTL max_norm must be >= 0"),
    ("stch", {"warmup_windows": -1}, "STCH warmup_windows must be >= 0"),
])  # fmt: skip
def test_out_of_range_parameters_are_refused(name, params, message):
    """Each was accepted silently (a negative FAMO step ascends its objective)."""
    with pytest.raises(ValueError, match=message):
        make_balancer(name, **params)
