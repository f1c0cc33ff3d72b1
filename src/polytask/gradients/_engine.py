"""The gradient engine: per-task gradients in one batched pass, combined by a balancer.

`backward(losses, shared_params, balancer)` is the whole public surface: it fills `.grad` of
the shared parameters with the balancer's combination and gives every task-specific parameter
its ordinary gradient. The engine looks only at `balancer.needs`, never at its name.

Modes (what the per-task gradients are taken with respect to, and what is held in memory):

- ``jacobian`` (exact, default): one batched backward of K unit cotangents gives
  J (K × n) of the shared parameters; the balancer's coefficients c come from G = J Jᵀ and the
  update Jᵀ c is a matrix product, with no second backward.
- ``gramian`` (exact, lean): walks the trunk segment by segment (`record_segments`), adding
  J_s J_sᵀ to G and freeing J_s, so only the largest segment's block is held (a linear layer's
  comes from the batch, ⟨(a aᵀ)δ_k, δ_l⟩, without forming J_s at all); one ordinary backward
  of Σ c_k L_k then applies c. Both exact modes walk a trunk of linear layers and elementwise
  activations by hand when its segments were recorded without autograd (`balancers.walk`).
- ``representation`` (approximate, cheap): gradients with respect to the shared representation
  (per-task head backwards only), then one ordinary trunk backward of the combined cotangent.
- ``last_layer`` (approximate): c from the Jacobian of the last shared parameter tensors only.
- ``subsample`` (approximate): c from the exact Jacobian on a random sub-batch (the trunk re-run
  on its rows), applied to the full batch with one ordinary backward.
- ``sketch`` (approximate, cheap): c from the Gramian of the trunk's last linear layer, sketched
  on its input side to `sketch_size` columns (`polytask.gradients._sketch`; exact for narrower
  layers), from the segments' tensors without a batched backward; one ordinary trunk backward.

With `features` (the representation z) and per-task leaves of it (`split_features`), every
mode starts with one ordinary backward through the heads, which gives ∂L_k/∂z for all k;
only the trunk then sees K cotangents. When every head starts with a linear layer W_k, pass
its outputs on z instead (`linear_task_features`): ∂L_k/∂z = (∂L_k/∂u_k) W_k then stays
factored, and representation mode builds G and the trunk's cotangent from the factors without
ever holding K copies of z's gradient (the cheap path for many tasks).

Distributed training: pass `reduce` (e.g. an all-reduce mean over processes); it is applied to
the Jacobian (or to each segment's block, or to the representation gradients) before the
Gramian is formed, so the Gramian is that of the global Jacobian, not a sum of local ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

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
from polytask.gradients._sketch import SKETCH_SIZE, sketch_gramian
from polytask.gradients._walk import check_covered, walk, walk_jacobian

Mode = Literal["jacobian", "gramian", "representation", "last_layer", "subsample", "sketch"]
_TASK_CHUNK = 8
LAST_PARAMS = 2
"""Parameter tensors of the `last_layer` mode by default (a linear layer's weight and bias)."""
MODES: tuple[str, ...] = get_args(Mode)
Reduce = Callable[[Tensor], Tensor]


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


def record_segments(
    modules: Iterable[nn.Module], x: Tensor, track: bool = True
) -> tuple[Tensor, list[Segment]]:
    """Run `x` through `modules` in order, keeping each block's input and output.

    `track=False` runs them without autograd: `backward(mode="jacobian", segments=...)` then
    walks the task gradients back by hand (`walk.walkable` says which trunks it can walk).
    """
    segments: list[Segment] = []
    h = x
    with torch.set_grad_enabled(track and torch.is_grad_enabled()):
        for module in modules:
            inp = h
            h = module(inp)
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


def backward(
    losses: Tensor,
    shared_params: Iterable[Tensor],
    balancer: Balancer,
    *,
    mode: Mode = "jacobian",
    features: Tensor | None = None,
    task_features: Sequence[Tensor] | None = None,
    task_params: Iterable[Tensor] | None = None,
    task_maps: Sequence[Tensor] | None = None,
    segments: Sequence[Segment] | None = None,
    probe_features: Tensor | None = None,
    val_loss: Tensor | None = None,
    last_params: int = LAST_PARAMS,
    sketch_size: int = SKETCH_SIZE,
    reduce: Reduce | None = None,
    fit_weights: bool = True,
) -> BackwardResult:
    """Back-propagate the task losses (K,) combined by `balancer`; grads accumulate in `.grad`.

    `task_params` default to every other leaf the losses reach. `features` is the shared
    representation z; when the heads read per-task leaves of it (`split_features`), pass them
    as `task_features` and the per-task gradients w.r.t. z cost one ordinary head backward.
    With `task_maps` (W_k, see `linear_task_features`) the `task_features` are u_k = z W_kᵀ + b_k
    and those gradients stay factored as (∂L_k/∂u_k) W_k.
    `segments` are the trunk blocks ending in z (gramian and sketch modes, see
    `record_segments`; in jacobian mode, blocks recorded with `track=False` are walked by
    hand, with the heads reading `task_features`); `sketch_size` the sketch's columns (sketch mode);
    `probe_features` the trunk's output on the batch's first rows (subsample mode); `val_loss`
    a validation loss for balancers that need `val_gradient`. `fit_weights=False` skips the
    least-squares fit of effective weights for coordinate-wise methods (two passes over J, only
    for logging; the Trainer fits them on a sample of steps).
    """
    if mode not in MODES:  # checked before anything is computed
        check_mode_supported(balancer, mode)
    if not isinstance(losses, Tensor) or losses.dim() != 1:
        got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"losses must be a vector tensor (K,), e.g. torch.stack(...); got {got}")
    if not isinstance(balancer, Balancer):
        raise TypeError(f"balancer must be a Balancer (make_balancer(name)), got {balancer!r}")
    given = [] if isinstance(shared_params, Tensor) else list(shared_params)
    if not given or not all(isinstance(p, Tensor) for p in given):
        raise TypeError(
            "shared_params must be an iterable of parameters, e.g. model.trunk.parameters()"
        )
    shared = [p for p in given if p.requires_grad]
    if not shared:
        raise ValueError("backward needs at least one shared parameter that requires grad")
    if not balancer.uses_gradients:
        balancer.combine(losses).backward()
        return BackwardResult(balancer.weights(losses.detach()), "losses", 0)
    if features is None and segments:
        features = segments[-1].output
    _check_mode(balancer, mode, features, segments, probe_features, val_loss)
    if features is not None and features.grad_fn is None and task_features is None:
        raise ValueError(
            "features= carry no autograd graph, so the heads must read task_features= "
            "(split_features(z, K) or linear_task_features(z, first_layers))"
        )
    if task_maps is not None and features is None:
        raise ValueError("task_maps= needs features= (the shared representation z they map)")
    heads = _task_params(losses, [*shared, *(task_features or ())], task_params)
    k = losses.shape[0]
    detached = losses.detach()

    if features is None:  # jacobian mode on the whole graph: one batched backward (vmap)
        eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
        grads = _batched_grad(losses, [*shared, *heads], eye, retain=val_loss is not None)
        _accumulate(heads, [g.sum(0) for g in grads[len(shared) :]])
        blocks = [_reduce(g.reshape(k, -1), reduce) for g in grads[: len(shared)]]
        del grads
        return _apply_jacobian(
            balancer, detached, blocks, shared, val_loss, reduce, mode, fit_weights
        )

    factored: _Factored | None = None
    dz: Tensor | None = None
    if task_maps is not None:
        factored = _Factored.of(_factor_grads(losses, features, task_features, task_maps, heads),
                                task_maps, features)  # fmt: skip
        if mode == "representation" and reduce is None and isinstance(balancer, GramianBalancer):
            c = _coefficients(balancer, GradientInfo(detached, gramian=factored.gramian(k)))
            _apply_cotangent(features, shared, factored.combined(c))
            return BackwardResult(c.detach().float(), mode, factored.held)
        if mode not in ("gramian", "sketch"):  # these read the factors, or expand them anew
            dz = factored.expand(k)
    else:
        dz = _representation_grads(losses, features, task_features, heads)
    if mode == "sketch":
        assert segments is not None
        factors = None if factored is None else (factored.g, factored.w, factored.owner)
        gramian, held = sketch_gramian(segments, sketch_size, k, dz, factors, reduce)
        c = _coefficients(balancer, GradientInfo(detached, gramian=gramian))
        _apply_cotangent(features, shared, _combined(c, dz, factored))
        return BackwardResult(c.detach().float(), mode, held)
    if mode == "gramian":
        assert segments is not None
        if features.grad_fn is None:  # recorded without autograd: G and the update by hand
            if reduce is not None:
                raise ValueError(
                    "reduce= needs the Gramian path's blocks before G is formed: record the "
                    "segments with track=True (the untracked walk forms G from the batch)"
                )
            if factored is not None:
                fresh = factored.expand(k)
            else:  # a copy the walk may overwrite: dz is still needed for the update
                assert dz is not None
                fresh = dz.clone()
            gramian, held = _walked_gramian(segments, fresh, shared)
            del fresh
            c = _coefficients(balancer, GradientInfo(detached, gramian=gramian))
            combined = _combined(c, dz, factored).unsqueeze(0)
            _accumulate(shared, [b[0] for b in walk_jacobian(segments, combined, shared)])
            return BackwardResult(c.detach().float(), mode, held)
        if factored is None:
            assert dz is not None
            gramian, held = _segment_gramian(segments, dz, reduce)
        else:  # a fresh expansion, which the walk may overwrite and let go
            gramian, held = _segment_gramian(segments, factored.expand(k), reduce, owned=True)
        c = _coefficients(balancer, GradientInfo(detached, gramian=gramian))
        _apply_cotangent(features, shared, _combined(c, dz, factored))
        return BackwardResult(c.detach().float(), mode, held)
    assert dz is not None
    if mode == "jacobian":
        summed: Tensor | None = None
        if features.grad_fn is None:  # recorded without autograd: walk the blocks by hand
            assert segments is not None  # _check_mode
            if isinstance(balancer, GramianBalancer):
                summed = torch.zeros(k, k, dtype=torch.float64, device=dz.device)

            def visit(block: Tensor) -> Tensor:
                block = _reduce(block, reduce)
                if summed is not None:  # while the block is still in cache
                    summed.add_(row_gramian(block))
                return block

            blocks = walk_jacobian(segments, dz, shared, visit)
        else:
            grads = _batched_grad(features, shared, dz, retain=val_loss is not None)
            blocks = [_reduce(g.reshape(k, -1), reduce) for g in grads]
            del grads
        return _apply_jacobian(
            balancer, detached, blocks, shared, val_loss, reduce, mode, fit_weights, summed
        )

    if mode == "representation":
        flat = _reduce(dz.reshape(k, -1), reduce)
        combined, fitted = _combine(balancer, _info(balancer, detached, flat), flat)
        _apply_cotangent(features, shared, combined.reshape(features.shape).to(features.dtype))
        return BackwardResult(fitted, mode, flat.numel())

    # last_layer, or subsample: the exact Jacobian on the first rows, re-run
    if mode == "last_layer":
        grads = _batched_grad(features, shared[-last_params:], dz)
    else:
        assert probe_features is not None
        rows = probe_features.shape[0]
        probe_dz = dz[:, :rows] * (features.shape[0] / rows)
        grads = _batched_grad(probe_features, shared, probe_dz, retain=False)
    blocks = [_reduce(g.reshape(k, -1), reduce) for g in grads]
    del grads
    held = sum(b.numel() for b in blocks)
    c = _coefficients(balancer, GradientInfo(detached, gramian=_gramian(blocks)))
    del blocks
    _apply_cotangent(features, shared, _combined(c, dz, factored))
    return BackwardResult(c.detach().float(), mode, held)


