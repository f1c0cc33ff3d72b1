"""Golden values: each method on small fixed Jacobians / losses, worked out by hand from the
paper's formula (the derivation is in the comment next to each row)."""

from __future__ import annotations

import math

import pytest
import torch

from polytask.balancers import GradientInfo, make_balancer

TASKS = ["a", "b"]
ORTHO = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # g_a = (1, 0), g_b = (0, 2)
CONFLICT = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # g_a · g_b = −1
SKEW = torch.tensor([[2.0, 1.0], [0.0, 1.0]])  # G = [[5, 1], [1, 1]]: aligned, unequal norms
LOSSES = torch.tensor([1.0, 4.0])
R2 = math.sqrt(2)
ALIGNED = math.sqrt(10 * (3 - math.sqrt(5)))  # √λ_min(G) · √10 for G = [[5, 1], [1, 1]]


def _setup(name, **params):
    b = make_balancer(name, **params)
    b.setup(TASKS[:2])
    return b


def _coef(name, jac, losses=LOSSES, **params):
    info = GradientInfo(losses, gramian=(jac @ jac.T).double(), jacobian=jac)
    return _setup(name, **params).coefficients(info)


GRAMIAN_GOLDEN = [
    # MGDA: min λ1² + 4λ2² on the simplex → λ2 = 1/5
    ("mgda", ORTHO, {}, [0.8, 0.2]),
    # MGDA with unit-normalised gradients: λ = (1/2, 1/2) on units → c = (1/2, 1/4)
    ("mgda", ORTHO, {"normalize": "l2"}, [0.5, 0.25]),
    # PCGrad: g_a' = g_a + ½ g_b, g_b' = g_b + g_a → c = (2, 1.5)
    ("pcgrad", CONFLICT, {}, [2.0, 1.5]),
    # GradVac with target cosine 0 on the first step is PCGrad
    ("gradvac", CONFLICT, {}, [2.0, 1.5]),
    # IMTL-G: equal projections α1 = 2α2, α1 + α2 = 1
    ("imtl_g", ORTHO, {}, [2 / 3, 1 / 3]),
    # Nash-MTL (the default, as the authors' code): G = diag(1, 4), α_i = 1/√G_ii
    ("nash_mtl", ORTHO, {}, [1.0, 0.5]),
    # normalize: solved on G / ‖G‖_F: G = diag(1, 4), ‖G‖_F = √17, α = 17^¼ (1, ½)
    ("nash_mtl", ORTHO, {"normalize": True}, [17**0.25, 17**0.25 / 2]),
    # FairGrad α = 2: w_i G_ii = w_i^(−1/2) → w_i = G_ii^(−2/3)
    ("fairgrad", ORTHO, {"alpha": 2.0}, [1.0, 4 ** (-2 / 3)]),
    # Aligned-MTL: B = σ_min G^(−1/2) = diag(1, 1/2), c = B 1
    ("aligned_mtl", ORTHO, {}, [1.0, 0.5]),
    # ConFIG: ĝ ∝ u_a + u_b, magnitude (1 + 2)/√2 along (1, 1)/√2 → update (1.5, 1.5)
    ("config", ORTHO, {}, [1.5, 0.75]),
    # UPGrad: no conflict → projections are the identity, c = 1/K
    ("upgrad", ORTHO, {}, [0.5, 0.5]),
    # UPGrad, conflict (G = [[1, −1], [−1, 2]]): see test_upgrad_conflict_derivation
    ("upgrad", CONFLICT, {}, [1.0, 0.75]),
    # DualProj: mean (1/2)(g_a + g_b) = (0, 1/2) has g_a·d = 0 ≥ 0 → unchanged
    ("dualproj", CONFLICT, {}, [0.5, 0.5]),
    # SDMGrad with λ = 0 is MGDA
    ("sdmgrad", ORTHO, {"lam": 0.0}, [0.8, 0.2]),
    # MoDo one step from (1/2, 1/2): (0.45, 0.3) projected onto the simplex
    ("modo", ORTHO, {"gamma": 0.1, "rho": 0.0}, [0.575, 0.425]),
    # MetaBalance: aux norm 2 vs main 1, r = 0.7 → 0.7·½ + 0.3
    ("metabalance", ORTHO, {}, [1.0, 0.65]),
    # GradNorm returns its current weights (all 1 at the start)
    ("gradnorm", ORTHO, {}, [1.0, 1.0]),
    # CAGrad with c = 0 is the mean gradient
    ("cagrad", ORTHO, {"c": 0.0}, [0.5, 0.5]),
    # PCGrad and GradVac (target 0): g_a · g_b = 1 > 0, nothing is projected
    ("pcgrad", SKEW, {}, [1.0, 1.0]),
    ("gradvac", SKEW, {}, [1.0, 1.0]),
    # IMTL-G on G = [[1, −1], [−1, 2]]: (α1 − α2)/1 = (2α2 − α1)/√2 with α1 + α2 = 1
    # → α1 = (2 + √2)/(3 + 2√2) = 2 − √2
    ("imtl_g", CONFLICT, {}, [2 - R2, R2 - 1]),
    # Aligned-MTL on G = [[5, 1], [1, 1]]: λ = 3 ± √5, √G = (G + 2I)/√10, so
    # G^(−½) 1 = √10 (0.1, 0.3) and c = √λ_min · G^(−½) 1 = √(10(3 − √5)) (0.1, 0.3)
    ("aligned_mtl", SKEW, {}, [0.1 * ALIGNED, 0.3 * ALIGNED]),
    # ConFIG on CONFLICT: units (1, 0), (−1, 1)/√2; d with u_k·d = 1 is (1, 1 + √2), ‖d‖² = 4 + 2√2;
    # update = (Σ g_k·d̂) d̂ = d/(2√2) = Jᵀc → c = ((√2 + 1)/2, (√2 + 2)/4)
    ("config", CONFLICT, {}, [(R2 + 1) / 2, (R2 + 2) / 4]),
    # MetaBalance on SKEW: ‖g_main‖ = √5, ‖g_aux‖ = 1 → 0.7·√5 + 0.3
    ("metabalance", SKEW, {}, [1.0, 0.7 * 5**0.5 + 0.3]),
    # SDMGrad λ = 0.3 on CONFLICT: min ½wᵀGw + 0.3 wᵀ(G1/2) on the simplex: ½(1 − 4w2 + 5w2²)
    # + 0.15 w2 → w = (0.63, 0.37); c = (w + 0.3/2)/1.3 = (0.6, 0.4)
    ("sdmgrad", CONFLICT, {"lam": 0.3}, [0.6, 0.4]),
    # MoDo on CONFLICT: Gλ = (0, ½); (½, 0.45) projected onto the simplex → (0.525, 0.475)
    ("modo", CONFLICT, {"gamma": 0.1, "rho": 0.0}, [0.525, 0.475]),
]


