"""Mode `sketch` (approximate, cheap): the Gramian of the last shared linear layer, sketched on
its input side; one ordinary trunk backward then applies the combination.

The last linear layer (input a (N, m), bias, output `pre`, then elementwise activations to z)
has per-task Jacobians J_k = δ_kᵀ [a, 1] (d × (m+1)) with δ_k = ∂L_k/∂pre = ∂L_k/∂z ∘ σ'(pre).
With a random S ((m+1) × r, a balanced CountSketch with E[S Sᵀ] = I),
G̃_kl = ⟨J_k S, J_l S⟩ is an unbiased estimate of that layer's Gramian; it is exact when
m + 1 ≤ r (then S = I). J_k S = δ_kᵀ U with U = [a, 1] S (N × r), so the whole cost is one
K·r·N·d product, and when the heads keep ∂L_k/∂z factored (g_k W_k) δ_k is never formed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polytask.balancers._base import Balancer, GradientInfo
from polytask.gradients._engine import (
    BackwardResult,
    Segment,
    _coefficients,
    _combined,
    apply_cotangent,
    head_gradients,
)
from polytask.gradients._mode import GradientMode, GradientStep, trunk_modules

if TYPE_CHECKING:
    from polytask.models._base import MultiTaskNet

SKETCH_SIZE = 48
"""Columns of the sketch by default: exact for a last layer of up to 47 inputs (and a bias);
on wider ones, updates within a cosine of 0.95 of the exact path's for MGDA and UPGrad on the
speed benchmark's 512-wide layer and on a trained School model (benchmarks/results)."""

ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.ELU,
    nn.SELU, nn.CELU, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Identity,
    nn.Dropout,
)  # fmt: skip
"""Modules allowed after the sketched layer: each output depends only on the same input entry."""


def sketch_layer_index(modules: Sequence[nn.Module]) -> int:
    """The index of the trunk block whose Gramian the `sketch` mode estimates, or an error
    that says what the trunk must look like."""
    trainable = [i for i, m in enumerate(modules) if any(p.requires_grad for p in m.parameters())]
    if not trainable:
        raise ValueError("mode='sketch' needs a trunk block with trainable parameters")
    last = trainable[-1]
    if not isinstance(modules[last], nn.Linear):
        raise ValueError(
            f"mode='sketch' needs the trunk's last trainable block to be nn.Linear, got "
            f"{type(modules[last]).__name__}: use gradient_mode 'last_layer' or 'representation'"
        )
    after = modules[last + 1 :]
    for m in after:
        if not isinstance(m, ELEMENTWISE):
            raise ValueError(
                f"mode='sketch' needs only elementwise activations (ReLU, GELU, Dropout, ...) "
                f"after the trunk's last linear layer, got {type(m).__name__}: use gradient_mode "
                "'last_layer' or 'representation'"
            )
    in_place = [m for m in after if getattr(m, "inplace", False)]
    if in_place and not all(isinstance(m, nn.ReLU) for m in after):  # ReLUs' slope: from z
        raise ValueError(
            f"mode='sketch' reads the slope of the activations after the trunk's last linear "
            f"layer from that layer's output, which {type(in_place[0]).__name__}(inplace=True) "
            "overwrites: build it with inplace=False (ReLUs alone may stay in place), or use "
            "gradient_mode 'last_layer' or 'representation'"
        )
    return last


def sketch_gramian(
    segments: Sequence[Segment],
    size: int,
    num_tasks: int,
    dz: Tensor | None = None,
    factors: tuple[Tensor, Tensor, Tensor] | None = None,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, int]:
    """G̃ (K, K) in float64 and the floats held, from ∂L_k/∂z given as `dz` (K, *z.shape) or
    as `factors` (g (N, O), W (O, d), owner (O,) the task of each row), where z is the last
    segment's output. `reduce` is applied to the sketched J_k S, so every process must draw
    the same S (seed torch alike everywhere)."""
    modules = [s.module for s in segments]
    if any(m is None for m in modules):
        raise ValueError("mode='sketch' needs segments from record_segments(trunk_blocks, x)")
    index = sketch_layer_index(modules)  # type: ignore[arg-type]
    layer = segments[index]
    basis, exact = _input_basis(layer, size)
    dtype = basis.dtype if exact else product_dtype(basis)
    slope = _slope(segments, index, dtype)
    if factors is not None:
        sketched = _factored_sketch(basis, slope, *factors, num_tasks)
    else:
        assert dz is not None
        delta = dz.reshape(num_tasks, -1, layer.output.shape[-1]).to(dtype)
        if slope is not None:
            delta = delta * slope
        sketched = torch.matmul(basis.T.to(dtype), delta).transpose(0, 1).to(basis.dtype)
    if reduce is not None:
        sketched = reduce(sketched)
    gramian = torch.bmm(sketched, sketched.transpose(1, 2)).sum(0, dtype=torch.float64)
    return gramian, sketched.numel() + basis.numel()


def product_dtype(t: Tensor) -> torch.dtype:
    """bfloat16 for the sketch's large product where the device multiplies it natively (a GPU
    with bf16, a CPU with AVX512-BF16 or AMX: 2–4× faster), else t's own dtype; its rounding
    (~0.4%) is far below the sketch's own error (~1/√r)."""
    if t.dtype != torch.float32:
        return t.dtype
    if t.device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else t.dtype
    if t.device.type == "cpu":
        native = [getattr(torch.cpu, name, None) for name in _CPU_BF16]
        if any(check is not None and check() for check in native):
            return torch.bfloat16
    return t.dtype