def _apply_cotangent(features: Tensor, shared: Sequence[Tensor], cotangent: Tensor) -> None:
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
        grads = torch.autograd.grad(
            losses.sum(), [*task_features, *heads], allow_unused=True, materialize_grads=True
        )
        _accumulate(heads, grads[k:])
        return torch.stack(grads[:k])
    eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
    grads = _batched_grad(losses, [features, *heads], eye)
    _accumulate(heads, [g.sum(0) for g in grads[1:]])
    return grads[0]


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
    grads = torch.autograd.grad(
        losses.sum(), [*task_features, *heads], allow_unused=True, materialize_grads=True
    )
    _accumulate(heads, grads[k:])
    return [g.reshape(-1, g.shape[-1]) for g in grads[:k]]


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


def _apply_jacobian(
    balancer: Balancer,
    losses: Tensor,
    blocks: Sequence[Tensor],
    shared: Sequence[Tensor],
    val_loss: Tensor | None,
    reduce: Reduce | None,
    mode: str,
    fit_weights: bool = True,
    gramian: Tensor | None = None,
) -> BackwardResult:
    """Combine J given as per-parameter blocks (K, n_p); Gramian methods never concatenate.
    `gramian` is G of those blocks when the caller summed it already."""
    held = sum(b.numel() for b in blocks)
    if isinstance(balancer, GramianBalancer):
        val_blocks: list[Tensor] = []
        products = None
        if val_loss is not None:
            g_val = torch.autograd.grad(val_loss, shared, allow_unused=True, materialize_grads=True)
            val_blocks = [_reduce(g.reshape(-1), reduce) for g in g_val]
            products = sum(
                (b.double() @ v.double() for b, v in zip(blocks, val_blocks, strict=True))
            )
        gramian = _gramian(blocks) if gramian is None else gramian
        info = GradientInfo(losses, gramian=gramian, val_products=products)  # type: ignore[arg-type]
        c = _coefficients(balancer, info)
        k = blocks[0].shape[0]
        cf = c.to(blocks[0].dtype)
        update = [weighted_sum(cf[:k], b) for b in blocks]
        if len(c) == k + 1:  # the last coefficient weighs the validation gradient (FORUM)
            update = [u + cf[k] * v for u, v in zip(update, val_blocks, strict=True)]
        _accumulate(shared, update)
        return BackwardResult(c[:k].detach().float(), mode, held)
    jac = torch.cat(list(blocks), dim=1)
    combined, fitted = _combine(balancer, _info(balancer, losses, jac), jac, fit_weights)
    _accumulate(shared, _split(combined, shared))
    return BackwardResult(fitted, mode, held)


