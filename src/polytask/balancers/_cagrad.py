"""Conflict-averse gradient descent, CAGrad (Liu et al., NeurIPS 2021).

With g0 the mean gradient and g_w = Jᵀw, CAGrad solves

    w* = argmin_{w ∈ Δ} g_wᵀ g0 + √φ ‖g_w‖,  φ = c² ‖g0‖²

and updates along d = (g0 + √φ / ‖g_w*‖ · g_w*) / (1 + c²) (the "rescale" of the paper's code).
The objective is convex in w and smooth where g_w ≠ 0; it is solved on the Gramian by Newton
steps whose quadratic models are minimised exactly over the simplex (`quadprog`), and the
result is accepted when its Frank-Wolfe gap proves it within 1e-9 of the optimum. SciPy's
SLSQP (2.5× slower at K = 2) finishes the rare problems the steps cannot certify.

d solves the primal problem max_d min_k g_kᵀd s.t. ‖d − g0‖ ≤ √φ, whose value t* is the
dual's minimum. Two cases leave the closed form: task gradients that (nearly) cancel, where
g_w* → 0 and its coefficients √φ w/‖g_w‖ blow up although d stays bounded; and norms spread
over more than three orders, where the dual's certificate (on G's overall scale) leaves the
small tasks' constraints unsettled. d is then the point of {d : g_kᵀd ≥ t*} nearest g0, solved
on the unit gradients' Gramian with t* refined to the primal value: the same d wherever the
closed form holds, the primal optimum nearest g0 where g_w* = 0 leaves several (then inside
the ball), and bounded coefficients.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import (
    _RIDGE,
    _normalised,
    _quadprog,
    on_simplex,
    simplex_step,
)

_MAX_STEPS = 50
_GAP = 1e-9
"""Accepted bound on f(w) − f(w*), relative to max(1, |f|)."""
_AMPLIFICATION = 1e3
"""Largest Σ_k w_k‖g_k‖ / ‖g_w‖ for the closed form: beyond it its coefficients cancel each other
(float32 loses their difference in Jᵀc), and d is found as a projection instead."""
_NORM_RATIO = 1e3
"""Largest ratio of the task gradients' norms for the closed form: beyond it the dual's
certificate (on G's overall scale) no longer settles the smallest tasks' constraints."""
_ROUNDS = 4
"""QPs at most in `_nearest_optimum` (the tight set settles after one or two)."""


def cagrad_coefficients(gramian: Tensor, c: float) -> np.ndarray:
    """The coefficients of CAGrad's rescaled update d / (1 + c²) on the task gradients."""
    g = gramian.detach().double().cpu().numpy()
    g = (g + g.T) * 0.5
    k = len(g)
    mean = np.full(k, 1.0 / k)
    radius = c * math.sqrt(max(float(g.mean()), 0.0))  # √φ = c‖g0‖
    if radius == 0.0:  # d = g0
        return mean / (1 + c**2)
    if k == 1:  # g_w = g0: d = g0 + c‖g0‖ g0 / ‖g0‖ = (1 + c) g0
        return np.array([(1 + c) / (1 + c**2)])
    w = cagrad_weights(gramian, c)
    norms = np.sqrt(np.clip(np.diagonal(g), 0.0, None))
    gw_norm = math.sqrt(max(float(w @ g @ w), 0.0))
    spread = float(w @ norms)  # Σ_k w_k‖g_k‖
    sound = spread <= _AMPLIFICATION * gw_norm  # the closed form's coefficients do not cancel
    if sound and norms.max() <= _NORM_RATIO * norms.min():
        return (mean + radius / gw_norm * w) / (1 + c**2)
    level = float(w @ g @ mean) + radius * gw_norm  # f(w) ≥ t*, the primal value
    unit, s, ridged = _normalised(gramian)
    if gw_norm <= math.sqrt(_RIDGE) * spread:  # 0 in the hull (to the ridge): t* = 0
        v = _nearest_optimum(unit, s, radius, min(level, 0.0), refine=False)
    elif ridged and sound:  # dependent tasks: refining t* needs Ĝ without the ridge
        v = mean + radius / gw_norm * w
    else:
        v = _nearest_optimum(unit, s, radius, level, refine=not ridged)
    return v / (1 + c**2)


def _nearest_optimum(
    g: np.ndarray, s: np.ndarray, radius: float, level: float, refine: bool
) -> np.ndarray:
    """v with Jᵀv the point of {d : g_kᵀd ≥ t*} nearest g0, i.e. v = argmin ½vᵀGv − t*·1ᵀv
    s.t. v ≥ 1/K, solved on Ĝ = `g` for y = S v (exact at any spread of the norms s).

    t* starts at `level`; with `refine` it is refined to the exact primal value: on the set A
    of the tasks whose constraints are tight, d − g0 = J_Aᵀμ_A with ‖d − g0‖ = √φ is a
    quadratic equation in t (its larger root), repeated until A settles."""
    k = len(g)
    low, inv = s / k, 1.0 / s  # y ≥ S·1/K;  g_kᵀd = t ⇔ (Ĝy)_k = t/s_k
    base = g @ low
    free = np.zeros(k, dtype=bool)
    for attempt in range(_ROUNDS):  # each round ends with y solved at the current level
        y, _f, _u, _it, _lag, act = _quadprog().solve_qp(g, level * inv, np.eye(k), low, 0)
        now = np.ones(k, dtype=bool)
        now[act[act > 0] - 1] = False  # bounds the solver kept active: μ_k = 0
        if not refine or not now.any() or (now == free).all() or attempt == _ROUNDS - 1:
            break
        free = now
        p, q = np.linalg.solve(g[np.ix_(free, free)], np.stack([inv[free], base[free]], axis=1)).T
        alpha, beta = float(inv[free] @ p), float(inv[free] @ q)
        disc = beta**2 - alpha * (float(base[free] @ q) - radius**2)
        if disc < 0:
            break
        level = (beta + math.sqrt(disc)) / alpha
    return np.maximum(y, low) / s


def cagrad_weights(gramian: Tensor, c: float) -> np.ndarray:
    """The inner problem's minimiser w* on the simplex."""
    g = gramian.detach().double().cpu().numpy()
    k = len(g)
    scale = float(np.trace(g)) / k
    if not math.isfinite(scale) or scale <= 0:
        return np.full(k, 1.0 / k)  # every task gradient is zero: any w gives the same update
    g = (g + g.T) * (0.5 / scale)  # the minimiser does not change with the scale of G
    mean_g = g.mean(1)  # G (1/K): g_mᵀ g0 for each task m
    sqrt_phi = c * math.sqrt(max(float(mean_g.mean()), 0.0))
    if k == 1:
        return np.ones(1)
    if sqrt_phi == 0.0:  # a linear objective: the best vertex
        return np.eye(k)[int(np.argmin(mean_g))]
    w = np.full(k, 1.0 / k)
    value = _objective(g, mean_g, sqrt_phi, w)
    for _ in range(_MAX_STEPS):
        local = _gradient(g, mean_g, sqrt_phi, w)
        if local is None:
            break
        grad, gw, squared = local
        # Hessian of √φ‖g_w‖: (√φ/‖g_w‖)(G − (Gw)(Gw)ᵀ/‖g_w‖²), flat along w (off the simplex)
        hess = (sqrt_phi / math.sqrt(squared)) * (g - np.outer(gw, gw) / squared)
        step = simplex_step(hess, grad, w)
        decrease = -float(grad @ step)
        trial = _objective(g, mean_g, sqrt_phi, w + step)
        if decrease <= 1e-15 * max(1.0, abs(value)):  # converged: keep the last full step
            if trial <= value:
                w = on_simplex(w + step)
            break
        t = 1.0
        while trial > value - 1e-4 * t * decrease and t > 1e-10:
            t *= 0.5
            trial = _objective(g, mean_g, sqrt_phi, w + t * step)
        if trial >= value:
            break
        w = on_simplex(w + t * step)
        value = trial
    local = _gradient(g, mean_g, sqrt_phi, w)
    if local is not None and float(local[0] @ w - local[0].min()) <= _GAP * max(1.0, abs(value)):
        return w  # the Frank-Wolfe gap bounds f(w) − f(w*)
    return _general(g, mean_g, sqrt_phi, w)


def _gradient(
    g: np.ndarray, mean_g: np.ndarray, sqrt_phi: float, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """∇f(w) with Gw and ‖g_w‖², or None at g_w = 0 where the norm is not differentiable."""
    gw = g @ w
    squared = float(w @ gw)
    if squared <= 1e-24:
        return None
    return mean_g + sqrt_phi * gw / math.sqrt(squared), gw, squared


def _general(g: np.ndarray, mean_g: np.ndarray, sqrt_phi: float, start: np.ndarray) -> np.ndarray:
    """SciPy's SLSQP from `start` and from the uniform weights (the best point found), for
    what Newton steps cannot certify: a singular G (more tasks than independent gradients) or
    an optimum at g_w = 0, where f is not smooth."""
    k = len(g)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        gw_sq = max(float(w @ g @ w), 1e-20)
        return _objective(g, mean_g, sqrt_phi, w), mean_g + sqrt_phi * (g @ w) / np.sqrt(gw_sq)

    found = [start]
    for x0 in (start, np.full(k, 1.0 / k)):
        res = minimize(
            objective,
            x0,
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(k)}],
            options={"ftol": 1e-14, "maxiter": 500},
        )
        found.append(on_simplex(res.x))
    best: np.ndarray = min(found, key=lambda w: _objective(g, mean_g, sqrt_phi, w))
    return best


def _objective(g: np.ndarray, mean_g: np.ndarray, sqrt_phi: float, w: np.ndarray) -> float:
    return float(w @ mean_g) + sqrt_phi * math.sqrt(max(float(w @ g @ w), 0.0))


class CAGrad(GramianBalancer):
    """c (the paper's c, LibMTL's `calpha`) sets how far d may move from g0."""

    def __init__(self, c: float = 0.5) -> None:
        super().__init__()
        if c < 0:
            raise ValueError(f"CAGrad c must be >= 0, got {c}")
        self.c = c

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        return torch.from_numpy(cagrad_coefficients(g, self.c)).to(g)