_CPU_BF16 = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def _slope(segments: Sequence[Segment], index: int, dtype: torch.dtype) -> Tensor | None:
    """σ'(pre) (N, d) of the elementwise blocks after the layer, None when there are none."""
    pre, z = segments[index].output, segments[-1].output
    after = segments[index + 1 :]
    if not after:
        return None
    if all(isinstance(s.module, nn.ReLU) for s in after):  # 1 where pre > 0, i.e. where z > 0
        # read from z: a ReLU(inplace=True) has overwritten pre with z (z is pre)
        return z.detach().reshape(-1, z.shape[-1]).clamp(min=0).sign_().to(dtype)
    slope = torch.autograd.grad(z, pre, torch.ones_like(z), retain_graph=True)[0]
    return slope.reshape(-1, pre.shape[-1]).to(dtype)


def _input_basis(layer: Segment, size: int) -> tuple[Tensor, bool]:
    """U = [a, 1] S (N, r): the layer's input with a ones column for the bias, sketched; and
    whether U is exact (no wider than r, so not sketched at all).

    S is a balanced CountSketch: the m + 1 input columns are dealt at random into r groups of
    near-equal size and summed with random signs, so S Sᵀ has unit diagonal and zero-mean
    off-diagonal entries (E[S Sᵀ] = I, an unbiased G̃) and S's columns are orthogonal.
    Measured as faithful as an orthonormal Gaussian frame, at a tenth of its cost.
    """
    assert isinstance(layer.module, nn.Linear)
    a = layer.input.detach().reshape(-1, layer.input.shape[-1])
    bias = layer.module.bias is not None and any(p is layer.module.bias for p in layer.params)
    m = a.shape[1]
    n = m + int(bias)
    if n <= size:
        return (F.pad(a, (0, 1), value=1.0) if bias else a), True
    order = torch.randperm(n, device=a.device)
    signs = torch.rand(n, device=a.device, dtype=a.dtype).sub_(0.5).sign_()
    sketch = a.new_zeros(n, size)
    sketch[order, torch.arange(n, device=a.device) % size] = signs
    if bias:  # the ones column adds its row of S to every row of U
        return torch.addmm(sketch[m], a, sketch[:m]), False
    return a @ sketch, False


def _factored_sketch(
    basis: Tensor, slope: Tensor | None, g: Tensor, w: Tensor, owner: Tensor, k: int
) -> Tensor:
    """(J_k S)ᵀ for all k as (r, K, d) without forming δ_k: for row o of task k,
    Σ_b U_bi g_bo σ'_bj W_oj is one (r·O, N) @ (N, d) product, then summed per task."""
    n, r = basis.shape
    o = g.shape[1]
    if slope is None:
        rows = (basis.unsqueeze(2) * g.unsqueeze(1)).sum(0).view(r * o, 1)
    else:  # (N, r·O) built straight in the product's dtype
        mixed = g.new_empty((n, r, o), dtype=slope.dtype)
        torch.mul(basis.unsqueeze(2), g.unsqueeze(1), out=mixed)
        rows = (mixed.view(n, r * o).T @ slope).to(g.dtype)
    per_row = rows.view(r, o, -1) * w
    if o == k:
        return per_row
    out = per_row.new_zeros(r, k, per_row.shape[-1])
    return out.index_add_(1, owner, per_row)


class SketchMode(GradientMode):
    """G of the trunk's last linear layer from a `size`-column sketch of its input."""

    name = "sketch"
    exact = False
    needs_segments = True
    factored_heads = True

    def __init__(self, size: int = SKETCH_SIZE) -> None:
        if size < 1:
            raise ValueError(f"sketch_size must be at least 1, got {size}")
        self.size = size

    @classmethod
    def create(cls, **options: Any) -> SketchMode:
        return cls(options.get("sketch_size", SKETCH_SIZE))

    def __repr__(self) -> str:
        return f"SketchMode(size={self.size})"

    def check_model(self, model: MultiTaskNet) -> None:
        super().check_model(model)
        try:
            sketch_layer_index(trunk_modules(model))
        except ValueError as err:
            raise ValueError(f"{err} (training.gradient_mode)") from None

    def held_floats(
        self, model: MultiTaskNet, balancer: Balancer, shared: Sequence[Tensor], batch_size: int
    ) -> int:
        """J_k Ω for every task and the sketched input (N, r)."""
        blocks = trunk_modules(model)
        layer = blocks[sketch_layer_index(blocks)]
        assert isinstance(layer, nn.Linear)
        columns = min(self.size, layer.in_features + int(layer.bias is not None))
        return columns * (len(model.task_names) * layer.out_features + batch_size)

    def backward(self, step: GradientStep) -> BackwardResult:
        rec, k = step.recorded, step.num_tasks
        z, segments = rec.features, rec.segments
        assert z is not None and segments is not None  # check_inputs
        dz, factored = head_gradients(
            step.losses, z, rec.task_features, rec.task_maps, step.heads, expand=False
        )
        factors = None if factored is None else (factored.g, factored.w, factored.owner)
        gramian, held = sketch_gramian(segments, self.size, k, dz, factors, step.reduce)
        c = _coefficients(step.balancer, GradientInfo(step.detached, gramian=gramian))
        apply_cotangent(z, step.shared, _combined(c, dz, factored))
        return BackwardResult(c.detach().float(), self.name, held)