def check_mode_supported(balancer: Balancer, mode: str) -> None:
    """Refuse a mode the balancer cannot work in, naming the modes it can (checked up front)."""
    name = type(balancer).__name__
    if mode not in MODES:
        raise ValueError(f"unknown engine mode {mode!r}; allowed: {', '.join(MODES)}")
    if "val_gradient" in balancer.needs and mode != "jacobian":
        raise ValueError(f"{name} needs mode='jacobian' (bilevel methods use parameter space)")
    if "jacobian" in balancer.needs and mode not in ("jacobian", "representation"):
        raise ValueError(
            f"{name} acts on the gradients themselves, so it needs mode='jacobian' or "
            f"'representation', not {mode!r}"
        )
    if mode == "representation" and getattr(balancer, "keeps_gradient_state", False):
        raise ValueError(f"{name} keeps per-task gradient state, so it needs mode='jacobian'")


def _check_mode(
    balancer: Balancer,
    mode: str,
    features: Tensor | None,
    segments: Sequence[Segment] | None,
    probe_features: Tensor | None,
    val_loss: Tensor | None,
) -> None:
    check_mode_supported(balancer, mode)
    if "val_gradient" in balancer.needs and val_loss is None:
        raise ValueError(
            f"{type(balancer).__name__} needs a validation loss: pass val_loss= (the Trainer does)"
        )
    if mode in ("gramian", "sketch") and not segments:
        raise ValueError(
            f"mode={mode!r} needs segments= (record them with "
            "polytask.gradients.record_segments(trunk_blocks, x))"
        )
    if mode == "jacobian" and features is not None and features.grad_fn is None and not segments:
        raise ValueError(
            "features= carry no autograd graph: record the trunk with "
            "record_segments(trunk_blocks, x, track=False) and pass segments=, or run it with "
            "autograd on"
        )
    untracked = features is not None and features.grad_fn is None
    if untracked and mode not in ("jacobian", "gramian"):
        raise ValueError(
            f"mode={mode!r} backpropagates through the trunk, but features= carry no autograd "
            "graph: record the segments with track=True (only the jacobian and gramian modes "
            "walk an untracked trunk)"
        )
    if mode != "jacobian" and features is None:
        raise ValueError(f"mode={mode!r} needs features= (the shared representation)")
    if mode == "subsample" and probe_features is None:
        raise ValueError(
            "mode='subsample' needs probe_features= (the trunk re-run on the batch's first rows)"
        )


