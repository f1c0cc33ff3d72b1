"""The batched active-set dual-cone projection against quadprog, one QP per column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polytask.balancers._solvers import (
    _dual_cone_active_set,
    _normalised,
    _solve_qp,
    project_to_dual_cone,
)


def _conflicting_gramian(k: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    jac = rng.standard_normal((k, n))
    jac[: k // 2] -= 0.7 * jac[k // 2 : 2 * (k // 2)]  # half the tasks pull against the others
    return jac @ jac.T


def _quadprog_columns(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    k = len(g)
    return np.stack([_solve_qp(g, np.zeros(k), np.eye(k), col, meq=0) for col in u.T], axis=1)


@pytest.mark.parametrize(("k", "n", "seed"), [(6, 20, 0), (20, 50, 1), (60, 400, 2)])
def test_active_sets_match_quadprog_and_satisfy_kkt(k, n, seed):
    g, _, _ = _normalised(torch.from_numpy(_conflicting_gramian(k, n, seed)))
    u = np.eye(k) / k
    v, solved = _dual_cone_active_set(g, u)
    assert solved.all()
    np.testing.assert_allclose(v, _quadprog_columns(g, u), atol=1e-10)
    lam = g @ v
    free = v > u + 1e-12
    assert (v >= u - 1e-12).all() and (lam >= -1e-10).all()  # primal and dual feasible
    assert np.abs(lam[free]).max(initial=0) < 1e-10  # complementary slackness
    assert free.any()  # the data has conflicts, so some columns move off their bound


def test_rank_deficient_columns_fall_back_to_quadprog():
    rng = np.random.default_rng(3)
    jac = rng.standard_normal((12, 3))  # n < K: G is singular, active sets may cycle
    gramian = torch.from_numpy(jac @ jac.T)
    u = torch.eye(12, dtype=torch.float64) / 12
    g, s, _ = _normalised(gramian)  # solved on Ĝ = S⁻¹GS⁻¹ for y = S v, bounds S u
    _, solved = _dual_cone_active_set(g, s[:, None] * u.numpy(), max_iter=0)
    assert not solved.any()  # with no rounds nothing settles: quadprog solves every column
    out = project_to_dual_cone(gramian, u).numpy()
    diff = s[:, None] * out - _quadprog_columns(g, s[:, None] * u.numpy())
    # G is singular, so compare the projected gradients Jᵀv: ‖Jᵀ(v − v*)‖² = (S d)ᵀ Ĝ (S d)
    assert np.einsum("kc,kl,lc->c", diff, g, diff).max() < 1e-12 * s.mean() ** 2
    assert (gramian.numpy() @ out.sum(1) >= -1e-8 * np.abs(gramian.numpy()).max()).all()
