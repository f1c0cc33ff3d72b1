"""Small exact solvers the gradient methods share (all in float64 on K × K problems).

Quadratic programs go to `quadprog` (Goldfarb–Idnani active set, exact up to rounding). A
missing solver is an error, never a silent fallback to another method. Every problem is solved
on the Gramian of the unit task gradients (`_normalised`) and mapped back, so that tasks whose
gradients differ by orders of magnitude get their exact solution too.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

_RIDGE = 1e-10
"""Added to the unit diagonal of the normalised Gramian (so relative to each task's own scale)
when it is singular or nearly so: (nearly) dependent tasks then get bounded coefficients."""
_WELL_POSED = 1e-8
"""Smallest squared Cholesky pivot of the normalised Gramian that is solved without the ridge."""


def _quadprog() -> Any:
    try:
        import quadprog  # type: ignore[import-not-found]
    except ImportError as err:  # pragma: no cover - quadprog is a declared dependency
        raise ImportError(
            "this balancer solves a quadratic program with `quadprog`, which is not installed: "
            "pip install quadprog"
        ) from err
    return quadprog


def _normalised(gramian: Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    """Ĝ = S⁻¹GS⁻¹ with S = diag(s), s_k = ‖g_k‖ (1 for a zero gradient), made positive
    definite by the ridge where it is (nearly) singular, s, and whether the ridge was added.

    Every problem here is solved on Ĝ, whose unit diagonal puts all tasks on one scale:
    substituting v = S⁻¹y keeps each solution exact, while a ridge or tolerance on G itself
    swamps the rows of tasks whose gradients are orders of magnitude smaller than the others'.
    A Gramian of linearly dependent task gradients (duplicate or combined tasks, K > rank) is
    singular, and rounding can leave it slightly indefinite, which the QP solver refuses."""
    g = gramian.detach().double().cpu().numpy()
    if not np.isfinite(g).all():
        bad = [i for i, row in enumerate(np.isfinite(g).all(axis=1)) if not row]
        raise FloatingPointError(
            f"the Gramian has non-finite entries in the rows of tasks {bad}: a task loss or "
            "gradient is NaN or infinite (polytask.gradients.backward names the task)"
        )
    k = len(g)
    diag = np.diagonal(g)
    s = np.sqrt(np.where(diag > 0, diag, 1.0))
    g = (g + g.T) * 0.5 / s[:, None] / s[None, :]
    try:  # one Cholesky settles the usual, well-conditioned case, which is solved as it is
        pivots = np.diagonal(np.linalg.cholesky(g))
        shift = 0.0 if float(pivots.min()) ** 2 > _WELL_POSED else _RIDGE
    except np.linalg.LinAlgError:
        shift = _RIDGE + max(0.0, -float(np.linalg.eigvalsh(g)[0]))
    g.flat[:: k + 1] += shift
    return g, s, shift > 0


def _solve_qp(
    g: np.ndarray, linear: np.ndarray, constraints: np.ndarray, bounds: np.ndarray, meq: int
) -> np.ndarray:
    """min ½ xᵀgx − linearᵀx  s.t. constraintsᵀ x ≥ bounds (first `meq` as equalities)."""
    x: np.ndarray = _quadprog().solve_qp(g, linear, constraints, bounds, meq)[0]
    return x


def min_norm_simplex(gramian: Tensor, linear: Tensor | None = None) -> Tensor:
    """argmin over the simplex of ½ λᵀGλ + λᵀ linear (MGDA and its relatives).

    Solved on Ĝ for y = S λ / min(s), where the simplex reads Σ_k (min(s)/s_k) y_k = 1, y ≥ 0:
    the same problem, with every task's row at unit scale."""
    k = gramian.shape[0]
    g, s, _ = _normalised(gramian)
    low = float(s.min())
    weights = low / s
    lin = np.zeros(k) if linear is None else linear.detach().double().cpu().numpy() / (s * low)
    constraints = np.concatenate([weights[:, None], np.eye(k)], axis=1)
    bounds = np.concatenate([[1.0], np.zeros(k)])
    y = _solve_qp(g, -lin, constraints, bounds, meq=1)
    return torch.from_numpy(on_simplex(y * weights)).to(gramian.device)


def on_simplex(v: np.ndarray) -> np.ndarray:
    """A point a solver left on the simplex up to rounding: tiny negatives cut, sum made 1."""
    v = np.clip(v, 0.0, None)
    return v / v.sum()


@functools.lru_cache(maxsize=16)
def _simplex_constraints(k: int) -> np.ndarray:
    """[1 | I] (K, K + 1): Σv = 1 (or Σd = 0) and v ≥ bounds, as `quadprog` takes them (it
    does not write to its inputs, so the array is shared; it refuses read-only arrays)."""
    return np.concatenate([np.ones((k, 1)), np.eye(k)], axis=1)


def simplex_step(h: np.ndarray, grad: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The step d minimising gradᵀd + ½ dᵀhd with w + d on the simplex (a Newton step there);
    h is positive semi-definite. Adding ρ·11ᵀ changes nothing where 1ᵀd = 0 but makes h
    definite along directions that leave the simplex's plane (a Hessian flat along w, as that
    of a norm is), which keeps the solve well conditioned; a ridge covers the rest."""
    k = len(h)
    level = max(float(np.trace(h)) / k, 1.0)
    plane = h + level
    constraints, eye = _simplex_constraints(k), np.eye(k)
    bounds = np.concatenate([[0.0], -w])
    for ridge in (1e-8, 1e-6, 1e-4):  # rounding can leave h's flat directions below zero
        try:
            return _solve_qp(plane + ridge * level * eye, -grad, constraints, bounds, 1)
        except ValueError as err:
            if "inconsistent" in str(err):  # d = 0 is feasible: h too ill-conditioned to solve
                break
            if "positive definite" not in str(err):
                raise
    return np.zeros(k)  # no well-posed model: stay (the caller's convergence test stops)


def project_to_dual_cone(gramian: Tensor, u: Tensor) -> Tensor:
    """For each column u_j: argmin_v vᵀGv s.t. v ≥ u_j, i.e. Jᵀu_j projected onto the cone
    {d : J d ≥ 0} of directions that conflict with no task (UPGrad, DualProj).

    Solved on Ĝ for y = S v (min yᵀĜy s.t. y ≥ S u_j), each column scaled to unit size (the
    problem is homogeneous in u_j), so the active-set tolerances are relative."""
    k = gramian.shape[0]
    g, s, _ = _normalised(gramian)
    bound = s[:, None] * u.detach().double().cpu().numpy().reshape(k, -1)
    size = np.abs(bound).max(axis=0)
    size[size == 0] = 1.0
    bound /= size
    out, solved = _dual_cone_active_set(g, bound)
    zeros, identity = np.zeros(k), np.eye(k)
    for j in np.flatnonzero(~solved):  # the rare column whose active set did not settle
        out[:, j] = _solve_qp(g, zeros, identity, bound[:, j], meq=0)
    out = np.maximum(out, bound) * size / s[:, None]
    return torch.from_numpy(out).to(gramian.device).reshape(u.shape)


def _dual_cone_active_set(
    g: np.ndarray, u: np.ndarray, max_iter: int = 30, tol: float = 1e-13
) -> tuple[np.ndarray, np.ndarray]:
    """All columns of min_v ½vᵀgv s.t. v ≥ u at once, by primal-dual active sets.

    Each round fixes v_i = u_i on the active set A and solves g_II v_I = −g_IA u_A on the rest
    (batched over the unsettled columns with as many free entries), then moves i into A where
    λ_i + (u_i − v_i) > 0 with λ = g v (Hintermüller, Ito & Kunisch, SIAM J. Optim. 2002). A
    column whose A repeats satisfies the KKT conditions exactly (v_A = u_A with λ_A > 0,
    λ_I = 0 with v_I ≥ u_I); the columns that have not settled after `max_iter` rounds are
    reported, for an exact QP solver to finish.
    """
    m = u.shape[1]
    out = u.copy()
    solved = np.zeros(m, dtype=bool)
    active = (g @ u).T > 0  # (m, K): start from v = u, keeping the constraints that push back
    cols = np.arange(m)
    for _ in range(max_iter):
        a = active[cols]
        v = np.where(a, u[:, cols].T, 0.0)  # (c, K): u on A, the free entries filled below
        free = (~a).sum(axis=1)
        try:
            for size in np.unique(free[free > 0]):
                rows = np.flatnonzero(free == size)
                idx = np.nonzero(~a[rows])[1].reshape(len(rows), size)
                lhs = g[idx[:, :, None], idx[:, None, :]]
                rhs = -np.einsum("rsk,rk->rs", g[idx], v[rows])
                v[rows[:, None], idx] = np.linalg.solve(lhs, rhs[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            break
        lam = v @ g
        nxt = lam + (u[:, cols].T - v) > tol
        settled = (nxt == a).all(axis=1)
        out[:, cols[settled]] = v[settled].T
        solved[cols[settled]] = True
        active[cols] = nxt
        cols = cols[~settled]
        if len(cols) == 0:
            break
    return out, solved


_NEWTON_STEPS = 1000
"""Most damped Newton steps `solve_power_equation` takes (a few dozen are usual)."""
_RESIDUAL = 1e-6
"""Largest relative residual of the power equation taken as solved."""


def solve_power_equation(gramian: Tensor, power: float, tol: float = 1e-24) -> Tensor:
    """The w > 0 with (G w)_i = w_i^(−power): Nash-MTL (power 1) and FairGrad (power 1/α).

    With w = S⁻¹y it reads (Ĝy)_i = c_i y_i^(−power), c_i = s_i^(power − 1) (all 1 for
    Nash-MTL, which is scale-invariant): the unique minimiser of the strictly convex
    ½yᵀĜy − Σ_i c_i F(y_i) with F' = y^(−power), found by damped Newton steps that keep y
    positive. c is divided by its geometric mean m first (then y = m^(1/(1+power)) ŷ).
    """
    g, s, _ = _normalised(gramian)
    k = len(g)
    log_c = (power - 1.0) * np.log(s)
    log_m = float(log_c.mean())
    c = np.exp(log_c - log_m)
    y = (c / max(float(np.mean(g)) * k, 1e-12)) ** (1.0 / (1.0 + power))

    def objective(v: np.ndarray) -> float:
        prior = np.log(v) if power == 1 else v ** (1 - power) / (1 - power)
        return float(0.5 * v @ g @ v - c @ prior)

    # steps halve where they would leave y > 0, so a weight that belongs near 1e-270 (FairGrad
    # at α of 20 and more, with gradient norms spread 100-fold) takes hundreds of them
    for _ in range(_NEWTON_STEPS):
        grad = g @ y - c * y ** (-power)
        hess = g + np.diag(power * c * y ** (-power - 1))
        step = np.linalg.solve(hess, grad)
        if float(grad @ step) < tol:
            break
        t = 1.0
        while np.any(y - t * step <= 0):
            t *= 0.5
        f0 = objective(y)
        while objective(y - t * step) > f0 - 0.25 * t * float(grad @ step) and t > 1e-12:
            t *= 0.5
        if t <= 1e-12:  # at machine precision: no further decrease is measurable
            break
        y = y - t * step
    residual = float(np.abs(g @ y * y**power / c - 1).max())
    if not residual <= _RESIDUAL:
        warnings.warn(
            f"the power equation (G w)_i = w_i^(-{power:.3g}) is solved only to a relative "
            f"residual of {residual:.2g} ({_NEWTON_STEPS} Newton steps at most): the weights "
            "are approximate. FairGrad's alpha far above 1 drives some weights towards zero; "
            "a smaller alpha is solved exactly",
            RuntimeWarning,
            stacklevel=3,
        )
    w = y * np.exp(log_m / (1.0 + power)) / s
    return torch.from_numpy(w).to(gramian.device)


def partner_orders(k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Task indices and, per task, a random order of all tasks (PCGrad-style surgery rounds)."""
    order = torch.argsort(torch.rand(k, k), dim=1).to(device)
    return torch.arange(k, device=device), order


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection onto the probability simplex (sort-based, exact).

    Adding a constant to v does not change its projection, so v − max(v) is projected: the
    top entry always passes the sort's test, and the test's prefix is read up to its first
    failure, which a sum overflowing to −inf cannot fake. +inf entries share the mass equally
    (the limit); NaN is refused, naming the input."""
    if bool(torch.isnan(v).any()):
        raise FloatingPointError(
            f"project_simplex got NaN in {v.tolist()[:8]}: the weights' step is not finite "
            "(is a task gradient NaN or infinite?)"
        )
    top = v.max()
    if bool(torch.isinf(top)):  # +inf entries take all the mass; all −inf: no preference
        hit = v == top if top > 0 else torch.ones_like(v, dtype=torch.bool)
        return hit.to(v.dtype) / hit.sum()
    u, _ = torch.sort(v - top, descending=True)
    css = torch.cumsum(u, 0) - 1
    idx = torch.arange(1, len(v) + 1, dtype=v.dtype, device=v.device)
    passed = (u - css / idx > 0).to(torch.int64).cumprod(0)  # the prefix that passes
    rho = int(passed.sum()) - 1
    theta = css[rho] / (rho + 1)
    return torch.clamp(v - top - theta, min=0)


def normalized(gramian: Tensor) -> tuple[Tensor, Tensor]:
    """Gramian of the unit-norm task gradients (a zero gradient's row stays zero), and the
    norms; no absolute floor, so tiny but nonzero gradients are normalised exactly too."""
    norms = gramian.diagonal().clamp_min(0).sqrt()
    inv = inverse_norms(norms)
    return gramian * inv[:, None] * inv[None, :], norms


def inverse_norms(norms: Tensor) -> Tensor:
    """1 / norms, with 0 for a zero norm (a zero gradient has no direction to rescale)."""
    return torch.where(norms > 0, 1 / norms, torch.zeros_like(norms))