def _task_params(
    losses: Tensor, shared: Sequence[Tensor], task_params: Iterable[Tensor] | None
) -> list[Tensor]:
    if task_params is not None:
        return [p for p in task_params if p.requires_grad]
    shared_ids = {id(p) for p in shared}
    found: dict[int, Tensor] = {}
    seen: set[int] = set()
    stack = [losses.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor) and id(variable) not in shared_ids:
            found[id(variable)] = variable
        stack.extend(nxt for nxt, _ in node.next_functions)
    return list(found.values())


def _batched_grad(
    outputs: Tensor, inputs: Sequence[Tensor], cotangents: Tensor, retain: bool = True
) -> tuple[Tensor, ...]:
    if not inputs:
        return ()
    return torch.autograd.grad(
        outputs,
        list(inputs),
        grad_outputs=cotangents,
        is_grads_batched=True,
        retain_graph=retain,
        allow_unused=True,
        materialize_grads=True,
    )


def _segment_gramian(
    segments: Sequence[Segment], cotangent: Tensor, reduce: Reduce | None, owned: bool = False
) -> tuple[Tensor, int]:
    """G = Σ_s J_s J_sᵀ, walking the blocks backwards with batched cotangents (`owned`: the
    first cotangent may be overwritten, as every later one is)."""
    k = cotangent.shape[0]
    gramian = torch.zeros(k, k, dtype=torch.float64, device=cotangent.device)
    held = 0  # the largest segment's block; per-parameter views, never concatenated
    for i in range(len(segments) - 1, -1, -1):
        seg = segments[i]
        needs_input = i > 0 and seg.input.requires_grad
        inputs = [*seg.params, *([seg.input] if needs_input else [])]
        if not inputs:
            continue
        if reduce is None and _linear_shortcut(seg):
            gramian += _linear_gramian(seg, cotangent)
            held = max(held, cotangent.numel())
            if needs_input:
                assert isinstance(seg.module, nn.Linear)
                cotangent = cotangent @ seg.module.weight
                owned = True
            continue
        if owned and not seg.params and isinstance(seg.module, nn.ReLU):
            cotangent.mul_(seg.output > 0)  # in place: one K × B × d block instead of two
            continue
        grads = _batched_grad(seg.output, inputs, cotangent)
        if seg.params:
            blocks = [_reduce(g.reshape(k, -1), reduce) for g in grads[: len(seg.params)]]
            held = max(held, sum(b.numel() for b in blocks))
            gramian += _gramian(blocks)
            del blocks
        if needs_input:
            cotangent = grads[-1]
            owned = True
        del grads
    return gramian, held


