"""Partially labelled batches: a task the batch does not label has loss exactly 0 (and a zero
gradient), which is not an observation of that task.

Found by an outside review (issue 20, item 5): FAMO's task-averaged AUC fell below chance on
a 29-task data set where each batch labels only some tasks, because the zero losses of the
unlabelled tasks (clamped to 1e-8) took nearly all of its weight. The caller now says which
tasks a batch labelled (`Balancer.labelled_tasks`, passed by the training step and by
`polytask.gradients.backward(labelled=)`), and every method that reads the losses takes the
step as one on the labelled tasks, holding the others' running state.

Here: per method, a unit test on its state with a partially labelled loss vector (each fails
on the code before the fix), the interface, checkpoints, and end to end on generated data with
many related tasks, in two layouts (data sources that each label a few of the tasks, and
School's, each row labelling one task): the loss weightings with state, FAMO above all, land
within a small margin of equal weighting (before the fix FAMO and GLS were far above in RMSE).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.balancers import (
    BALANCERS,
    Balancer,
    BilevelBalancer,
    GradientInfo,
    GramianBalancer,
    JacobianBalancer,
)
from polytask.gradients import backward
from polytask.gradients._engine import _combine
from tests.balancers.helpers import GRADIENT_METHODS, make

TASKS = ["a", "b", "c", "d"]


def setup(name: str, tasks: list[str] = TASKS, **params: object) -> Balancer:
    b = make_balancer(name, **params)
    b.setup(tasks)
    return b


def mask(*labelled: int, k: int = len(TASKS)) -> Tensor:
    m = torch.zeros(k, dtype=torch.bool)
    m[list(labelled)] = True
    return m


def combine(b: Balancer, losses: list[float], labelled: Tensor | None = None) -> Tensor:
    """The balancer's combination of `losses` (unlabelled entries must be 0) and its gradient
    with respect to them."""
    probe = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    with b.labelled_tasks(labelled):
        total = b.combine(probe)
    (grad,) = torch.autograd.grad(total, probe)
    return grad


# -- the interface ---------------------------------------------------------------------------


def test_labelled_is_none_outside_the_block_and_for_a_full_mask():
    b = setup("famo")
    assert b.labelled is None
    with b.labelled_tasks(torch.ones(4, dtype=torch.bool)):
        assert b.labelled is None  # every task labelled: the plain code runs
    with b.labelled_tasks(mask(0, 2)):
        assert b.labelled is not None and b.labelled.tolist() == [True, False, True, False]
        with b.labelled_tasks(None):
            assert b.labelled is None
        assert b.labelled is not None
    assert b.labelled is None


@pytest.mark.parametrize(
    "bad", [torch.ones(3, dtype=torch.bool), torch.ones(4), torch.ones(4, dtype=torch.long)]
)
def test_labelled_mask_must_be_one_bool_per_task(bad):
    b = setup("ew")
    with (
        pytest.raises(ValueError, match=r"labelled mask of 4 bools.*got dtype"),
        b.labelled_tasks(bad),
    ):
        pass


class _Spy(Balancer):
    """Equal weights that record the mask each step's `combine` saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[bool] | None] = []

    def loss_weights(self, losses: Tensor) -> Tensor:
        return torch.ones_like(losses.detach())

    def combine(self, losses: Tensor) -> Tensor:
        m = self.labelled
        self.seen.append(None if m is None else m.tolist())
        return losses.sum()


def _one_task_rows(k: int = 3, n: int = 8) -> TaskData:
    """Row i labels task i mod k only."""
    x = torch.randn(n, 4)
    owner = torch.arange(n) % k
    return TaskData(
        x, {f"t{i}": torch.where(owner == i, torch.randn(n), torch.nan) for i in range(k)}
    )


def test_the_training_step_tells_the_balancer_which_tasks_the_batch_labelled():
    data = _one_task_rows()
    tasks = [Task(f"t{i}", "regression") for i in range(3)]
    spy = _Spy()
    cfg = TrainConfig(epochs=1, batch_size=2, patience=None, progress=False)
    Trainer(hard_sharing_mlp(4, tasks, hidden=(8,)), spy, cfg).fit(data)
    # four batches of two rows: each labels one or two of the three tasks
    assert len(spy.seen) == 4
    for seen in spy.seen:
        assert seen is not None and 1 <= sum(seen) <= 2
    assert spy.labelled is None


def test_backward_passes_labelled_to_loss_and_gradient_methods():
    torch.manual_seed(0)
    trunk = torch.nn.Linear(3, 5)
    x = torch.randn(6, 3)

    def losses() -> Tensor:  # c unlabelled: 0, still in the graph
        z = trunk(x)
        return torch.stack([z[:, 0].pow(2).mean(), z[:, 1].pow(2).mean(), z.sum() * 0.0])

    spy = _Spy()
    spy.setup(["a", "b", "c"])
    backward(losses(), trunk.parameters(), spy, labelled=mask(0, 1, k=3))
    assert spy.seen == [[True, True, False]]
    db = setup("db_mtl", ["a", "b", "c"])
    backward(losses(), trunk.parameters(), db, labelled=mask(0, 1, k=3))
    assert db.buffer[2].abs().sum() == 0 and db.buffer[:2].abs().sum() > 0