@pytest.mark.parametrize(("name", "jac", "params", "expected"), GRAMIAN_GOLDEN)
def test_gramian_golden(name, jac, params, expected):
    c = _coef(name, jac, **params)
    torch.testing.assert_close(c, torch.tensor(expected, dtype=torch.float64), atol=1e-5, rtol=0)


def test_upgrad_conflict_derivation():
    """G = [[1, −1], [−1, 2]]. QP 1, v ≥ (½, 0): at v_a = ½, ∂/∂v_b (v_a² − 2v_a v_b + 2v_b²)
    = 0 gives v_b = ¼, and (Gv)_a = ¼ > 0 keeps v_a on its bound: v = (½, ¼). QP 2, v ≥ (0, ½):
    ∂/∂v_a = 0 gives v_a = v_b = ½, and (Gv)_b = ½ > 0 keeps v_b on its bound: v = (½, ½).
    Sum: c = (1, ¾), and G c = (¼, ½) ≥ 0: no task conflicts with the update."""
    c = _coef("upgrad", CONFLICT)
    g = (CONFLICT @ CONFLICT.T).double()
    torch.testing.assert_close(g @ c, torch.tensor([0.25, 0.5], dtype=torch.float64))


def test_gradnorm_sets_the_closed_form_weight_gradient():
    b = _setup("gradnorm")
    b.coefficients(GradientInfo(LOSSES, gramian=(ORTHO @ ORTHO.T).double()))
    # norms (1, 2), weighted (1, 2), target mean 1.5 · ratio^α = 1.5 → grad sign(·)·norm
    torch.testing.assert_close(b.loss_scale.grad, torch.tensor([-1.0, 2.0]))


