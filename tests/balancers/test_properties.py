"""Optimality conditions against SciPy, and the properties the methods claim."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from polytask.balancers import GradientInfo, make_balancer
from polytask.balancers._cagrad import cagrad_weights

DETERMINISTIC = [
    "mgda", "cagrad", "imtl_g", "nash_mtl", "fairgrad", "aligned_mtl", "upgrad", "dualproj",
    "config", "sdmgrad", "modo", "gradnorm", "imtl",
]  # fmt: skip


def _jac(k: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, n, generator=g, dtype=torch.float64) * torch.rand(k, 1, generator=g) * 3


def _coef(name: str, jac: torch.Tensor, **params) -> torch.Tensor:
    b = make_balancer(name, **params)
    b.setup([f"t{i}" for i in range(jac.shape[0])])
    losses = torch.ones(jac.shape[0], dtype=torch.float64)
    return b.coefficients(GradientInfo(losses, gramian=jac @ jac.T, jacobian=jac))


def _simplex_min(f, k):
    cons = [{"type": "eq", "fun": lambda w: w.sum() - 1}]
    best = min(
        (minimize(f, np.random.default_rng(s).dirichlet(np.ones(k)), method="SLSQP",
                  bounds=[(0, 1)] * k, constraints=cons, options={"ftol": 1e-15, "maxiter": 1000})
         for s in range(3)),
        key=lambda r: r.fun,
    )  # fmt: skip
    return best.fun


@pytest.mark.parametrize(("k", "n", "seed"), [(3, 6, 0), (5, 8, 1), (5, 3, 2)])
def test_mgda_is_the_min_norm_point(k, n, seed):
    jac = _jac(k, n, seed)
    g = (jac @ jac.T).numpy()
    lam = _coef("mgda", jac).numpy()
    assert lam.min() >= -1e-12 and abs(lam.sum() - 1) < 1e-9
    value = lam @ g @ lam
    assert value <= _simplex_min(lambda w: w @ g @ w, k) + 1e-8
    # KKT: (Gλ)_i ≥ λᵀGλ, with equality on the support
    grad = g @ lam
    assert (grad >= value - 1e-6 * max(1, value)).all()
    assert np.allclose(grad[lam > 1e-6], value, atol=1e-6 * max(1, value))


@pytest.mark.parametrize(("k", "n", "seed"), [(3, 6, 0), (5, 8, 1), (5, 3, 2)])
def test_upgrad_and_dualproj_solve_their_projections(k, n, seed):
    jac = _jac(k, n, seed)
    g = (jac @ jac.T).numpy()
    for name, prefs in (("upgrad", np.eye(k) / k), ("dualproj", np.full((k, 1), 1 / k))):
        c = _coef(name, jac).numpy()
        assert (g @ c >= -1e-8 * np.abs(g).max()).all()  # the update conflicts with no task
        total = np.zeros(k)
        for u in prefs.T:
            res = minimize(
                lambda v: v @ g @ v,
                u + 0.1,
                jac=lambda v: 2 * g @ v,
                method="L-BFGS-B",
                bounds=[(ui, None) for ui in u],
                options={"ftol": 1e-15, "gtol": 1e-12},
            )
            total += res.x
        assert total @ g @ total == pytest.approx(c @ g @ c, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize(("name", "power"), [("nash_mtl", 1.0), ("fairgrad", 0.5)])
@pytest.mark.parametrize(("k", "n", "seed"), [(3, 6, 0), (6, 10, 1)])
def test_power_equation_residual(name, power, k, n, seed):
    jac = _jac(k, n, seed)
    params = {"alpha": 1 / power} if name == "fairgrad" else {}
    w = _coef(name, jac, **params)
    g = jac @ jac.T
    if name == "nash_mtl":  # the authors' α (default) solves on G, and normalize on G / ‖G‖_F
        torch.testing.assert_close(g @ w, 1 / w, rtol=1e-7, atol=1e-9)
        w = _coef(name, jac, normalize=True)
        g = g / torch.linalg.matrix_norm(g)
    assert (w > 0).all()
    torch.testing.assert_close(g @ w, w ** (-power), rtol=1e-7, atol=1e-9)


def _cagrad_objective(g: np.ndarray, c: float):
    sqrt_phi = c * np.sqrt(max(g.mean(), 0.0))
    return lambda w: w @ g.mean(1) + sqrt_phi * np.sqrt(max(w @ g @ w, 1e-20))


@pytest.mark.parametrize(("k", "n", "seed"), [(3, 6, 0), (5, 8, 1)])
def test_cagrad_inner_problem_is_optimal(k, n, seed):
    jac = _jac(k, n, seed)
    g = (jac @ jac.T).numpy()
    f = _cagrad_objective(g, 0.5)
    w = cagrad_weights(torch.from_numpy(g), 0.5)
    assert f(w) <= _simplex_min(f, k) + 1e-8
    samples = np.random.default_rng(0).dirichlet(np.ones(k), size=2000)
    assert f(w) <= min(f(s) for s in samples) + 1e-12


def _cagrad_cases():
    rng = np.random.default_rng(7)
    one = rng.normal(size=(1, 6))
    cases = [rng.normal(size=(k, n)) for k in (2, 3, 8, 16) for n in (20, 100) for _ in range(2)]
    cases += [
        np.repeat(one, 4, axis=0),  # identical tasks: G of rank one
        np.vstack([one, -one]),  # opposite tasks: the optimum has g_w = 0, where f has a kink
        np.vstack([one, -one, 2 * one]),
        np.vstack([one, 1e-6 * one]),  # gradients of very different sizes
        rng.normal(size=(8, 3)),  # more tasks than parameters: G singular
        np.eye(3),
    ]
    return cases


@pytest.mark.parametrize("c", [0.1, 0.5, 1.0, 3.0])
def test_cagrad_newton_solver_matches_slsqp(c):
    """The Newton steps (with SLSQP finishing what they cannot certify) reach SciPy's general
    solver's optimum, started from the uniform weights, on regular and degenerate Gramians."""
    for i, jac in enumerate(_cagrad_cases()):
        g = jac @ jac.T
        f = _cagrad_objective(g, c)
        k = len(g)
        w = cagrad_weights(torch.from_numpy(g), c)
        assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12), i
        reference = minimize(
            f, np.full(k, 1.0 / k), method="SLSQP", bounds=[(0, 1)] * k,
            constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}],
            options={"ftol": 1e-15, "maxiter": 1000},
        ).fun  # fmt: skip
        assert f(w) <= reference + 1e-8 * max(1.0, abs(reference)), (i, f(w), reference)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_permutation_invariance(name):
    jac = _jac(4, 7, 3)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(_coef(name, jac[perm]), _coef(name, jac)[perm], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", [*DETERMINISTIC, "pcgrad", "gradvac", "krum", "metabalance"])
def test_identical_gradients_give_their_direction(name):
    g = _jac(1, 6, 4)
    jac = g.repeat(4, 1)
    params = {"n_byzantine": 1, "n_selected": 1} if name == "krum" else {}
    d = _coef(name, jac, **params) @ jac
    cosine = torch.nn.functional.cosine_similarity(d, g[0], dim=0)
    assert cosine == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", ["upgrad", "dualproj", "mgda", "nash_mtl", "fairgrad", "config"])
def test_no_conflict_with_any_task(name):
    for seed in range(5):
        jac = _jac(4, 9, seed)
        d = _coef(name, jac) @ jac
        assert (jac @ d >= -1e-8 * float(jac.abs().max()) ** 2).all(), seed


def test_scale_invariance_where_claimed():
    jac = _jac(3, 7, 5)
    scales = torch.tensor([[10.0], [0.1], [3.0]], dtype=torch.float64)
    # Nash-MTL on G itself (the default): α_k g_k unchanged when g_k is scaled; on G / ‖G‖_F
    # (normalize) up to one factor for every task, ‖G‖_F^½ of each
    a, b = (_coef("nash_mtl", j) for j in (jac, scales * jac))
    torch.testing.assert_close(a[:, None] * jac, b[:, None] * scales * jac)
    a2, b2 = (_coef("nash_mtl", j, normalize=True) for j in (jac, scales * jac))
    g1, g2 = jac @ jac.T, (scales * jac) @ (scales * jac).T
    factor = (torch.linalg.matrix_norm(g2) / torch.linalg.matrix_norm(g1)).sqrt()
    torch.testing.assert_close(b2[:, None] * scales * jac, factor * a2[:, None] * jac)
    # ConFIG and MGDA on unit gradients: the direction does not depend on the scales
    for name, params in (("config", {}), ("mgda", {"normalize": "l2"}), ("imtl_g", {})):
        d1 = _coef(name, jac, **params) @ jac
        d2 = _coef(name, scales * jac, **params) @ (scales * jac)
        cos = torch.nn.functional.cosine_similarity(d1, d2, dim=0)
        assert cos == pytest.approx(1.0, abs=1e-7), name


def test_pcgrad_output_never_conflicts_for_two_tasks():
    for seed in range(10):
        jac = _jac(2, 5, seed)
        d = _coef("pcgrad", jac) @ jac
        assert (jac @ d >= -1e-9).all()


def test_cagrad_newton_steps_certify_regular_problems(monkeypatch):
    """With independent task gradients the Newton steps settle the problem themselves; the
    general solver is only for singular or kinked cases (it is 2.5× slower at K = 2)."""
    import polytask.balancers._cagrad as cagrad

    def refuse(*args):
        raise AssertionError("fell back to SLSQP on a regular problem")

    monkeypatch.setattr(cagrad, "_general", refuse)
    rng = np.random.default_rng(3)
    for k in (2, 3, 8, 16):
        for c in (0.1, 0.5, 1.0):
            jac = rng.normal(size=(k, 64)) * rng.uniform(0.1, 3.0, size=(k, 1))
            w = cagrad.cagrad_weights(torch.from_numpy(jac @ jac.T), c)
            assert w.sum() == pytest.approx(1.0)


def test_imtl_g_gives_tasks_with_one_gradient_one_weight():
    # parallel gradients leave IMTL-G's system many solutions: the one nearest equal weights
    g, other = _jac(1, 6, 4), _jac(1, 6, 5)
    torch.testing.assert_close(_coef("imtl_g", g.repeat(3, 1)), torch.full((3,), 1 / 3).double())
    for jac in (torch.cat([g, g, other]), torch.cat([other, g, g]), torch.cat([g, other, g])):
        alpha = _coef("imtl_g", jac)
        same = [i for i in range(3) if torch.equal(jac[i], g[0])]
        assert alpha[same[0]] == pytest.approx(float(alpha[same[1]]), abs=1e-12)
        assert float(alpha.sum()) == pytest.approx(1.0, abs=1e-12)
        u = jac / jac.norm(dim=1, keepdim=True)
        projections = u @ (alpha @ jac)
        torch.testing.assert_close(projections, projections[:1].expand(3))


@pytest.mark.parametrize("name", ["excess_mtl", "moco"])
def test_float64_state_resumes_without_rounding(name):
    """ExcessMTL's loss weights and MoCo's λ are float32 after setup; loaded from a float64
    run's state they were rounded to float32 (7e-8 off), so a resumed run drifted."""
    import io

    def fresh():
        b = make_balancer(name)
        b.setup(["a", "b", "c"])
        return b

    first, seen = fresh(), []
    for seed in range(4):
        jac = _jac(3, 7, seed)
        seen.append((jac, torch.rand(3, dtype=torch.float64) + 0.5))
    for jac, losses in seen[:2]:
        first.aggregate(GradientInfo(losses, jacobian=jac))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = fresh()
    second.load_state_dict(torch.load(buffer))
    for jac, losses in seen[2:]:
        a = first.aggregate(GradientInfo(losses, jacobian=jac))
        b = second.aggregate(GradientInfo(losses, jacobian=jac))
        assert torch.equal(a, b)