def _walked_gramian(
    segments: Sequence[Segment], cotangent: Tensor, shared: Sequence[Tensor]
) -> tuple[Tensor, int]:
    """G of `shared` from an untracked walk (`walk.walk`): a linear layer's from the batch when
    that is cheaper (see `_linear_gramian`), else from its per-task block; never all of J."""
    k = cotangent.shape[0]
    wanted = {id(p) for p in shared}
    walked: set[int] = set()
    gramian = torch.zeros(k, k, dtype=torch.float64, device=cotangent.device)
    held = 0

    def on_linear(module: nn.Linear, a: Tensor, d: Tensor) -> None:
        nonlocal gramian, held
        if id(module.weight) in wanted:
            if a.shape[0] <= module.in_features:
                gramian += _weight_gramian(a, d)
                held = max(held, d.numel())
            else:
                block = torch.matmul(d.transpose(1, 2), a).reshape(k, -1)
                gramian += row_gramian(block)
                held = max(held, block.numel())
            walked.add(id(module.weight))
        if module.bias is not None and id(module.bias) in wanted:
            sums = d.sum(1)
            gramian += (sums @ sums.T).double()
            walked.add(id(module.bias))

    walk(segments, cotangent, on_linear)
    check_covered(shared, walked)
    return gramian, held