# -- FAMO ------------------------------------------------------------------------------------


def test_famo_weights_only_the_labelled_tasks():
    b = setup("famo")
    b.logits = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64)
    losses = torch.tensor([0.5, 0.0, 2.0, 0.0], dtype=torch.float64)
    with b.labelled_tasks(mask(0, 2)):
        w = b.weights(losses)
    # FAMO on the labelled tasks alone: softmax over their logits, c over their losses
    sub = setup("famo", ["a", "c"])
    sub.logits = b.logits[[0, 2]].clone()
    expected = sub.weights(losses[[0, 2]])
    assert w[[1, 3]].tolist() == [0.0, 0.0]
    assert torch.allclose(w[[0, 2]], expected)
    assert float(w.sum()) == pytest.approx(1.0)  # before the fix: ≈ 1e-8 on the labelled tasks


def test_famo_logits_move_only_on_tasks_labelled_before_and_now():
    """Task d is unlabelled from step 2 on: FAMO on a, b, c must move as a 3-task FAMO fed
    their losses, and d's logit only decays (before the fix its log 1e-8 'loss' threw it)."""
    g = torch.Generator().manual_seed(0)
    full, sub = setup("famo"), setup("famo", ["a", "b", "c"])
    for step in range(6):
        losses = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
        if step == 0:
            combine(full, losses.tolist())
        else:
            losses[3] = 0.0
            combine(full, losses.tolist(), mask(0, 1, 2))
        combine(sub, losses[:3].tolist())
    assert torch.allclose(full.logits[:3], sub.logits)
    assert full.logits[3] == 0.0  # decay of a zero logit
    assert full.since.tolist() == [1.0, 1.0, 1.0, 6.0]  # d last labelled six steps ago


def test_famo_change_after_a_gap_is_per_step():
    """A task labelled again after s steps contributes (log L_then − log L_now) / s."""
    b = setup("famo", ["a", "b"], decay=0.0, optimizer="sgd")
    combine(b, [1.0, 1.0])
    combine(b, [0.9, 0.0], mask(0, k=2))
    combine(b, [0.8, 0.0], mask(0, k=2))
    before = b.logits.clone()
    combine(b, [0.7, math.exp(-0.3)])  # b fell by 0.3 in log over 3 steps: 0.1 per step
    delta = torch.tensor([math.log(0.8 / 0.7), 0.1], dtype=torch.float64)
    z = torch.softmax(before, 0)
    expected = before - b.lr * z * (delta - (z * delta).sum())
    assert torch.allclose(b.logits, expected)


def test_famo_logits_move_as_with_the_authors_adam():
    """Found by an outside review: the logits took the plain step β (J_softmax(ξ)ᵀ δ + γ ξ) at
    the authors' β = 0.025, which their code (and LibMTL's) gives to torch.optim.Adam with
    weight decay γ: the plain step moved them about a thousand times less. Reference: the
    authors' update, δ = log L_before − log L_after, grad = autograd of softmax(w) · δ."""
    g = torch.Generator().manual_seed(3)
    b = setup("famo", ["a", "b", "c"])
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.025, weight_decay=1e-3)
    previous = None
    for _ in range(8):
        losses = torch.rand(3, generator=g, dtype=torch.float64) + 0.2
        combine(b, losses.tolist())
        if previous is not None:
            delta = previous.log() - losses.log()
            (grad,) = torch.autograd.grad(torch.softmax(w, -1), w, grad_outputs=delta)
            opt.zero_grad()
            w.grad = grad
            opt.step()
        previous = losses
    torch.testing.assert_close(b.logits, w.detach(), atol=1e-12, rtol=0)
    assert float(w.detach().abs().max()) > 0.05  # it moved (the plain step: about 1e-4)
    with pytest.raises(ValueError, match="optimizer must be 'adam'"):
        make_balancer("famo", optimizer="adamw")


def test_famo_loss_average_weighs_by_each_tasks_running_mean_over_its_labelled_steps():
    b = setup("famo", ["a", "b", "c"], loss_average=0.5)
    combine(b, [1.0, 4.0, 2.0])
    combine(b, [3.0, 0.0, 1.0], mask(0, 2, k=3))  # b unlabelled: its mean is held
    assert b.average.tolist() == pytest.approx([2.0, 4.0, 1.5])
    z = torch.softmax(b.logits, 0)
    with b.labelled_tasks(mask(0, 2, k=3)):
        w = b.weights(torch.tensor([3.0, 0.0, 1.0], dtype=torch.float64))
    inv = torch.tensor([z[0] / 2.0, 0.0, z[2] / 1.5], dtype=torch.float64)
    assert torch.allclose(w, inv / inv.sum())
    with pytest.raises(ValueError, match=r"loss_average must be in \[0, 1\)"):
        make_balancer("famo", loss_average=1.0)


