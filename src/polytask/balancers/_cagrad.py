"""Conflict-averse gradient descent, CAGrad (Liu et al., NeurIPS 2021).

With g0 the mean gradient and g_w = Jᵀw, CAGrad solves

    w* = argmin_{w ∈ Δ} g_wᵀ g0 + √φ ‖g_w‖,  φ = c² ‖g0‖²

and updates along d = (g0 + √φ / ‖g_w*‖ · g_w*) / (1 + c²) (the "rescale" of the paper's code).
The objective is convex in w and smooth where g_w ≠ 0; it is solved on the Gramian by Newton
steps whose quadratic models are minimised exactly over the simplex (`quadprog`), and the
result is accepted when its Frank-Wolfe gap proves it within 1e-9 of the optimum. SciPy's
SLSQP (2.5× slower at K = 2) finishes the rare problems the steps cannot certify.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer
from polytask.balancers._solvers import on_simplex, simplex_step

_MAX_STEPS = 50
_GAP = 1e-9
"""Accepted bound on f(w) − f(w*), relative to max(1, |f|)."""


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
        k = g.shape[0]
        w = torch.from_numpy(cagrad_weights(g, self.c)).to(g)
        g0_norm = g.mean().clamp_min(0).sqrt()
        gw_norm = (w @ g @ w).clamp_min(1e-20).sqrt()
        coef = torch.full((k,), 1.0 / k, dtype=g.dtype, device=g.device)
        coef = coef + self.c * g0_norm / gw_norm * w
        return coef / (1 + self.c**2)
