"""The machinery the gradient modes share: batched backwards, Gramians, the heads' gradients
with respect to the shared representation (plain or factored), and applying a combination.

Nothing here names a mode; each mode (`_jacobian.py`, `_gramian.py`, ...) composes these.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polytask.balancers._base import (
    Balancer,
    GradientInfo,
    GramianBalancer,
    JacobianBalancer,
    weighted_sum,
)

Reduce = Callable[[Tensor], Tensor]
"""A cross-process reduction applied to per-task gradient blocks before G is formed."""


@dataclass(frozen=True)
class Segment:
    """One trunk block for the Gramian path: `output = module(input)` with its parameters."""

    input: Tensor
    output: Tensor
    params: tuple[Tensor, ...]
    module: nn.Module | None = None


@dataclass(frozen=True)
class BackwardResult:
    """What one engine call did: the effective task weights and what it held in memory."""

    weights: Tensor | None
    """Coefficients c (K,) of the task gradients in the shared update (detached); for methods
    that act on J coordinate-wise, the least-squares fit of their update, or None when
    `fit_weights=False` skipped that fit."""
    mode: str
    held_floats: int
    """The largest block of per-task gradients held at once (floats)."""
    gramian: Tensor | None = None
    """G = J Jᵀ (K, K, float64) of every task's gradient in the mode's space, when the step
    formed it anyway (Gramian methods; coordinate-wise ones when fitting their weights): what
    the gradient-conflict monitor reads at no extra cost. None otherwise."""


class GramianTap:
    """Catches the Gramian the engine forms during one backward (see `observe_gramian`)."""

    value: Tensor | None = None


@contextmanager
def observe_gramian(balancer: Balancer) -> Iterator[GramianTap]:
    """Within the block, the full (K, K) Gramian the engine hands `balancer` (before any
    restriction to the labelled tasks) is kept in the yielded tap."""
    slots = vars(balancer)  # a plain attribute, outside the module's parameters and state
    tap, before = GramianTap(), slots.get("_gramian_tap")
    slots["_gramian_tap"] = tap
    try:
        yield tap
    finally:
        slots["_gramian_tap"] = before


def _observe(balancer: Balancer, gramian: Tensor | None) -> None:
    tap = vars(balancer).get("_gramian_tap")
    if tap is not None and gramian is not None:
        tap.value = gramian.detach()


def record_segments(
    modules: Iterable[nn.Module], x: Tensor, track: bool = True
) -> tuple[Tensor, list[Segment]]:
    """Run `x` through `modules` in order, keeping each block's input and output.

    `track=False` runs them without autograd: `backward(mode="jacobian", segments=...)` then
    walks the task gradients back by hand (`walk.walkable` says which trunks it can walk).
    """
    segments: list[Segment] = []
    h = x
    owners: dict[int, int] = {}
    with torch.set_grad_enabled(track and torch.is_grad_enabled()):
        for i, module in enumerate(modules):
            for p in set(module.parameters()):
                if owners.setdefault(id(p), i) != i:
                    raise ValueError(
                        f"blocks {owners[id(p)]} and {i} ({type(module).__name__}) share a "
                        "parameter (a layer applied twice, or tied weights): the segments' "
                        "per-block gradients would miss the cross terms; use mode='jacobian' "
                        "on the whole graph instead of segments"
                    )
            inp = h
            # an in-place block (ReLU(inplace=True)) would overwrite the input kept for it
            given = inp.clone() if getattr(module, "inplace", False) else inp
            version = given._version
            h = module(given)
            if given._version != version and given is inp:
                raise ValueError(
                    f"block {i} ({type(module).__name__}) changes its input in place, which "
                    "the segments keep for the backward pass: make its first in-place "
                    "operation out of place (e.g. inplace=False)"
                )
            params = tuple(p for p in module.parameters() if p.requires_grad)
            segments.append(Segment(inp, h, params, module))
    return h, segments


def jacobian_floats(num_tasks: int, shared_params: Sequence[Tensor]) -> int:
    """How many floats J holds (K × n): what the exact Jacobian path keeps in memory."""
    return num_tasks * sum(p.numel() for p in shared_params)


def split_features(features: Tensor, num_tasks: int) -> list[Tensor]:
    """One detached leaf per task for the heads to read, so that a single ordinary backward
    through the heads yields every task's gradient with respect to the representation."""
    return [features.detach().requires_grad_(True) for _ in range(num_tasks)]