def test_famo_state_round_trips_through_a_checkpoint_and_loads_old_ones():
    b = setup("famo")
    combine(b, [1.0, 2.0, 0.5, 0.0], mask(0, 1, 2))
    combine(b, [0.9, 1.5, 0.0, 0.0], mask(0, 1))
    restored = setup("famo")
    restored.load_state_dict(b.state_dict())  # failed before: `previous` was empty at setup
    losses = torch.tensor([0.5, 1.0, 1.0, 2.0], dtype=torch.float64)
    assert torch.equal(restored.weights(losses), b.weights(losses))
    assert torch.equal(restored.since, b.since)
    # checkpoints from before `since`: empty before the first step, one value per task after
    fresh = setup("famo")
    fresh.load_state_dict(
        {"logits": torch.zeros(4, dtype=torch.float64), "previous": torch.zeros(0)}
    )
    assert fresh.since.tolist() == [0.0] * 4
    old = {"logits": b.logits.clone(), "previous": b.previous.clone()}
    fresh.load_state_dict(old)
    assert fresh.since.tolist() == [1.0] * 4


# -- DWA -------------------------------------------------------------------------------------


def test_dwa_window_means_count_only_the_steps_that_labelled_each_task():
    b = setup("dwa", ["a", "b", "c"])
    for _ in range(2):  # window 1: every task labelled, losses 1
        combine(b, [1.0, 1.0, 1.0])
    b.epoch_end()
    combine(b, [0.5, 1.0, 2.0])  # window 2: c labelled in one step of two
    combine(b, [0.5, 1.0, 0.0], mask(0, 1, k=3))
    b.epoch_end()
    assert b.history[1].tolist() == [0.5, 1.0, 2.0]  # before the fix c's mean was 1.0
    w = b.weights(torch.ones(3))
    exps = [math.exp(r / 2.0) for r in (0.5, 1.0, 2.0)]
    assert w.tolist() == pytest.approx([3 * e / sum(exps) for e in exps])


def test_dwa_task_without_labels_in_a_window_keeps_its_history():
    b = setup("dwa", ["a", "b", "c"])
    for losses in ([1.0, 1.0, 1.0], [0.8, 0.5, 0.9]):
        combine(b, losses)
        b.epoch_end()
    combine(b, [0.6, 0.5, 0.0], mask(0, 1, k=3))  # c unlabelled all window
    b.epoch_end()
    assert b.history[:, 2].tolist() == pytest.approx([1.0, 0.9])
    assert b.completed.tolist() == [3, 3, 2]
    w = b.weights(torch.ones(3))
    ratios = [0.6 / 0.8, 0.5 / 0.5, 0.9 / 1.0]  # before the fix: c's ratio 0 / 0.9 = 0
    exps = [math.exp(r / 2.0) for r in ratios]
    assert w.tolist() == pytest.approx([3 * e / sum(exps) for e in exps])


def test_dwa_task_with_under_two_windows_of_labels_gets_the_others_mean_ratio():
    b = setup("dwa", ["a", "b", "c"])
    combine(b, [1.0, 1.0, 0.0], mask(0, 1, k=3))
    b.epoch_end()
    combine(b, [0.5, 1.0, 2.0])
    b.epoch_end()
    w = b.weights(torch.ones(3))
    ratios = [0.5, 1.0, 0.75]
    exps = [math.exp(r / 2.0) for r in ratios]
    assert w.tolist() == pytest.approx([3 * e / sum(exps) for e in exps])


def test_dwa_loads_checkpoints_with_one_count_for_all_tasks():
    b = setup("dwa", ["a", "b", "c"])
    state = b.state_dict()
    state["window_count"], state["completed"] = (
        torch.tensor(2.0, dtype=torch.float64),
        torch.tensor(3),
    )
    b.load_state_dict(state)
    assert b.window_count.tolist() == [2.0] * 3 and b.completed.tolist() == [3] * 3


# -- GLS -------------------------------------------------------------------------------------


def test_gls_is_the_geometric_mean_of_the_labelled_losses():
    b = setup("gls")
    losses = [0.5, 0.0, 2.0, 0.0]
    with b.labelled_tasks(mask(0, 2)):
        value = b.combine(torch.tensor(losses, dtype=torch.float64))
    assert float(value) == pytest.approx(1.0)  # √(0.5 · 2); before the fix ≈ 1e-6
    grad = combine(b, losses, mask(0, 2))
    assert grad.tolist() == pytest.approx([1.0 / (2 * 0.5), 0.0, 1.0 / (2 * 2.0), 0.0])
    assert combine(b, [0.0] * 4, mask()).tolist() == [0.0] * 4  # nothing labelled


# -- IMTL-L and uncertainty weighting ---------------------------------------------------------