def test_gradnorm_steps_and_renormalises_the_weights_as_the_paper():
    """Found by an outside review: the optimizer stepped a parameter only ever rescaled where
    it was read, so the step on w was K / Σw times the paper's, and drifted (3 tasks, SGD lr
    0.01, 60 steps: weights (0.239, 0.823, 1.938) against the paper's (0.257, 0.977, 1.766)).
    Paper: w ← w − lr ∂/∂w Σ_k |w_k‖g_k‖ − target_k|, then w ← K w / Σw, every step."""
    g = torch.Generator().manual_seed(0)
    jac = torch.randn(3, 6, generator=g, dtype=torch.float64) * torch.tensor([[0.5], [1], [3]])
    b = make_balancer("gradnorm")
    b.setup(["a", "b", "c"])
    opt = torch.optim.SGD(b.parameters(), lr=0.01)
    w = torch.ones(3, dtype=torch.float64)
    initial = None
    for step in range(60):
        losses = (
            torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64) * (0.99 ** torch.arange(3)) ** step
        )
        opt.zero_grad()
        b.coefficients(GradientInfo(losses, gramian=jac @ jac.T))
        opt.step()
        initial = losses if initial is None else initial
        norms = jac.norm(dim=1)
        ratio = (losses / initial) / (losses / initial).mean()
        target = (w * norms).mean() * ratio**1.5
        w = w - 0.01 * torch.sign(w * norms - target) * norms
        w = 3 * w / w.sum()
    torch.testing.assert_close(b.current_weights(), w, atol=1e-5, rtol=0)
    assert float((w - 1).abs().max()) > 0.3  # the weights did move


def test_gradvac_updates_its_target_cosines():
    b = _setup("gradvac", beta=0.5)
    b.coefficients(GradientInfo(LOSSES, gramian=(CONFLICT @ CONFLICT.T).double()))
    assert b.targets[0, 1] == pytest.approx(0.5 * (-1 / R2))


def test_krum_averages_the_clustered_gradients():
    jac = torch.tensor([[1.0, 0.0], [1.2, 0.0], [0.9, 0.0], [10.0, 10.0]])
    b = make_balancer("krum", n_byzantine=1, n_selected=2)
    b.setup(list("abcd"))
    c = b.coefficients(GradientInfo(LOSSES, gramian=(jac @ jac.T).double()))
    torch.testing.assert_close(c, torch.tensor([0.5, 0.0, 0.5, 0.0], dtype=torch.float64))
    # Scores: squared distance to the n − f − 2 = 1 nearest other row: (1, 1, 4, 164);
    # the two lowest, rows 0 and 1, are averaged.
    jac = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [10.0, 10.0]])
    c = b.coefficients(GradientInfo(LOSSES, gramian=(jac @ jac.T).double()))
    torch.testing.assert_close(c, torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64))


JACOBIAN_GOLDEN = [
    # trimmed mean, trim 1: columns sorted [1,2,3,100] → 2.5; [−1,0,2,5] → 1
    ("trimmed_mean", torch.tensor([[1.0, 5.0], [2.0, -1.0], [3.0, 0.0], [100.0, 2.0]]), [2.5, 1.0]),
    # trimmed mean of three: the median of each column, [1, 2, 4] → 2 and [−2, 0, 7] → 0
    ("trimmed_mean", torch.tensor([[1.0, -2.0], [4.0, 0.0], [2.0, 7.0]]), [2.0, 0.0]),
    # DB-MTL step 1: buffer = 0.1·g/L = [[.1, 0], [0, .05]], α = (1, 2) → (0.1, 0.1)
    ("db_mtl", ORTHO, [0.1, 0.1]),
    # MoCo step 1: y = ½·[[1, 0], [0, 1]] (unit-normalised × loss 1), λ = (½, ½) → (¼, ¼)
    ("moco", ORTHO, [0.25, 0.25]),
    # ExcessMTL step 1 keeps w = 1 → Σ rows
    ("excess_mtl", ORTHO, [1.0, 2.0]),
]


