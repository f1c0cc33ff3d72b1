"""Auxiliary-aware gradients: any balancer combines the main tasks, and each auxiliary task's
gradient joins the update only where it does not work against them (after Du, Czarnecki,
Jayakumar, Pascanu & Lakshminarayanan, "Adapting auxiliary losses using gradient similarity",
2018).

With g_main the balancer's combination of the main tasks' gradients and g_a an auxiliary one:

- `gated` (Du et al.'s weighted variant): g_a enters scaled by max(0, cos(g_a, g_main));
- `projected`: when g_a · g_main < 0, its component along g_main is removed
  (g_a − (g_a · g_main / ‖g_main‖²) g_main, as PCGrad does for one pair); otherwise g_a whole.

Both read only inner products, so from the Gramian G = J Jᵀ and the main coefficients c_main
the update stays Jᵀ c: g_a · g_main = (G c)_a and ‖g_main‖² = c_mainᵀ G c_main. A loss-weighting
balancer's c_main is ∂combine/∂L_k at the step's losses (its gradient, exactly); a Jacobian
(coordinate-wise) balancer's g_main is its own combination of the main rows of J. With
`projected` the update's inner product with g_main is ‖g_main‖² + Σ_{a: g_a·g_main > 0} g_a ·
g_main ≥ 0. A step whose main gradient is 0 (a batch labelling no main task) keeps every
auxiliary gradient whole: there is nothing to conflict with. A bilevel balancer's
validation-gradient term is added unchanged and not part of g_main (its norm is unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, cast

import torch
from torch import Tensor

from polytask.balancers._base import (
    Balancer,
    BilevelBalancer,
    GradientInfo,
    GramianBalancer,
    JacobianBalancer,
)
from polytask.gradients._engine import _accumulate, _coefficients, _combine

if TYPE_CHECKING:
    from polytask.gradients._mode import GradientMode
    from polytask.tasks._task import Task

AuxiliaryRule = Literal["plain", "gated", "projected"]
"""How auxiliary tasks' gradients join the update: `plain` (one more task for the balancer),
`gated` or `projected` (see the module's docstring)."""
RULES: tuple[str, ...] = ("plain", "gated", "projected")


def auxiliary_coefficients(
    gramian: Tensor, c_main: Tensor, main: Tensor, auxiliary: Tensor, rule: str
) -> Tensor:
    """The coefficients c (K,) of the update Jᵀ c, from G (K, K), the main tasks' coefficients
    `c_main` (one per index in `main`) and the auxiliary tasks' indices, under `rule`."""
    g = gramian.double()
    c = g.new_zeros(g.shape[0])
    c[main] = c_main.double().to(g.device)
    products = g[auxiliary] @ c  # g_a · g_main
    main_sq = c @ g @ c  # ‖g_main‖²
    if not bool(main_sq > 0):  # no main direction: nothing to conflict with
        c[auxiliary] = 1.0
        return c
    if rule == "gated":
        norms = g.diagonal()[auxiliary].clamp_min(0).sqrt()
        cosine = products / (norms * main_sq.sqrt()).clamp_min(1e-300)
        c[auxiliary] = cosine.clamp_min(0)
        return c
    # projected: g_a whole, less its component along g_main where they conflict
    removed = (products.clamp_max(0) / main_sq).sum()
    c[main] = c[main] * (1 - removed)
    c[auxiliary] = 1.0
    return c


def auxiliary_combination(jacobian: Tensor, main_update: Tensor, rule: str) -> Tensor:
    """The update from the auxiliary tasks' gradients (rows of `jacobian`) joined to the main
    update (n,) under `rule`, for balancers that combine J themselves."""
    d = main_update
    products = jacobian.double() @ d.double()
    main_sq = d.double() @ d.double()
    if not bool(main_sq > 0):
        return d + jacobian.sum(0).to(d.dtype)
    if rule == "gated":
        norms = jacobian.double().norm(dim=1)
        cosine = products / (norms * main_sq.sqrt()).clamp_min(1e-300)
        return d + cosine.clamp_min(0).to(d.dtype) @ jacobian.to(d.dtype)
    removed = (products.clamp_max(0) / main_sq).sum()
    return d * (1 - removed).to(d.dtype) + jacobian.sum(0).to(d.dtype)


class _AuxiliaryAware:
    """What the three wrappers share: the inner balancer, which of the K tasks are auxiliary,
    and the inner balancer's view of a step (its main rows, their labelled mask)."""

    inner: Balancer
    auxiliary_names: tuple[str, ...]
    rule: str
    main_rows: Tensor
    auxiliary_rows: Tensor

    def _init(self, inner: Balancer, auxiliary: Sequence[str], rule: str) -> None:
        if rule not in RULES[1:]:
            raise ValueError(f"auxiliary rule must be 'gated' or 'projected', got {rule!r}")
        self.inner, self.auxiliary_names, self.rule = inner, tuple(auxiliary), rule

    def _setup_rows(self, task_names: Sequence[str]) -> list[str]:
        unknown = sorted(set(self.auxiliary_names) - set(task_names))
        if unknown:
            raise ValueError(f"auxiliary tasks {unknown} are not among the tasks {task_names}")
        main = [n for n in task_names if n not in self.auxiliary_names]
        if not main:
            raise ValueError(
                "every task is auxiliary: auxiliary-aware gradients need a main task to align "
                "with (set training.auxiliary_gradients: plain)"
            )
        self.main_rows = torch.tensor([i for i, n in enumerate(task_names) if n in main])
        self.auxiliary_rows = torch.tensor(
            [i for i, n in enumerate(task_names) if n in self.auxiliary_names]
        )
        return main

    def epoch_end(self) -> None:
        """The inner balancer's window closes with the wrapper's (e.g. DWA's loss ratios)."""
        self.inner.epoch_end()

    def _main_labelled(self, labelled: Tensor | None) -> Tensor | None:
        return None if labelled is None else labelled[self.main_rows.to(labelled.device)]

    def extra_repr(self) -> str:
        return f"rule={self.rule!r}, auxiliary={list(self.auxiliary_names)}"


class AuxiliaryAwareGramian(_AuxiliaryAware, GramianBalancer):
    """A Gramian or loss-weighting balancer on the main tasks, with the auxiliary tasks'
    gradients gated or projected (c from G, so every Gramian gradient mode serves it)."""

    labelled_subproblem = False  # it hands the inner balancer the main rows itself

    def __init__(self, inner: Balancer, auxiliary: Sequence[str], rule: str) -> None:
        GramianBalancer.__init__(self)
        self._init(inner, auxiliary, rule)

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.inner.setup(self._setup_rows(task_names))

    def _main_coefficients(self, info: GradientInfo) -> Tensor:
        """The inner balancer's coefficients on the main tasks (bilevel: plus g_val's last)."""
        rows = self.main_rows.to(info.losses.device)
        losses = info.losses.index_select(0, rows)
        with self.inner.labelled_tasks(self._main_labelled(self.labelled)):
            if isinstance(self.inner, GramianBalancer):
                gram = info.require_gramian()
                at = rows.to(gram.device)
                products = info.val_products
                sub = GradientInfo(
                    losses,
                    gramian=gram.index_select(0, at).index_select(1, at),
                    val_products=None if products is None else products[rows.to(products.device)],
                )
                return _coefficients(self.inner, sub).double()
            return self._loss_weights(losses)

    def _loss_weights(self, losses: Tensor) -> Tensor:
        """∂combine/∂L_k at `losses`: the loss weighting's gradient is exactly Σ_k c_k g_k; its
        own learnable weights get their gradients as a backward of `combine` would give them."""
        probe = losses.detach().clone().requires_grad_(True)
        params = [p for p in self.inner.parameters() if p.requires_grad]
        with torch.enable_grad():
            grads = torch.autograd.grad(
                self.inner.combine(probe), [probe, *params], allow_unused=True
            )
        _accumulate(params, grads[1:])
        weights = grads[0]
        return (torch.zeros_like(probe) if weights is None else weights).double()

    def coefficients(self, info: GradientInfo) -> Tensor:
        gram = info.require_gramian()
        inner = self._main_coefficients(info)
        m = len(self.main_rows)
        c = auxiliary_coefficients(
            gram, inner[:m], self.main_rows.to(gram.device),
            self.auxiliary_rows.to(gram.device), self.rule,
        )  # fmt: skip
        return torch.cat([c, inner[m:].to(c)])  # a bilevel method's g_val weight stays last


class AuxiliaryAwareBilevel(AuxiliaryAwareGramian, BilevelBalancer):
    """`AuxiliaryAwareGramian` for a bilevel balancer (the step then provides g_k · g_val)."""


class AuxiliaryAwareJacobian(_AuxiliaryAware, JacobianBalancer):
    """A coordinate-wise balancer on the main rows of J, with the auxiliary rows gated or
    projected against its combined main update."""

    labelled_subproblem = False

    def __init__(self, inner: JacobianBalancer, auxiliary: Sequence[str], rule: str) -> None:
        JacobianBalancer.__init__(self)
        self._init(inner, auxiliary, rule)

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self.inner.setup(self._setup_rows(task_names))

    def aggregate(self, info: GradientInfo) -> Tensor:
        jac = info.jacobian
        if jac is None:
            raise ValueError("aggregate needs the Jacobian")
        rows = self.main_rows.to(jac.device)
        main_jac = jac.index_select(0, rows)
        losses = info.losses.index_select(0, rows.to(info.losses.device))
        with self.inner.labelled_tasks(self._main_labelled(self.labelled)):
            sub = GradientInfo(losses, jacobian=main_jac)
            main, _ = _combine(self.inner, sub, main_jac, fit_weights=False)
        auxiliary = jac.index_select(0, self.auxiliary_rows.to(jac.device))
        return auxiliary_combination(auxiliary, main, self.rule)


def auxiliary_mode_refusal(rule: str, mode: GradientMode, tasks: Sequence[Task]) -> str | None:
    """Why `rule` cannot work in gradient `mode` for these tasks (None: it can): a mode on the
    representation's rows gives a self-supervised task's gradient on its own derived rows
    only, so its cosine with the main tasks' is always 0."""
    derived = [t.name for t in tasks if t.kind_spec.derives_targets]
    if rule == "plain" or not derived or not mode.row_space:
        return None
    return (
        f"auxiliary_gradients {rule!r} weighs each auxiliary task's gradient against the main "
        f"tasks', which gradient_mode {mode.name!r} takes on the shared representation's rows, "
        f"where the self-supervised tasks {derived} have rows of their own: every cosine would "
        "be 0; set training.gradient_mode to jacobian or gramian (a balancer that needs the "
        "representation, mgda_ub, cannot), or auxiliary_gradients: plain"
    )


def auxiliary_aware(balancer: Balancer, auxiliary: Sequence[str], rule: str) -> Balancer:
    """`balancer` combining the main tasks only, each auxiliary task's gradient (tasks
    `auxiliary`, by name) joined under `rule` ("gated" or "projected"); the balancer itself
    for "plain" or no auxiliary task. Call before `setup` (the Trainer does this)."""
    if rule not in RULES:
        raise ValueError(f"auxiliary_gradients must be one of {', '.join(RULES)}, got {rule!r}")
    if rule == "plain" or not auxiliary:
        return balancer
    if isinstance(balancer, BilevelBalancer) and balancer.steps_on_validation:
        raise ValueError(
            f"auxiliary_gradients {rule!r} weighs each auxiliary task's gradient against the "
            f"main tasks' update, which {type(balancer).__name__} often takes from the "
            "validation gradient alone (its task weights 0): every auxiliary gradient would "
            "then join whole; use auxiliary_gradients: plain, or another balancer"
        )
    wrapper: type[Balancer]
    if isinstance(balancer, JacobianBalancer):
        wrapper = AuxiliaryAwareJacobian
    elif isinstance(balancer, BilevelBalancer):
        wrapper = AuxiliaryAwareBilevel
    else:
        wrapper = AuxiliaryAwareGramian
    flags = {  # what planning reads of the inner balancer, on the wrapper's class
        "preferred_mode": balancer.preferred_mode,
        "updates_state": balancer.updates_state,
        "keeps_gradient_state": getattr(balancer, "keeps_gradient_state", False),
    }
    named = type(f"{wrapper.__name__}[{type(balancer).__name__}]", (wrapper,), flags)
    return cast(Balancer, named(balancer, auxiliary, rule))