@pytest.mark.parametrize(("name", "attr"), [("imtl_l", "log_scales"), ("uncertainty", "log_vars")])
def test_learned_scales_of_unlabelled_tasks_get_no_gradient(name, attr):
    b = setup(name)
    losses = torch.tensor([0.5, 0.0, 2.0, 0.0])
    with b.labelled_tasks(mask(0, 2)):
        b.combine(losses).backward()
    grad = getattr(b, attr).grad
    # before the fix: ∓1 on b and d (the −s / +s term alone) at every unlabelled step
    assert grad[[1, 3]].tolist() == [0.0, 0.0]
    expected = [0.5 - 1, 2.0 - 1] if name == "imtl_l" else [1 - 0.5, 1 - 2.0]
    assert grad[[0, 2]].tolist() == pytest.approx(expected)


# -- STCH ------------------------------------------------------------------------------------


def test_stch_nadir_averages_the_warmup_steps_that_labelled_each_task():
    b = setup("stch", ["a", "b", "c"])
    combine(b, [1.0, 2.0, 0.0], mask(0, 1, k=3))
    combine(b, [3.0, 0.0, 0.0], mask(0, k=3))
    b.epoch_end()
    # c was never labelled in the warm-up (before the fix: nadir 0, an infinite loss)
    assert b.nadir_sum.tolist() == [4.0, 2.0, 0.0] and b.nadir_count.tolist() == [2, 1, 0]
    grad = combine(b, [2.0, 0.0, 5.0], mask(0, 2, k=3))  # c's first label: its own nadir
    assert b.nadir_count.tolist() == [2, 1, 1]
    # |S| μ logsumexp over S = {a, c}: rel = (log 1, log 1) → weights 2 · softmax / L_k
    assert torch.isfinite(grad).all()
    assert grad.tolist() == pytest.approx([0.5 / 2.0 * 2, 0.0, 0.5 / 5.0 * 2])


def test_stch_drops_unlabelled_tasks_from_the_smooth_maximum():
    b = setup("stch", ["a", "b", "c"], mu=100.0)
    combine(b, [1.0, 1.0, 1.0])
    b.epoch_end()
    grad = combine(b, [1.0, 0.0, 1.0], mask(0, 2, k=3))
    # a and c alone: 2 · softmax(0, 0) / L = 1 each; before the fix the (clamped) zero of b
    # still took a share of the softmax at large μ, and the scale was K = 3
    assert grad.tolist() == pytest.approx([1.0, 0.0, 1.0])


# -- DB-MTL ----------------------------------------------------------------------------------


def test_db_mtl_holds_unlabelled_rows_and_leaves_them_out_of_the_update():
    g = torch.Generator().manual_seed(0)
    b = setup("db_mtl", ["a", "b", "c"])
    jac = torch.randn(3, 6, generator=g, dtype=torch.float64)
    b.aggregate(GradientInfo(torch.ones(3, dtype=torch.float64), jacobian=jac))
    held = b.buffer[2].clone()
    jac2 = torch.randn(3, 6, generator=g, dtype=torch.float64)
    jac2[2] = 0.0
    with b.labelled_tasks(mask(0, 1, k=3)):
        update = b.aggregate(
            GradientInfo(torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64), jacobian=jac2)
        )
    assert torch.equal(b.buffer[2], held)  # before the fix: decayed by β_t
    rows = b.buffer[:2]
    norms = rows.norm(dim=1)
    assert torch.allclose(update, (norms.max() / (norms + 1e-8)) @ rows)


@pytest.mark.parametrize("name", ["moco", "modo"])
def test_moco_and_modo_hold_an_absent_tasks_weight_and_step_on_the_others(name):
    """An absent task's zero row pulled λ onto it: after 300 steps MoCo's λ was [0, 0.999, 0]
    on the absent task and its update 0.002 where the others' mean gradient is 2.3. Now its λ
    waits, and the update is the labelled tasks' alone."""
    rows = aligned_rows(3)
    b = setup(name, ["a", "b", "c"])
    with_zero = rows.clone()
    with_zero[1] = 0.0
    labelled = mask(0, 2, k=3)
    losses = torch.tensor([1.0, 0.0, 1.2], dtype=torch.float64)
    for _ in range(300):
        info = GradientInfo(
            losses,
            gramian=with_zero @ with_zero.T if name == "modo" else None,
            jacobian=with_zero if name == "moco" else None,
        )
        with b.labelled_tasks(labelled):
            update = _combine(b, info, with_zero)[0]
    assert float(b.lam[1]) == pytest.approx(1 / 3)  # held since setup
    assert update.norm() > 0.2 * (rows[0] + rows[2]).norm() / 2


# -- gradient methods: the labelled sub-problem -----------------------------------------------

SUBPROBLEM_METHODS = [n for n in GRADIENT_METHODS if BALANCERS[n].labelled_subproblem]