def linear_task_features(
    features: Tensor, layers: Sequence[nn.Linear]
) -> tuple[list[Tensor], list[Tensor]]:
    """Each task's first linear layer on the detached representation, and those layers' weights.

    Pass them to `backward` as `task_features=` and `task_maps=`; the rest of each head reads
    its output u_k, and the layer's own parameters get their ordinary gradients.
    """
    z = features.detach()
    return [F.linear(z, layer.weight, layer.bias) for layer in layers], [
        layer.weight for layer in layers
    ]


def apply_cotangent(features: Tensor, shared: Sequence[Tensor], cotangent: Tensor) -> None:
    """One ordinary trunk backward of the combined cotangent on z."""
    _accumulate(shared, torch.autograd.grad(features, shared, cotangent, allow_unused=True))


def _combined(c: Tensor, dz: Tensor | None, factored: _Factored | None) -> Tensor:
    """Σ_k c_k ∂L_k/∂z, from the factors when there are some (cheaper than from dz)."""
    if factored is not None:
        return factored.combined(c)
    assert dz is not None
    return weighted_sum(c.to(dz.dtype), dz.reshape(dz.shape[0], -1)).view(dz.shape[1:])


def _representation_grads(
    losses: Tensor,
    features: Tensor,
    task_features: Sequence[Tensor] | None,
    heads: Sequence[Tensor],
) -> Tensor:
    """∂L_k/∂z for every task (K, *z.shape); the heads get their ordinary gradients."""
    k = losses.shape[0]
    if task_features is not None:
        if len(task_features) != k:
            raise ValueError(
                f"task_features must have one tensor per task ({k}), got {len(task_features)}"
            )
        grads = _filled(
            torch.autograd.grad(losses.sum(), [*task_features, *heads], allow_unused=True),
            task_features,
        )
        _accumulate(heads, grads[k:])
        return torch.stack(grads[:k])  # type: ignore[arg-type]
    eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
    dz, *head_grads = batched_grads(losses, [features, *heads], eye)
    _accumulate(heads, [None if g is None else g.sum(0) for g in head_grads])
    return _filled((dz,), (features,), k)[0]  # type: ignore[return-value]


def _factor_grads(
    losses: Tensor,
    features: Tensor,
    task_features: Sequence[Tensor] | None,
    task_maps: Sequence[Tensor],
    heads: Sequence[Tensor],
) -> list[Tensor]:
    """g_k = ∂L_k/∂u_k as (N, o_k), with ∂L_k/∂z = g_k W_k; the heads get ordinary gradients."""
    k = losses.shape[0]
    if task_features is None or len(task_features) != k or len(task_maps) != k:
        raise ValueError(
            f"task_maps needs one map and one task feature per task ({k}): build both with "
            "polytask.gradients.linear_task_features(z, first_layers)"
        )
    for u, w in zip(task_features, task_maps, strict=True):
        if w.dim() != 2 or w.shape[1] != features.shape[-1] or u.shape[-1] != w.shape[0]:
            raise ValueError(
                f"task map of shape {tuple(w.shape)} does not take z (last dim "
                f"{features.shape[-1]}) to its task feature (last dim {u.shape[-1]}): pass each "
                "head's first nn.Linear weight, shape (out, d), in task order"
            )
    grads = _filled(
        torch.autograd.grad(losses.sum(), [*task_features, *heads], allow_unused=True),
        task_features,
    )
    _accumulate(heads, grads[k:])
    return [g.reshape(-1, g.shape[-1]) for g in grads[:k]]  # type: ignore[union-attr]


