"""Small exact solvers the gradient methods share (all in float64 on K × K problems).

Quadratic programs go to `quadprog` (Goldfarb–Idnani active set, exact up to rounding). A
missing solver is an error, never a silent fallback to another method.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

_RIDGE = 1e-10


def _quadprog() -> Any:
    try:
        import quadprog  # type: ignore[import-not-found]
    except ImportError as err:  # pragma: no cover - quadprog is a declared dependency
        raise ImportError(
            "this balancer solves a quadratic program with `quadprog`, which is not installed: "
            "pip install quadprog"
        ) from err
    return quadprog


def _as_numpy(gramian: Tensor) -> tuple[np.ndarray, float]:
    """G scaled to unit mean diagonal (and that scale), made positive definite: a Gramian of
    linearly dependent task gradients (duplicate or combined tasks, K > rank) is singular, and
    rounding can leave it slightly indefinite, which the QP solver refuses."""
    g = gramian.detach().double().cpu().numpy()
    k = len(g)
    scale = float(np.trace(g)) / k
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0
    g = (g + g.T) * (0.5 / scale)
    shift = _RIDGE
    try:  # one Cholesky settles the usual, well-conditioned case
        np.linalg.cholesky(g)
    except np.linalg.LinAlgError:
        lowest = float(np.linalg.eigvalsh(g)[0]) if np.isfinite(g).all() else 0.0
        shift += max(0.0, -lowest)
    g.flat[:: k + 1] += shift
    return g, scale


def _solve_qp(
    g: np.ndarray, linear: np.ndarray, constraints: np.ndarray, bounds: np.ndarray, meq: int
) -> np.ndarray:
    """min ½ xᵀgx − linearᵀx  s.t. constraintsᵀ x ≥ bounds (first `meq` as equalities)."""
    x: np.ndarray = _quadprog().solve_qp(g, linear, constraints, bounds, meq)[0]
    return x


def min_norm_simplex(gramian: Tensor, linear: Tensor | None = None) -> Tensor:
    """argmin over the simplex of ½ λᵀGλ + λᵀ linear (MGDA and its relatives)."""
    k = gramian.shape[0]
    g, scale = _as_numpy(gramian)
    lin = np.zeros(k) if linear is None else -linear.detach().double().cpu().numpy() / scale
    return torch.from_numpy(simplex_qp(g, lin)).to(gramian.device)


def simplex_qp(h: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """argmin over the simplex of ½ vᵀhv − linearᵀv for a positive definite h."""
    k = len(h)
    bounds = np.concatenate([[1.0], np.zeros(k)])
    return on_simplex(_solve_qp(h, linear, _simplex_constraints(k), bounds, meq=1))


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
    {d : J d ≥ 0} of directions that conflict with no task (UPGrad, DualProj)."""
    k = gramian.shape[0]
    g, _ = _as_numpy(gramian)
    u_np = u.detach().double().cpu().numpy().reshape(k, -1)
    out, solved = _dual_cone_active_set(g, u_np)
    zeros, identity = np.zeros(k), np.eye(k)
    for j in np.flatnonzero(~solved):  # the rare column whose active set did not settle
        out[:, j] = _solve_qp(g, zeros, identity, u_np[:, j], meq=0)
    out = np.maximum(out, u_np)
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


def solve_power_equation(gramian: Tensor, power: float, tol: float = 1e-24) -> Tensor:
    """The w > 0 with (G w)_i = w_i^(−power): Nash-MTL (power 1) and FairGrad (power 1/α).

    It is the unique minimiser of the strictly convex ½wᵀGw − Σ_i F(w_i) with F' = w^(−power),
    found by damped Newton steps that keep w positive.
    """
    g, scale = _as_numpy(gramian)
    k = len(g)
    w = np.full(k, 1.0 / np.sqrt(max(np.mean(g), 1e-12) * k))

    def objective(v: np.ndarray) -> float:
        prior = np.log(v) if power == 1 else v ** (1 - power) / (1 - power)
        return float(0.5 * v @ g @ v - prior.sum())

    for _ in range(200):
        grad = g @ w - w ** (-power)
        hess = g + np.diag(power * w ** (-power - 1))
        step = np.linalg.solve(hess, grad)
        if float(grad @ step) < tol:
            break
        t = 1.0
        while np.any(w - t * step <= 0):
            t *= 0.5
        f0 = objective(w)
        while objective(w - t * step) > f0 - 0.25 * t * float(grad @ step) and t > 1e-12:
            t *= 0.5
        if t <= 1e-12:  # at machine precision: no further decrease is measurable
            break
        w = w - t * step
    # undo the scaling: G = scale·g, so w_G = w_g · scale^(−1/(1+power))
    return torch.from_numpy(w * scale ** (-1.0 / (1.0 + power))).to(gramian.device)


def partner_orders(k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Task indices and, per task, a random order of all tasks (PCGrad-style surgery rounds)."""
    order = torch.argsort(torch.rand(k, k), dim=1).to(device)
    return torch.arange(k, device=device), order


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection onto the probability simplex (sort-based, exact)."""
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1
    idx = torch.arange(1, len(v) + 1, dtype=v.dtype, device=v.device)
    rho = int(torch.nonzero(u - css / idx > 0).max())
    theta = css[rho] / (rho + 1)
    return torch.clamp(v - theta, min=0)


def normalized(gramian: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Gramian of the unit-norm task gradients, and the norms."""
    norms = gramian.diagonal().clamp_min(0).sqrt()
    inv = 1 / norms.clamp_min(eps)
    return gramian * inv[:, None] * inv[None, :], norms