def aligned_rows(k: int, n: int = 20) -> Tensor:
    """k related task gradients (a shared direction plus noise), float64."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, generator=g, dtype=torch.float64)
    return base + 0.5 * torch.randn(k, n, generator=g, dtype=torch.float64)


def engine_update(name: str, rows: Tensor, labelled: Tensor | None) -> Tensor:
    """The engine's combined gradient for `name` on J = `rows` (a fresh balancer, fixed RNG)."""
    b = make(name, [f"t{i}" for i in range(len(rows))])
    losses = torch.linspace(0.8, 1.2, len(rows), dtype=torch.float64)
    if labelled is not None:
        losses = torch.where(labelled, losses, 0.0)
    info = GradientInfo(
        losses,
        gramian=rows @ rows.T if isinstance(b, GramianBalancer) else None,
        jacobian=rows if isinstance(b, JacobianBalancer) else None,
        val_products=rows @ rows.sum(0) if isinstance(b, BilevelBalancer) else None,
    )
    torch.manual_seed(0)
    with b.labelled_tasks(labelled):
        return _combine(b, info, rows)[0]


@pytest.mark.parametrize("name", SUBPROBLEM_METHODS)
def test_gradient_method_on_a_partly_labelled_batch_is_the_method_on_the_labelled_tasks(name):
    """An unlabelled task's zero row is not a task that wants no change. Before the fix MGDA's
    and IMTL-G's update was 0 (the hull held 0), RGW's and SDMGrad's a fifth of the labelled
    problem's, UPGrad/DualProj/CAGrad scaled by the share of labelled tasks."""
    rows = aligned_rows(5)
    with_zero = rows.clone()
    with_zero[[1, 3]] = 0.0
    labelled = torch.tensor([True, False, True, False, True])
    update = engine_update(name, with_zero, labelled)
    alone = engine_update(name, rows[[0, 2, 4]], None)
    assert torch.allclose(update, alone, rtol=1e-6, atol=1e-9), name


@pytest.mark.parametrize(
    "name", [n for n in GRADIENT_METHODS if not issubclass(BALANCERS[n], BilevelBalancer)]
)  # a bilevel method's update also holds the validation gradient, which this call leaves out
def test_no_gradient_method_is_stopped_by_an_unlabelled_task(name):
    """Every method, sub-problem or not: aligned labelled gradients give an update that helps
    each of them (the same call with the unlabelled rows zero). Before the fix Krum chose the
    two zero rows (each other's nearest neighbours) and its update was 0."""
    rows = aligned_rows(5)
    rows[[1, 3]] = 0.0
    labelled = torch.tensor([True, False, True, False, True])
    update = engine_update(name, rows, labelled)
    helps = rows[labelled] @ update
    assert bool((helps > 0).all()), (name, helps)


def test_methods_with_task_state_see_every_row():
    """A method whose per-task state moves each call cannot be handed a sub-problem (its
    state would be indexed by the labelled tasks' positions)."""
    for name in GRADIENT_METHODS:
        if BALANCERS[name].updates_state:
            assert not BALANCERS[name].labelled_subproblem, name


@pytest.mark.parametrize("name", ["mgda", "imtl_g", pytest.param("cagrad", marks=pytest.mark.slow)])
def test_gradient_methods_train_when_each_batch_labels_few_tasks(name):
    """12 tasks in 4 sources (each batch labels 3). Measured (test RMSE, seed 0): EW 0.426;
    after the fix MGDA 0.426, IMTL-G 0.418, CAGrad 0.421; before it MGDA 0.821, IMTL-G 0.588,
    and CAGrad diverged (non-finite gradient at step 74)."""
    train, test, tasks = grouped_sources(12, 4, seed=0, rows=100)
    ew = mean_rmse(make_balancer("ew"), train, test, tasks, seed=0, epochs=10)
    rmse = mean_rmse(make_balancer(name), train, test, tasks, seed=0, epochs=10)
    assert rmse < 1.1 * ew, (name, rmse, ew)


# -- end to end ------------------------------------------------------------------------------