@dataclass(frozen=True)
class _Factored:
    """∂L_k/∂z = g_k W_k for every task, kept as the concatenated factors: `g` (N, O) and `w`
    (O, d) with O = Σ_k o_k, `owner` the task of each of the O rows."""

    g: Tensor
    w: Tensor
    owner: Tensor
    sizes: tuple[int, ...]
    shape: torch.Size

    @classmethod
    def of(
        cls, factors: Sequence[Tensor], task_maps: Sequence[Tensor], features: Tensor
    ) -> _Factored:
        g = torch.cat(list(factors), dim=1)
        sizes = tuple(int(w.shape[0]) for w in task_maps)
        owner = torch.repeat_interleave(
            torch.arange(len(sizes), device=g.device), torch.tensor(sizes, device=g.device)
        )
        w = torch.cat([m.detach() for m in task_maps], dim=0).to(g.dtype)
        return cls(g, w, owner, sizes, features.shape)

    @property
    def held(self) -> int:
        return self.g.numel() + self.w.numel()

    def gramian(self, k: int) -> Tensor:
        """G_kl = Σ over the rows of tasks k and l of (g_kᵀ g_l) ∘ (W_k W_lᵀ)."""
        rows = (self.g.T @ self.g).double() * (self.w @ self.w.T).double()
        if len(self.owner) == k:
            return rows
        member = F.one_hot(self.owner, k).to(rows.dtype)  # (O, K)
        return member.T @ rows @ member

    def expand(self, k: int) -> Tensor:
        """Every task's ∂L_k/∂z, written straight into one (K, *z.shape) tensor."""
        out = self.g.new_empty((k, *self.shape))
        rows = out.view(k, -1, self.shape[-1])
        pairs = zip(self.g.split(self.sizes, dim=1), self.w.split(self.sizes), strict=True)
        for i, (g, w) in enumerate(pairs):
            torch.mm(g, w, out=rows[i])
        return out

    def combined(self, c: Tensor) -> Tensor:
        """Σ_k c_k g_k W_k as one product."""
        return ((self.g * c.to(self.g.dtype)[self.owner]) @ self.w).view(self.shape)


def _task_params(
    losses: Tensor, shared: Sequence[Tensor], task_params: Iterable[Tensor] | None
) -> list[Tensor]:
    if task_params is not None:
        return [p for p in task_params if p.requires_grad]
    shared_ids = {id(p) for p in shared}
    found: dict[int, Tensor] = {}
    for node in graph_nodes(losses.grad_fn):
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor) and id(variable) not in shared_ids:
            found[id(variable)] = variable
    return list(found.values())