@pytest.mark.parametrize(("name", "jac", "expected"), JACOBIAN_GOLDEN)
def test_jacobian_golden(name, jac, expected):
    b = make_balancer(name)
    b.setup([f"t{i}" for i in range(jac.shape[0])])
    losses = torch.ones(jac.shape[0]) if name == "moco" else LOSSES[: jac.shape[0]]
    if name == "trimmed_mean":
        losses = torch.ones(jac.shape[0])
    out = b.aggregate(GradientInfo(losses, jacobian=jac))
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-5, rtol=0)


def _two_steps(name: str, second: torch.Tensor, losses: torch.Tensor, **params) -> torch.Tensor:
    b = make_balancer(name, **params)
    b.setup(TASKS)
    b.aggregate(GradientInfo(losses, jacobian=ORTHO))
    return b.aggregate(GradientInfo(losses, jacobian=second))


def test_db_mtl_second_step():
    """Step 1 (ORTHO, L = (1, 4)): b = 0.1·g/L = diag(0.1, 0.05). Step 2 (J = 2I):
    g/L = diag(2, 0.5), β = 0.9/√2, b = β b + (1 − β) g/L; α_k b_k = max_j‖b_j‖ · b_k/‖b_k‖."""
    beta = 0.9 / R2
    b1 = beta * 0.1 + (1 - beta) * 2.0
    out = _two_steps("db_mtl", 2 * torch.eye(2), LOSSES)
    torch.testing.assert_close(out, torch.tensor([b1, b1]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("simplex", ["projection", "softmax"])
def test_moco_second_step(simplex):
    """Step 1 (ORTHO, L = 1): y = ½I, λ = (½, ½). Step 2 (J = [[1, 1], [0, 3]]): the rows
    normalised to ‖·‖ = L are u = [[1/√2, 1/√2], [0, 1]]; β = ½/√2, y ← (1 − β)y + βu;
    v = λ − (0.1/√2) y yᵀ λ, and λ = Π_Δ(v) (the paper: both entries shifted by the same
    amount to sum to 1, none negative here) or softmax(v) (LibMTL); the update is yᵀλ."""
    beta, gamma = 0.5 / R2, 0.1 / R2
    y = [[(1 - beta) * 0.5 + beta / R2, beta / R2], [0.0, (1 - beta) * 0.5 + beta]]
    gram = [[sum(a * b for a, b in zip(r, s, strict=True)) for s in y] for r in y]
    v = [0.5 - gamma * 0.5 * (gram[i][0] + gram[i][1]) for i in range(2)]
    softmax = 1 / (1 + math.exp(v[1] - v[0]))
    lam0 = softmax if simplex == "softmax" else v[0] + (1 - v[0] - v[1]) / 2
    lam = [lam0, 1 - lam0]
    expected = [lam[0] * y[0][j] + lam[1] * y[1][j] for j in range(2)]
    out = _two_steps("moco", torch.tensor([[1.0, 1.0], [0.0, 3.0]]), torch.ones(2), simplex=simplex)
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-5, rtol=0)


def test_moco_weights_reach_the_min_norm_point_of_the_tracked_gradients():
    """Found by an outside review: λ ← softmax(λ − γ_t G λ) treats a probability vector as
    logits, so on two orthogonal tasks whose gradients differ 10× it stayed near uniform
    ((0.41, 0.59) after 500 steps) where the paper's projected step reaches MGDA's weights
    (1/101, 100/101): λ_k ∝ 1/‖y_k‖² for orthogonal y."""
    b = _setup("moco")
    jac = torch.tensor([[10.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    for _ in range(500):
        b.aggregate(GradientInfo(torch.tensor([10.0, 1.0], dtype=torch.float64), jacobian=jac))
    torch.testing.assert_close(b.lam, torch.tensor([1 / 101, 100 / 101], dtype=torch.float64),
                               atol=1e-4, rtol=0)  # fmt: skip
    soft = _setup("moco", simplex="softmax")
    for _ in range(500):
        soft.aggregate(GradientInfo(torch.tensor([10.0, 1.0], dtype=torch.float64), jacobian=jac))
    assert 0.3 < float(soft.lam[0]) < 0.45  # LibMTL's variant stays near uniform


def test_metabalance_averages_norms_over_steps():
    """Averages from 0, as the authors' optimizer: step 1 norms (1, 2) give 0.1·(1, 2); step 2
    on SKEW (√5, 1): 0.9·0.1·(1, 2) + 0.1·(√5, 1) (the same bias for both: it cancels)."""
    b = _setup("metabalance")
    b.coefficients(GradientInfo(LOSSES, gramian=(ORTHO @ ORTHO.T).double()))
    c = b.coefficients(GradientInfo(LOSSES, gramian=(SKEW @ SKEW.T).double()))
    ratio = (0.09 + 0.1 * 5**0.5) / (0.18 + 0.1)
    torch.testing.assert_close(c, torch.tensor([1.0, 0.7 * ratio + 0.3], dtype=torch.float64))


def test_metabalance_holds_an_absent_tasks_average_and_weighs_it_zero():
    """Unlabelled, its zero norm shrank its average (weight logged 3e20) and overscaled it on
    its return (3.46 where its norms say 0.48): now held, and scaled as before on return."""
    b = _setup("metabalance")
    gram = (SKEW @ SKEW.T).double()
    first = b.coefficients(GradientInfo(LOSSES, gramian=gram))
    zero_row = gram.clone()
    zero_row[1, :] = zero_row[:, 1] = 0.0
    for _ in range(20):
        with b.labelled_tasks(torch.tensor([True, False])):
            away = b.coefficients(GradientInfo(LOSSES, gramian=zero_row))
        assert float(away[1]) == 0.0
    back = b.coefficients(GradientInfo(LOSSES, gramian=gram))
    assert float(back[1]) == pytest.approx(float(first[1]), rel=0.05)


def test_modo_second_step():
    """From (0.525, 0.475): Gλ = (0.05, 0.425), λ − 0.1 Gλ = (0.52, 0.4325), shifted by
    +0.02375 onto the simplex → (0.54375, 0.45625)."""
    b = _setup("modo", gamma=0.1, rho=0.0)
    info = GradientInfo(LOSSES, gramian=(CONFLICT @ CONFLICT.T).double())
    b.coefficients(info)
    c = b.coefficients(info)
    torch.testing.assert_close(c, torch.tensor([0.54375, 0.45625], dtype=torch.float64))


def test_excess_mtl_second_step():
    """e = Σ g²/√(Σ_t g²): step 1 e0 = (1, 2); step 2 with J = 2I: e = (4/√5, 4/√8);
    w ∝ exp(0.01 · e/e0), renormalised to sum 2."""
    b = make_balancer("excess_mtl")
    b.setup(TASKS)
    b.aggregate(GradientInfo(LOSSES, jacobian=ORTHO))
    out = b.aggregate(GradientInfo(LOSSES, jacobian=2 * torch.eye(2)))
    torch.testing.assert_close(out, torch.tensor([2 * 1.0054087, 2 * 0.9945913]), atol=1e-5, rtol=0)


def test_graddrop_keeps_agreeing_signs_and_picks_one_sign_otherwise():
    jac = torch.tensor([[1.0, 2.0, -1.0], [3.0, -1.0, -2.0]])
    b = make_balancer("graddrop")
    b.setup(TASKS)
    for seed in range(20):
        torch.manual_seed(seed)
        out = b.aggregate(GradientInfo(LOSSES, jacobian=jac))
        assert out[0] == 4.0 and out[2] == -3.0  # all tasks agree: the plain sum
        assert float(out[1]) in (2.0, -1.0)  # mixed: the positive part or the negative part
    assert make_balancer("graddrop", leak=1.0).aggregate(
        GradientInfo(LOSSES, jacobian=jac)
    ).tolist() == [4.0, 1.0, -3.0]


LOSS_GOLDEN = [
    ("ew", [1.0, 1.0]),
    ("sum", [1.0, 1.0]),
    ("mean", [0.5, 0.5]),
    # GLS: ∂(L_a L_b)^(1/2)/∂L_k = GLS/(2 L_k), GLS = 2
    ("gls", [1.0, 0.25]),
    # IMTL-L at s = 0: e^0
    ("imtl_l", [1.0, 1.0]),
    # FAMO at ξ = 0: z = ½, c = ½/1 + ½/4 = 0.625, w = z/(c L) = (0.8, 0.2)
    ("famo", [0.8, 0.2]),
    # STCH in its warm-up window: Σ log L → 1/L
    ("stch", [1.0, 0.25]),
    ("rlw", [0.5, 0.5]),
]


@pytest.mark.parametrize(("name", "expected"), LOSS_GOLDEN)
def test_loss_golden(name, expected):
    torch.testing.assert_close(
        _setup(name).weights(LOSSES), torch.tensor(expected), atol=1e-6, rtol=0
    )


LOSS_GOLDEN_2 = [
    # GLS on (1, 9): GLS = 3, ∂/∂L_k = GLS/(K L_k) = (1.5, 1/6)
    ("gls", [1.5, 1 / 6]),
    # FAMO at ξ = 0: c = ½/1 + ½/9 = 5/9, w = z/(c L) = (0.9, 0.1)
    ("famo", [0.9, 0.1]),
    # STCH in its warm-up window: 1/L
    ("stch", [1.0, 1 / 9]),
    ("mean", [0.5, 0.5]),
]


@pytest.mark.parametrize(("name", "expected"), LOSS_GOLDEN_2)
def test_loss_golden_second_case(name, expected):
    torch.testing.assert_close(
        _setup(name).weights(torch.tensor([1.0, 9.0])), torch.tensor(expected), atol=1e-6, rtol=0
    )


def test_stch_after_warmup():
    """nadir (1, 4); losses (2, 4): ∂/∂L_k of 2·logsumexp(log(L/nadir)) = 2·softmax_k / L_k."""
    b = _setup("stch")
    b.combine(LOSSES)
    b.epoch_end()
    torch.testing.assert_close(b.weights(torch.tensor([2.0, 4.0])), torch.tensor([2 / 3, 1 / 6]))


@pytest.mark.parametrize(("optimizer", "step"), [("sgd", 0.0043321), ("adam", 0.025)])
def test_famo_shifts_weight_to_the_slower_task(optimizer, step):
    """Losses (1, 4) then (0.5, 4): δ = (log 2, 0), gradient z⊙(δ − z·δ) = ±0.1733; the plain
    step is 0.025 times it (∓0.00433), Adam's first step 0.025 times its sign."""
    b = _setup("famo", optimizer=optimizer)
    b.combine(LOSSES)
    b.combine(torch.tensor([0.5, 4.0]))
    torch.testing.assert_close(
        b.logits, torch.tensor([-step, step], dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_rlw_draws_softmax_weights():
    b = _setup("rlw")
    draws = torch.stack([b.loss_weights(LOSSES) for _ in range(2000)])
    assert torch.allclose(draws.sum(1), torch.ones(2000))
    assert (draws > 0).all() and abs(float(draws.mean()) - 0.5) < 0.02


def test_bilevel_first_order_steps():
    products = torch.tensor([2.0, -3.0], dtype=torch.float64)
    info = GradientInfo(LOSSES, gramian=torch.eye(2, dtype=torch.float64), val_products=products)
    auto = _setup("auto_lambda", meta_lr=0.1)
    torch.testing.assert_close(
        auto.coefficients(info), torch.tensor([1.2, 0.7], dtype=torch.float64)
    )
    moml = _setup("moml", meta_lr=0.1)  # (½, ½) + 0.1·(2, −3) = (0.7, 0.2) → simplex
    torch.testing.assert_close(
        moml.coefficients(info), torch.tensor([0.75, 0.25], dtype=torch.float64)
    )


def test_imtl_hybrid_scales_then_balances():
    """At s = 0 the hybrid is IMTL-G, and s gets ∂(e^s L − s)/∂s = L − 1; with s = log 2 on
    task a the scaled gradients are (2, 0) and (0, 2): equal norms, α' = (½, ½), c = D α'."""
    b = _setup("imtl")
    c = b.coefficients(GradientInfo(LOSSES, gramian=(ORTHO @ ORTHO.T).double()))
    torch.testing.assert_close(c, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    torch.testing.assert_close(b.log_scales.grad, LOSSES - 1)
    with torch.no_grad():
        b.log_scales.copy_(torch.tensor([math.log(2.0), 0.0]))
    c = b.coefficients(GradientInfo(LOSSES, gramian=(ORTHO @ ORTHO.T).double()))
    torch.testing.assert_close(c, torch.tensor([1.0, 0.5], dtype=torch.float64))


def test_rgw_draws_softmax_gradient_weights():
    b = _setup("rgw")
    info = GradientInfo(LOSSES, gramian=(ORTHO @ ORTHO.T).double())
    draws = torch.stack([b.coefficients(info) for _ in range(2000)])
    assert torch.allclose(draws.sum(1), torch.ones(2000, dtype=torch.float64))
    assert (draws > 0).all() and abs(float(draws.mean()) - 0.5) < 0.02


def test_forum_step():
    """G = diag(1, 4), p = (2, −3), α = (½, ½), η = 0.1, ρ = 0.5, β = 0.1: Gα = (½, 2),
    ‖∇q‖² = 0.01·4.25 + 1.25 = 1.2925, αᵀp = −½ → ν = 0.5 + 0.5/1.2925 = 0.886847;
    c = (να, 1); α − βνη Gα = (0.495566, 0.482263) → simplex (0.506651, 0.493349)."""
    b = _setup("forum", rho=0.5, inner_lr=0.1, meta_lr=0.1)
    products = torch.tensor([2.0, -3.0], dtype=torch.float64)
    info = GradientInfo(LOSSES, gramian=(ORTHO @ ORTHO.T).double(), val_products=products)
    c = b.coefficients(info)
    torch.testing.assert_close(
        c, torch.tensor([0.443424, 0.443424, 1.0], dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        b.alpha, torch.tensor([0.506651, 0.493349], dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_trimmed_mean_default_path_equals_the_sorted_definition_with_outliers():
    torch.manual_seed(0)
    jac = torch.randn(7, 500) * 1e-3
    jac[2, ::3] = 1e8  # one task far off on a third of the coordinates, as robustness intends
    jac[5, ::5] = -1e8
    jac[:, 7] = 0.25  # ties
    b = make_balancer("trimmed_mean")
    b.setup([f"t{i}" for i in range(7)])
    expected = torch.sort(jac.double(), dim=0).values[1:-1].mean(0).float()
    out = b.aggregate(GradientInfo(torch.ones(7), jacobian=jac))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-9)  # no trace of 1e8


@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_graddrop_equals_the_papers_masks_per_coordinate(leak):
    torch.manual_seed(1)
    jac = torch.randn(3, 2000)
    jac[:, :5] = torch.tensor([1.0, -1.0, 0.0])[:, None]  # purity ½ exactly
    b = make_balancer("graddrop", leak=leak)
    b.setup(["a", "b", "c"])
    torch.manual_seed(2)
    out = b.aggregate(GradientInfo(torch.ones(3), jacobian=jac))
    torch.manual_seed(2)
    purity = 0.5 * (1 + jac.sum(0) / jac.abs().sum(0))
    draw = torch.rand(2000)
    mask = (purity > draw) & (jac > 0) | (purity < draw) & (jac < 0)
    expected = (leak * jac + (1 - leak) * mask * jac).sum(0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("k", "trim"), [(3, 1), (6, 2), (9, 4), (40, 3)])
def test_trimmed_mean_selection_equals_sorting_for_any_trim(k, trim):
    torch.manual_seed(k)
    jac = torch.randint(-3, 4, (k, 300)).float()  # many ties
    b = make_balancer("trimmed_mean", trim=trim)
    b.setup([f"t{i}" for i in range(k)])
    expected = torch.sort(jac, dim=0).values[trim : k - trim].mean(0)
    out = b.aggregate(GradientInfo(torch.ones(k), jacobian=jac))
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