def related_tasks(k: int, seed: int, d: int = 8) -> tuple[torch.Generator, Tensor, Tensor]:
    """k related linear tasks: weights w_k = w + 0.5 u_k (a shared direction plus a task's
    own), biases b_k; returns the generator for drawing rows."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    return g, w + 0.5 * torch.randn(k, d, generator=g), torch.randn(k, generator=g)


def targets_of(x: Tensor, ws: Tensor, bias: Tensor, g: torch.Generator) -> Tensor:
    """y (n, k): y_k = x · w_k / √d + b_k + noise (sd 0.3)."""
    noise = 0.3 * torch.randn(x.shape[0], ws.shape[0], generator=g)
    return x @ ws.T / math.sqrt(x.shape[1]) + bias + noise


def grouped_sources(
    k: int, groups: int, seed: int, rows: int = 200, d: int = 8
) -> tuple[dict[str, TaskData], TaskData, list[Task]]:
    """`groups` data sources, each labelling its k / groups tasks on every row; a step draws its
    batch from one source, so each batch labels only k / groups of the k tasks. The test rows
    label every task."""
    g, ws, bias = related_tasks(k, seed, d)
    per = k // groups
    sources = {}
    for j in range(groups):
        x = torch.randn(rows, d, generator=g)
        y = targets_of(x, ws, bias, g)
        sources[f"g{j}"] = TaskData(x, {f"t{i}": y[:, i] for i in range(j * per, (j + 1) * per)})
    x = torch.randn(100 * groups, d, generator=g)
    y = targets_of(x, ws, bias, g)
    test = TaskData(x, {f"t{i}": y[:, i] for i in range(k)})
    return sources, test, [Task(f"t{i}", "regression") for i in range(k)]


def one_task_rows(
    k: int, seed: int, rows_per_task: int = 60, d: int = 8
) -> tuple[TaskData, TaskData, list[Task]]:
    """Each row labels one task, drawn at random (School's layout): a random batch of B rows
    labels at most B of the k tasks, most of them with one or two rows."""
    g, ws, bias = related_tasks(k, seed, d)

    def draw(n: int) -> TaskData:
        x = torch.randn(n, d, generator=g)
        y = targets_of(x, ws, bias, g)
        owner = torch.randint(k, (n,), generator=g)
        return TaskData(x, {f"t{i}": torch.where(owner == i, y[:, i], torch.nan) for i in range(k)})

    return (
        draw(rows_per_task * k),
        draw(rows_per_task * k),
        [Task(f"t{i}", "regression") for i in range(k)],
    )


def mean_rmse(
    balancer: Balancer,
    train: TaskData | dict[str, TaskData],
    test: TaskData,
    tasks: list[Task],
    seed: int,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-2,
) -> float:
    """Test RMSE averaged over the tasks after training a small shared MLP with `balancer`."""
    torch.manual_seed(seed)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=None,
        progress=False,
        seed=seed,
        schedule="uniform",
    )
    trainer = Trainer(hard_sharing_mlp(test.x.shape[1], tasks, hidden=(32,)), balancer, cfg)
    trainer.fit(train)
    metrics = trainer.evaluate(test)
    return float(np.mean([metrics[t.name]["rmse"] for t in tasks]))


STATEFUL_METHODS = ["famo", "dwa", "gls", "stch", "uncertainty", "imtl_l", "db_mtl"]
"""The methods that read the losses and keep state or a per-task term (DB-MTL: a gradient
method, on the exact Jacobian)."""


def test_loss_weightings_match_equal_weights_when_each_batch_labels_few_tasks():
    """12 tasks in 4 sources: each batch labels 3 of them. Measured (test RMSE, seed 0, 10
    epochs): EW 0.426; after the fix FAMO 0.424, GLS 0.428, DWA 0.427, STCH 0.409, uncertainty
    0.425, DB-MTL 0.418; before it FAMO 1.81 and GLS 1.87 (the unlabelled tasks' zero losses
    took the weight), DB-MTL 0.436. Here 5 epochs: each method's RMSE over EW's is 0.96-1.06 on
    seeds 0-3 (at 10 epochs up to 1.11 on seed 1), and with the mask ignored (the code before
    the fix) FAMO's and GLS's are 3.7 on seed 0."""
    train, test, tasks = grouped_sources(12, 4, seed=0, rows=100)
    ew = mean_rmse(make_balancer("ew"), train, test, tasks, seed=0, epochs=5)
    for name in ["famo", "gls", "dwa", "stch", "uncertainty", "db_mtl"]:  # IMTL-L: as UW
        rmse = mean_rmse(make_balancer(name), train, test, tasks, seed=0, epochs=5)
        assert rmse < 1.1 * ew, (name, rmse, ew)


def mean_over_seeds(
    data: list[tuple[dict[str, TaskData] | TaskData, TaskData, list[Task]]],
    epochs: int,
    lr: float,
    name: str,
    **params: float,
) -> float:
    """`mean_rmse` averaged over data sets drawn with seeds 0, 1, ..."""
    return float(
        np.mean([
            mean_rmse(make_balancer(name, **params), *d, seed=s, epochs=epochs, lr=lr)
            for s, d in enumerate(data)
        ])
    )  # fmt: skip


@pytest.mark.slow
def test_loss_weightings_match_equal_weights_over_seeds_when_sources_label_few_tasks():
    """5 epochs. Measured, mean over seeds 0-2 (and over data drawn with seeds 3-5), RMSE over
    EW's: 0.99-1.01 (0.98-1.03); at 10 epochs 0.99-1.05 (0.99-1.06). With the mask ignored (the
    code before the fix): FAMO 3.16, GLS 3.27."""
    data = [grouped_sources(12, 4, seed=s, rows=100) for s in range(3)]
    ew = mean_over_seeds(data, 5, 1e-2, "ew")
    for name in STATEFUL_METHODS:
        rmse = mean_over_seeds(data, 5, 1e-2, name)
        assert rmse < 1.08 * ew, (name, rmse, ew)


@pytest.mark.slow
def test_loss_weightings_match_equal_weights_when_each_row_labels_one_task():
    """School's layout: each row labels one of 20 tasks, random batches of 32. Measured test
    RMSE, seeds 0 and 1: EW 0.433, 0.391; FAMO with loss_average 0.9 0.438, 0.393; DWA 0.433,
    0.391; STCH 0.409, 0.420; uncertainty 0.426, 0.392. Not asserted: FAMO with its default
    loss_average 0 (0.692, 0.546; before the fix 1.378, 1.006) and GLS (0.98, 0.73), whose
    1/L_k weights read a loss of one or two rows (see FAMO's docstring)."""
    data = [one_task_rows(20, seed=s) for s in range(2)]
    ew = mean_over_seeds(data, 10, 3e-3, "ew")
    for name in ["dwa", "stch", "uncertainty"]:
        rmse = mean_over_seeds(data, 10, 3e-3, name)
        assert rmse < 1.08 * ew, (name, rmse, ew)
    famo = mean_over_seeds(data, 10, 3e-3, "famo", loss_average=0.9)
    assert famo < 1.05 * ew, (famo, ew)


SCHOOL = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "school"


@pytest.mark.slow
@pytest.mark.skipif(
    not (SCHOOL / "school.csv.gz").is_file(),
    reason="needs ../shared/datasets/school (School: 139 tasks, each student labels one)",
)
def test_famo_on_school_is_close_to_equal_weights():
    """School split 0 (each batch of 256 students labels about 80 of 139 schools), hidden
    64-64, 30 epochs, AdamW lr 1e-3, weight decay 1e-2. Measured pooled test RMSE (explained
    variance): EW 10.65 (31.0%); FAMO before the fix 12.85 (−0.4%, no better than the mean),
    after 10.70 (30.5%), with loss_average 0.9 10.62 (31.4%)."""
    import pandas as pd

    frame = pd.read_csv(SCHOOL / "school.csv.gz")
    split = np.load(SCHOOL / "splits" / "school_seed0.npz")
    train_rows, test_rows = split["train_idx"], split["test_idx"]
    x = frame[[f"x{i}" for i in range(27)]].to_numpy(dtype=np.float32)
    x = torch.tensor((x - x[train_rows].mean(0)) / (x[train_rows].std(0) + 1e-8))
    y = frame["exam_score"].to_numpy(dtype=np.float32)
    y_mean, y_std = float(y[train_rows].mean()), float(y[train_rows].std())
    y_std_t = torch.tensor((y - y_mean) / y_std)
    school = torch.tensor(frame["school_id"].to_numpy())
    ids = sorted(int(k) for k in school.unique())
    targets = {f"s{k}": torch.where(school == k, y_std_t, torch.nan) for k in ids}
    train = TaskData(x[train_rows], {k: v[train_rows] for k, v in targets.items()})
    tasks = [Task(f"s{k}", "regression") for k in ids]
    column = torch.tensor([ids.index(int(k)) for k in school[test_rows]])

    def rmse(balancer: Balancer) -> float:
        torch.manual_seed(0)
        cfg = TrainConfig(
            epochs=30, batch_size=256, lr=1e-3, weight_decay=1e-2, patience=None, progress=False
        )
        model = hard_sharing_mlp(27, tasks, hidden=(64, 64))
        Trainer(model, balancer, cfg).fit(train)
        model.eval()
        with torch.no_grad():
            out = model(x[test_rows])
        pred = torch.cat([out[t.name].reshape(-1, 1) for t in tasks], 1)
        p = pred[torch.arange(len(test_rows)), column].numpy() * y_std + y_mean
        return float(np.sqrt(np.mean((y[test_rows] - p) ** 2)))

    ew, famo = rmse(make_balancer("ew")), rmse(make_balancer("famo"))
    assert famo < 1.02 * ew, (famo, ew)


def test_robust_aggregators_use_the_labelled_rows_tolerating_what_they_allow():
    """Krum (f=1, m=2) and the trimmed mean (trim=2) on 5 tasks, 3 labelled: the trimmed mean
    drops one value per side (all that 3 rows allow), Krum with f=0 over the 3 rows."""
    rows = aligned_rows(5)
    rows[[1, 3]] = 0.0
    labelled = torch.tensor([True, False, True, False, True])
    b = make_balancer("trimmed_mean", trim=2)
    b.setup([f"t{i}" for i in range(5)])
    with b.labelled_tasks(labelled):
        trimmed = b.aggregate(GradientInfo(torch.ones(5, dtype=torch.float64), jacobian=rows))
    assert torch.allclose(trimmed, rows[[0, 2, 4]].median(0).values)
    k = make("krum", [f"t{i}" for i in range(5)])
    with k.labelled_tasks(labelled):
        c = k.coefficients(GradientInfo(torch.ones(5, dtype=torch.float64), gramian=rows @ rows.T))
    assert c[[1, 3]].eq(0).all() and c.sum().item() == pytest.approx(1.0)
    assert int((c > 0).sum()) == 2


# -- a batch that labels no task -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BALANCERS))
@pytest.mark.parametrize("some", [False, True])
def test_a_batch_that_labels_no_task_or_one_gives_finite_weights_and_gradients(name, some):
    """Every loss of an unlabelled task is the 0 of an empty mean: weights and gradients stay
    finite for every method, whether one task or none is labelled (FAMO's were NaN for none:
    0 / (tiny · 1e-8) underflowed in float32)."""
    # a labelled step first, so that running state exists
    _steps_stay_finite(name, [mask(0, 1, 2, 3)] + [mask(1) if some else mask()] * 2)


@pytest.mark.parametrize("name", sorted(BALANCERS))
def test_a_first_batch_that_leaves_a_task_unlabelled_gives_finite_weights_after(name):
    """ExcessMTL took the unlabelled task's 0 as its first excess risk and divided by it at
    the next step (NaN weights, the run stopped); every method trains on from such a start."""
    _steps_stay_finite(name, [mask(0, 1, 2)] + [mask(0, 1, 2, 3)] * 2)


def _steps_stay_finite(name: str, labelled_per_step: list[Tensor]) -> None:
    """One `backward` a step with the tasks `labelled_per_step` gives labelled: the weights
    and gradients are finite at every step."""
    torch.manual_seed(0)
    trunk, heads = torch.nn.Linear(3, 5), torch.nn.Linear(5, 4)
    b = make(name, TASKS)
    for step, labelled in enumerate(labelled_per_step):
        z = heads(torch.tanh(trunk(torch.randn(6, 3))))
        losses = torch.stack(
            [z[:, k].pow(2).mean() if labelled[k] else z.sum() * 0.0 for k in range(4)]
        )
        val = z.pow(2).mean() if isinstance(b, BilevelBalancer) else None
        trunk.zero_grad()
        heads.zero_grad()
        result = backward(losses, trunk.parameters(), b, labelled=labelled, val_loss=val)
        if result.weights is not None:
            assert torch.isfinite(result.weights).all(), (step, result.weights)
        for p in [*trunk.parameters(), *heads.parameters()]:
            assert p.grad is None or torch.isfinite(p.grad).all(), step
        b.epoch_end()


@pytest.mark.parametrize(("name", "first"), [("gradnorm", "losses"), ("excess_mtl", "excess")])
def test_a_tasks_first_value_is_recorded_at_the_first_step_that_labels_it(name, first):
    """GradNorm's L_k(0) and ExcessMTL's e_0 of a task the first batch did not label: its
    first labelled value, not the 0 (GradNorm stored 1e-12, reading the task's loss ratio as
    ~1e12 for the whole run and moving weight to it)."""
    b = setup(name)
    losses = [torch.tensor([1.0, 2.0, 3.0, 0.0]), torch.tensor([0.9, 1.8, 2.7, 4.0])]
    rows = [torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0])), 2.0 * torch.eye(4)]  # d's row 0
    recorded = []
    for step, labelled in enumerate([mask(0, 1, 2), None]):
        with b.labelled_tasks(labelled):
            j = rows[step].double()
            info = GradientInfo(losses[step], gramian=j @ j.T, jacobian=j)
            if first == "losses":
                b.coefficients(info)
            else:
                b.aggregate(info)
        recorded.append(b.initial.clone())
    assert math.isnan(recorded[0][3])
    if first == "losses":
        assert recorded[1].tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0])
    else:  # e = Σ g² / √(Σ_t g² + ε): 1 at the first step; d's first 4 / √4
        assert recorded[1][:3].tolist() == pytest.approx([1.0] * 3, rel=1e-6)
        assert float(recorded[1][3]) == pytest.approx(2.0, rel=1e-6)


def test_an_unlabelled_tasks_nan_loss_is_told_how_to_be_zero_and_a_list_mask_is_taken():
    torch.manual_seed(0)
    trunk = torch.nn.Linear(3, 2)
    z = trunk(torch.randn(4, 3))
    empty = z[:0, 1].pow(2).mean()  # the mean of no rows: NaN
    losses = torch.stack([z[:, 0].pow(2).mean(), empty])
    with pytest.raises(FloatingPointError, match=r"\['b'\], which the batch does not label: .*"):
        backward(losses, trunk.parameters(), setup("upgrad", ["a", "b"]), labelled=[True, False])
    with pytest.raises(FloatingPointError, match="lower the learning rate"):  # labelled: as before
        backward(losses, trunk.parameters(), setup("upgrad", ["a", "b"]), labelled=[True, True])
    losses = torch.stack([z[:, 0].pow(2).mean(), z.sum() * 0.0])
    result = backward(
        losses, trunk.parameters(), setup("upgrad", ["a", "b"]), labelled=[True, False]
    )
    assert result.weights is not None and float(result.weights[1]) == 0.0