def gramian_block_floats(module: nn.Module, num_tasks: int, batch_size: int) -> int:
    """What the lean Gramian path holds for one trunk block (the plan's estimate)."""
    if isinstance(module, nn.Linear) and batch_size <= module.in_features:
        return num_tasks * batch_size * module.out_features
    return num_tasks * sum(p.numel() for p in module.parameters() if p.requires_grad)


def _linear_shortcut(seg: Segment) -> bool:
    """A linear layer on a (B, in) input with B ≤ in: its Gramian is cheaper from the batch."""
    module = seg.module
    if not isinstance(module, nn.Linear) or seg.input.dim() != 2:
        return False
    trainable = {id(p) for p in seg.params}
    if id(module.weight) not in trainable:
        return False
    return seg.input.shape[0] <= module.in_features


def _linear_gramian(seg: Segment, cotangent: Tensor) -> Tensor:
    """G of a linear layer's weight (and bias) without forming its K × out × in Jacobian.

    With input a (B, in) and task cotangents δ_k (B, out), g_k = δ_kᵀ a, so
    ⟨g_k, g_l⟩ = Σ_{b,b'} (a aᵀ)_{bb'} δ_kb · δ_lb' = ⟨(a aᵀ) δ_k, δ_l⟩, and the bias adds
    (Σ_b δ_kb) · (Σ_b δ_lb). Costs K·B²·out instead of K·B·out·in, holds K × B × out.
    """
    assert isinstance(seg.module, nn.Linear)
    gramian = _weight_gramian(seg.input.detach(), cotangent)
    bias = seg.module.bias
    if bias is not None and any(p is bias for p in seg.params):
        sums = cotangent.sum(1)
        gramian += (sums @ sums.T).double()
    return gramian


def _weight_gramian(a: Tensor, cotangent: Tensor) -> Tensor:
    """⟨δ_kᵀa, δ_lᵀa⟩ = ⟨(a aᵀ) δ_k, δ_l⟩ for a (B, in) and δ (K, B, out), in float64."""
    k = cotangent.shape[0]
    outer = a @ a.T
    flat = cotangent.reshape(k, -1)
    gramian = torch.empty(k, k, dtype=torch.float64, device=cotangent.device)
    for i in range(0, k, _TASK_CHUNK):  # (a aᵀ)δ for a few tasks at a time bounds the extra
        mixed = torch.matmul(outer, cotangent[i : i + _TASK_CHUNK])
        gramian[i : i + _TASK_CHUNK] = mixed.reshape(mixed.shape[0], -1) @ flat.T
    return gramian


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
    gramian = row_gramian(jac) if "gramian" in balancer.needs else None
    jacobian = jac if "jacobian" in balancer.needs else None
    return GradientInfo(losses, gramian=gramian, jacobian=jacobian)


def _coefficients(balancer: Balancer, info: GradientInfo) -> Tensor:
    if not isinstance(balancer, GramianBalancer):
        raise TypeError(f"{type(balancer).__name__} does not produce Gramian coefficients")
    c = balancer.coefficients(info)
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
        combined = balancer.aggregate(info)
        _check_finite(balancer, combined, "combined gradient")
        return combined, _effective_weights(jac, combined) if fit_weights else None
    c = _coefficients(balancer, info)
    return weighted_sum(c.to(jac.dtype), jac), c.detach().float()


def _effective_weights(jac: Tensor, combined: Tensor) -> Tensor:
    """The c with Jᵀ c closest to `combined` (only for logging coordinate-wise methods):
    the normal equations G c = J d, a K × K solve instead of a least-squares fit on n rows."""
    gram = row_gramian(jac)
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


def _check_finite(balancer: Balancer, t: Tensor, what: str) -> None:
    if t.numel() <= _FEW_FLOATS:
        finite = all(math.isfinite(v) for v in t.reshape(-1).tolist())
    else:
        finite = bool(torch.isfinite(t).all())
    if not finite:
        raise FloatingPointError(
            f"{type(balancer).__name__} returned non-finite {what} {t.tolist()[:8]}; "
            "a task loss or gradient is probably NaN/inf or all task gradients are zero"
        )