def graph_nodes(root: Any) -> Iterator[Any]:
    """Every node of the autograd graph behind `root` (a grad_fn), once each, depth first."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(nxt for nxt, _ in node.next_functions)


def _batched_grad(
    outputs: Tensor, inputs: Sequence[Tensor], cotangents: Tensor, retain: bool = True
) -> tuple[Tensor, ...]:
    """`batched_grads` with zeros for an input the outputs do not reach."""
    grads = batched_grads(outputs, inputs, cotangents, retain)
    return _filled(grads, inputs, cotangents.shape[0])  # type: ignore[return-value]


def batched_grads(
    outputs: Tensor, inputs: Sequence[Tensor], cotangents: Tensor, retain: bool = True
) -> tuple[Tensor | None, ...]:
    """The gradients of `outputs` along each row of `cotangents` (n, ...), stacked (n, *p.shape)
    per input; None for an input the outputs do not reach."""
    if not inputs:
        return ()
    n = cotangents.shape[0]
    grads: tuple[Tensor | None, ...]
    if outputs.device.type == "cpu":
        # on CPU, n ordinary backward passes beat one vmapped backward (0.66–0.89 of its time
        # for an MLP at K = 2 to 32 and a CNN at K = 3, and less memory: one row's
        # intermediate gradients at a time); on an accelerator, one batched pass launches fewer
        # kernels
        rows = [
            torch.autograd.grad(outputs, list(inputs), grad_outputs=cotangents[i],
                                retain_graph=retain or i < n - 1, allow_unused=True)
            for i in range(n)
        ]  # fmt: skip
        grads = tuple(
            None if rows[0][j] is None else torch.stack([row[j] for row in rows])
            for j in range(len(inputs))
        )
    else:
        grads = torch.autograd.grad(
            outputs,
            list(inputs),
            grad_outputs=cotangents,
            is_grads_batched=True,
            retain_graph=retain,
            allow_unused=True,
        )
    return tuple(grads)


def _filled(
    grads: Sequence[Tensor | None], inputs: Sequence[Tensor], n: int | None = None
) -> tuple[Tensor | None, ...]:
    """Zeros (n rows of them when batched) for the first len(inputs) grads that are None,
    the rest as they are. materialize_grads would give one unbatched zero tensor, misaligning
    J's blocks, and would hand parameters no loss reaches a zero `.grad` (AdamW then decays
    them, where a plain backward leaves them alone)."""
    shape = () if n is None else (n,)
    head = tuple(
        torch.zeros((*shape, *p.shape), dtype=p.dtype, device=p.device) if g is None else g
        for g, p in zip(grads, inputs, strict=False)
    )
    return (*head, *grads[len(inputs) :])


def _gramian(blocks: Sequence[Tensor]) -> Tensor:
    """G = Σ_b J_b J_bᵀ over per-parameter blocks (K, n_b), in float64."""
    k = blocks[0].shape[0]
    gramian = torch.zeros(k, k, dtype=torch.float64, device=blocks[0].device)
    for b in blocks:
        gramian += row_gramian(b)
    return gramian


_GRAM_CHUNK = 8192
"""Columns per chunk when a CPU Gramian is summed from chunk products (see `row_gramian`)."""


def row_gramian(rows: Tensor) -> Tensor:
    """R Rᵀ (K, K) in float64 for R (K, n).

    On CPU a long R is cut into chunks of columns whose K × K products come from one batched
    matmul and are summed in float64: 1.1–1.6× faster than one (K, n) @ (n, K) product at
    K = 2 and K ≥ 16 (that product parallelises poorly over its long inner dimension).
    """
    k, n = rows.shape
    chunks = n // _GRAM_CHUNK
    if rows.device.type != "cpu" or chunks < 2:
        return (rows @ rows.T).double()
    body = rows[:, : chunks * _GRAM_CHUNK].reshape(k, chunks, _GRAM_CHUNK).transpose(0, 1)
    gramian = torch.bmm(body, body.transpose(1, 2)).sum(0, dtype=torch.float64)
    if chunks * _GRAM_CHUNK < n:
        tail = rows[:, chunks * _GRAM_CHUNK :]
        gramian += (tail @ tail.T).double()
    return gramian


def _info(balancer: Balancer, losses: Tensor, jac: Tensor) -> GradientInfo:
    gramian = row_gramian(jac) if isinstance(balancer, GramianBalancer) else None
    jacobian = jac if isinstance(balancer, JacobianBalancer) else None
    return GradientInfo(losses, gramian=gramian, jacobian=jacobian)


def _coefficients(balancer: Balancer, info: GradientInfo) -> Tensor:
    if not isinstance(balancer, GramianBalancer):
        raise TypeError(f"{type(balancer).__name__} does not produce Gramian coefficients")
    read = check_task_gradients(balancer, info)
    _observe(balancer, info.gramian)
    with _gradients_only(balancer, info, read):
        rows = _labelled_rows(balancer)
        if rows is None:
            c = balancer.coefficients(info)
        else:  # the method on the labelled tasks alone; the others weigh 0
            with balancer.labelled_tasks(None):
                sub = balancer.coefficients(_restrict(info, rows))
            k, m = info.losses.shape[0], rows.shape[0]
            c = sub.new_zeros(k + len(sub) - m)  # a bilevel method's g_val weight stays last
            c[rows.to(sub.device)] = sub[:m]
            c[k:] = sub[m:]
    k = info.losses.shape[0]
    allowed = (k, k + 1) if info.val_products is not None else (k,)
    if c.shape not in [(n,) for n in allowed]:
        raise ValueError(
            f"{type(balancer).__name__}.coefficients returned shape {tuple(c.shape)}; "
            f"expected {' or '.join(f'({n},)' for n in allowed)}"
        )
    _check_finite(balancer, c, "coefficients")
    return c


def _combine(
    balancer: Balancer, info: GradientInfo, jac: Tensor, fit_weights: bool = True
) -> tuple[Tensor, Tensor | None]:
    """The combined gradient and the effective coefficients (least squares for J methods)."""
    if isinstance(balancer, JacobianBalancer):
        read = check_task_gradients(balancer, info)
        with _gradients_only(balancer, info, read):
            rows = _labelled_rows(balancer)
            if rows is None:
                combined = balancer.aggregate(info)
            else:
                with balancer.labelled_tasks(None):
                    combined = balancer.aggregate(_restrict(info, rows))
        _check_finite(balancer, combined, "combined gradient")
        if not fit_weights:
            return combined, None
        gram = info.gramian if info.gramian is not None else row_gramian(jac)
        _observe(balancer, gram)
        return combined, _effective_weights(jac, combined, gram)
    c = _coefficients(balancer, info)
    return weighted_sum(c.to(jac.dtype), jac), c.detach().float()


@contextmanager
def _gradients_only(balancer: Balancer, info: GradientInfo, read: list[float]) -> Iterator[None]:
    """Within the block, a labelled task whose gradient is exactly zero (its loss does not
    reach the shared parameters, e.g. a head-only regulariser) counts as unlabelled, with a
    warning: its zero row would otherwise be an observation (MGDA's min-norm point of a hull
    holding 0 is 0, a zero update; Nash-MTL's weight 1/0). `read`: each task's G diagonal or J
    row sum as `check_task_gradients` read them, so the common case costs nothing more."""
    if not any(v == 0 for v in read):
        yield
        return
    zero = torch.tensor([v == 0 for v in read])
    if info.gramian is None and info.jacobian is not None:  # a zero row sum: is the row zero?
        zero &= (info.jacobian == 0).all(1).cpu()
    labelled = balancer.labelled
    given = torch.ones_like(zero) if labelled is None else labelled.to(zero.device)
    left = given & ~zero
    if bool((left == given).all()) or not bool(left.any()):
        yield
        return
    names = task_labels(balancer, zero.shape[0])
    flat = [names[i] for i in (given & zero).nonzero().flatten().tolist()]
    warnings.warn(
        f"{type(balancer).__name__}: the gradient of task(s) {flat} on the shared parameters is "
        "exactly zero on this batch, so they are left out of the balancing of its shared "
        "update, as tasks the batch does not label are (a loss saturated on its few labelled "
        "rows: a confident logit whose probability rounds to its label; or a loss that does "
        "not reach the shared parameters)",
        stacklevel=4,
    )
    with balancer.labelled_tasks(left.to(labelled.device if labelled is not None else "cpu")):
        yield


def _labelled_rows(balancer: GramianBalancer | JacobianBalancer) -> Tensor | None:
    """Indices of the tasks the step's batch labelled, when the method is to see only those
    (`labelled_subproblem`); None to give it every row (all labelled, or it holds per-task
    state and reads `Balancer.labelled` itself)."""
    labelled = balancer.labelled
    if labelled is None or not balancer.labelled_subproblem or not bool(labelled.any()):
        return None
    return labelled.nonzero().squeeze(1)


def _restrict(info: GradientInfo, rows: Tensor) -> GradientInfo:
    """`info` for the tasks `rows` only (an unlabelled task's zero row and zero loss would
    otherwise count as an observation: MGDA's min-norm point of a hull holding 0 is 0)."""

    def pick(t: Tensor | None, both: bool = False) -> Tensor | None:
        if t is None:
            return None
        at = rows.to(t.device)
        t = t.index_select(0, at)
        return t.index_select(1, at) if both else t

    return GradientInfo(
        losses=info.losses.index_select(0, rows.to(info.losses.device)),
        gramian=pick(info.gramian, both=True),
        jacobian=pick(info.jacobian),
        val_products=pick(info.val_products),
        val_gradient=info.val_gradient,
    )


def _effective_weights(jac: Tensor, combined: Tensor, gram: Tensor | None = None) -> Tensor:
    """The c with Jᵀ c closest to `combined` (only for logging coordinate-wise methods):
    the normal equations G c = J d, a K × K solve instead of a least-squares fit on n rows."""
    gram = row_gramian(jac) if gram is None else gram
    rhs = (jac @ combined).double().unsqueeze(1)
    return torch.linalg.lstsq(gram, rhs).solution.squeeze(1).float()


def _accumulate(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        g = g.reshape(p.shape).to(p.dtype)
        if p.grad is None:  # autograd outputs and products here are fresh tensors: no copy
            p.grad = g
        else:
            p.grad.add_(g)


def _split(flat: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    chunks = flat.split([p.numel() for p in params])
    return [chunk.view(p.shape) for chunk, p in zip(chunks, params, strict=True)]


def _reduce(t: Tensor, reduce: Reduce | None) -> Tensor:
    return t if reduce is None else reduce(t)


_FEW_FLOATS = 256
"""Up to this many values (task coefficients) are checked in Python, without tensor kernels."""


class NonFiniteError(FloatingPointError):
    """A task's loss or gradient is NaN or infinite; raised before the balancer sees it, so
    every method fails alike and none takes the values into its state.

    `what` is "loss" or "gradient"; `tasks` names the tasks (`balancer.task_names` once set
    up, else "task i")."""

    def __init__(self, what: str, tasks: Sequence[str], hint: str = "") -> None:
        self.what, self.tasks = what, list(tasks)
        super().__init__(f"non-finite {what} in task(s) {self.tasks}{hint}")


def task_labels(balancer: Balancer, k: int) -> list[str]:
    """The balancer's task names when it was set up for these K tasks, else "task i"."""
    names = balancer.task_names
    return list(names) if len(names) == k else [f"task {i}" for i in range(k)]


def check_finite_losses(balancer: Balancer, losses: Tensor, labelled: Tensor | None = None) -> None:
    """Raise `NonFiniteError` naming the tasks whose loss is NaN or infinite (one sync); when
    they are all tasks the batch does not label, say how to give those a loss of 0."""
    values = losses.detach().double().reshape(-1).tolist()
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    mask = labelled if labelled is not None and labelled.shape == losses.shape else None
    if bad and mask is not None and not any(bool(mask[i]) for i in bad):
        names = task_labels(balancer, len(values))
        raise NonFiniteError(
            "loss",
            [names[i] for i in bad],
            ", which the batch does not label: an unlabelled task's loss must be a finite 0 "
            "(the mean of no rows is NaN), e.g. (error * mask).sum() / mask.sum().clamp_min(1)",
        )
    _raise_non_finite(balancer, values, [])
    method = balancer
    while not method.positive_losses and isinstance(getattr(method, "inner", None), Balancer):
        method = method.inner  # type: ignore[assignment]  # a wrapper (auxiliary tasks)
    negative = [i for i, v in enumerate(values) if v < 0]
    if method.positive_losses and negative:
        names = task_labels(balancer, len(values))
        raise ValueError(
            f"{type(method).__name__} needs losses >= 0 ({method.positive_losses}), and "
            + ", ".join(f"{names[i]}'s is {values[i]:.4g}" for i in negative)
            + ": shift that loss by a constant (a Gaussian NLL by its lower bound), or use a "
            "method that reads the losses' gradients only (ew, upgrad, mgda, ...)"
        )


def check_combined_gradient(balancer: Balancer, params: Sequence[Tensor]) -> None:
    """Raise `NonFiniteError` when the gradient a loss weighting wrote into the shared
    parameters' `.grad` is NaN or infinite though every loss was finite (one sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or math.isfinite(float(torch.stack([g.sum(dtype=torch.float64)
                                                     for g in grads]).sum())):  # fmt: skip
        return
    names = task_labels(balancer, balancer.num_tasks) if balancer.num_tasks else ["every task"]
    raise NonFiniteError(
        "gradient",
        names,
        f": {type(balancer).__name__} weighs the losses and back-propagates their sum, so the "
        "task is not known: the shared parameters' gradient is NaN or infinite though the "
        "losses are finite (a derivative in some task's loss or head is: sqrt, log or pow at "
        "0?), or it overflows. `.grad` holds it now: zero the gradients "
        "(optimizer.zero_grad()) and skip this step",
    )


def check_task_gradients(balancer: Balancer, info: GradientInfo) -> list[float]:
    """Raise `NonFiniteError` before `balancer` runs when a task's loss, gradient (its Gramian
    row or Jacobian row) or the validation gradient is NaN or infinite: one sync of O(K) values.
    Returns what it read of each task's gradient (G's diagonal, or J's row sums; none without
    either), which `_gradients_only` reads for zero rows.

    Without it, NaN reaches the balancers' solvers (LAPACK asserts, misleading eigh errors) or
    is written silently into `.grad` and the balancers' running state."""
    parts = [info.losses.detach().reshape(-1)]
    if info.gramian is not None:  # |G_kl| ≤ √(G_kk G_ll): the diagonal and the sum settle it
        g = info.gramian.detach()
        parts += [g.diagonal(), g.sum().reshape(1)]
    elif info.jacobian is not None:  # a row sum is not finite iff a row entry is not (or overflows)
        parts.append(info.jacobian.detach().sum(1))
    if info.val_products is not None:
        parts.append(info.val_products.detach().reshape(-1))
    if all(p.device.type == "cpu" for p in parts):  # a few floats each: no kernel to join them
        rest = [v for p in parts[1:] for v in p.tolist()]
        losses = parts[0].tolist()
    else:  # one transfer, one sync
        device = parts[0].device
        values = torch.cat([p.to(device, torch.float64) for p in parts]).tolist()
        losses, rest = values[: len(parts[0])], values[len(parts[0]) :]
    _raise_non_finite(balancer, losses, rest, info)
    return rest[: len(losses)] if info.gramian is not None or info.jacobian is not None else []


def _raise_non_finite(
    balancer: Balancer, losses: list[float], rest: list[float], info: GradientInfo | None = None
) -> None:
    if all(math.isfinite(v) for v in losses) and all(math.isfinite(v) for v in rest):
        return
    k = len(losses)
    names = task_labels(balancer, k)
    bad = [names[i] for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        raise NonFiniteError(
            "loss",
            bad,
            f" (values {[v for v in losses if not math.isfinite(v)]}), before "
            f"{type(balancer).__name__} ran: check that task's targets and loss (a log or a "
            "division at 0?), lower the learning rate or clip gradients",
        )
    assert info is not None
    rows = _non_finite_rows(info)
    if rows:
        spread = (
            "; one task's infinite derivative can make every row NaN in the batched backward "
            "(0·inf), so look for the task whose loss has one"
            if len(rows) == k > 1
            else ""
        )
        raise NonFiniteError(
            "gradient",
            [names[i] for i in rows],
            f", though the losses are finite, before {type(balancer).__name__} ran: a derivative "
            "in that task's loss or head is NaN or infinite (sqrt, log or pow at 0?) or the "
            f"gradient overflows{spread}",
        )
    if info.val_products is not None and not bool(torch.isfinite(info.val_products).all()):
        raise NonFiniteError(
            "gradient",
            ["validation"],
            f" (the validation loss's gradient), before {type(balancer).__name__} ran: check "
            "the validation batch's targets and loss",
        )


def _non_finite_rows(info: GradientInfo) -> list[int]:
    """The tasks whose gradient is not finite (only on the error path: exact per-row checks)."""
    if info.gramian is not None:
        g = info.gramian.detach()
        diagonal = ~torch.isfinite(g.diagonal())
        rows = diagonal if bool(diagonal.any()) else ~torch.isfinite(g).all(1)
    elif info.jacobian is not None:
        rows = ~torch.isfinite(info.jacobian.detach()).all(1)
    else:
        return []
    return [int(i) for i in torch.nonzero(rows).reshape(-1).tolist()]


def _check_finite(balancer: Balancer, t: Tensor, what: str) -> None:
    if t.numel() <= _FEW_FLOATS:
        finite = all(math.isfinite(v) for v in t.reshape(-1).tolist())
    else:
        finite = bool(torch.isfinite(t).all())
    if not finite:
        raise FloatingPointError(
            f"{type(balancer).__name__} returned non-finite {what} {t.tolist()[:8]} from "
            "finite task losses and gradients (all task gradients zero?)"
        )


def head_gradients(
    losses: Tensor,
    features: Tensor,
    task_features: Sequence[Tensor] | None,
    task_maps: Sequence[Tensor] | None,
    heads: Sequence[Tensor],
    expand: bool = True,
) -> tuple[Tensor | None, _Factored | None]:
    """∂L_k/∂z for every task, from one ordinary backward through the heads (which get their
    plain gradients): factored as g_k W_k when `task_maps` are given (and expanded to
    (K, *z.shape) too when `expand`), else as one (K, *z.shape) tensor."""
    if task_maps is None:
        return _representation_grads(losses, features, task_features, heads), None
    factors = _factor_grads(losses, features, task_features, task_maps, heads)
    factored = _Factored.of(factors, task_maps, features)
    return (factored.expand(losses.shape[0]) if expand else None), factored
