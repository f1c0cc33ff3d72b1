"""The sketch mode: the last linear layer's Gramian from its factors, sketched on its input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polytask.balancers import GradientInfo
from polytask.gradients import (
    Segment,
    backward,
    linear_task_features,
    record_segments,
    split_features,
)
from polytask.gradients._sketch import (
    _input_basis,
    product_dtype,
    sketch_gramian,
    sketch_layer_index,
)
from tests.balancers.helpers import make

K = 3
TASKS = [f"t{i}" for i in range(K)]
TAILS = {
    "relu": lambda: [nn.ReLU()],
    "relu_inplace": lambda: [nn.ReLU(inplace=True)],  # overwrites the layer's output: z is pre
    "gelu_dropout": lambda: [nn.GELU(), nn.Dropout(0.3)],
    "none": lambda: [],
}


def _setup(tail: str, width: int = 12, dtype: torch.dtype = torch.float64):
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(5, width), nn.Tanh(), nn.Linear(width, 7), *TAILS[tail]())
    heads = nn.ModuleList([nn.Linear(7, o) for o in (1, 3, 2)])
    trunk, heads = trunk.to(dtype), heads.to(dtype)
    x = torch.randn(9, 5, dtype=dtype)
    z, segments = record_segments(trunk, x)
    return trunk, heads, z, segments


def _dense(heads, z):
    """Split leaves: ∂L_k/∂z as a dense (K, N, d) tensor."""
    task_z = split_features(z, K)
    losses = torch.stack([(h(u) ** 2).sum() for h, u in zip(heads, task_z, strict=True)])
    dz = torch.stack(torch.autograd.grad(losses.sum(), task_z))
    return losses, dz


def _factors(heads, z):
    """Factored: ∂L_k/∂z = g_k W_k with the heads' first linear layers."""
    from polytask.gradients._engine import _factor_grads, _Factored

    task_z, maps = linear_task_features(z, list(heads))
    losses = torch.stack([(u**2).sum() for u in task_z])
    f = _Factored.of(_factor_grads(losses, z, task_z, maps, []), maps, z)
    return f.g, f.w, f.owner


def _last_layer_gramian(trunk, z, dz):
    """The exact Gramian of the last linear layer's weight and bias, by batched backward."""
    params = list(trunk[2].parameters())
    grads = torch.autograd.grad(z, params, dz, is_grads_batched=True, retain_graph=True)
    jac = torch.cat([g.reshape(K, -1) for g in grads], dim=1)
    return jac @ jac.T


@pytest.mark.parametrize("tail", TAILS)
def test_narrow_layer_gives_the_exact_last_layer_gramian(tail):
    """With no more inputs (+ bias) than sketch columns there is no sketch: the Gramian is the
    last layer's, from dense gradients and from the heads' factors alike."""
    trunk, heads, z, segments = _setup(tail)
    _, dz = _dense(heads, z)
    exact = _last_layer_gramian(trunk, z, dz)
    dense, _ = sketch_gramian(segments, 13, K, dz=dz)
    factored, _ = sketch_gramian(segments, 13, K, factors=_factors(heads, z))
    torch.testing.assert_close(dense, exact, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(factored, exact, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("factored", [False, True])
def test_sketched_gramian_is_unbiased(factored):
    """4 columns for 13 inputs: single draws are off, their mean converges to the exact G."""
    trunk, heads, z, segments = _setup("relu")
    _, dz = _dense(heads, z)
    exact = _last_layer_gramian(trunk, z, dz)
    factors = _factors(heads, z) if factored else None
    torch.manual_seed(1)
    draws = torch.stack([
        sketch_gramian(segments, 4, K, dz=None if factored else dz, factors=factors)[0]
        for _ in range(3000)
    ])  # fmt: skip
    scale = float(exact.abs().max())
    assert float((draws[0] - exact).abs().max()) > 0.01 * scale  # a real sketch
    assert float((draws.mean(0) - exact).abs().max()) < 0.03 * scale


def test_sketch_is_a_balanced_countsketch():
    """Each input column lands in one sketch column with sign ±1; group sizes differ by ≤ 1."""
    eye = torch.eye(50, dtype=torch.float64)
    layer = nn.Linear(50, 3, bias=False).double()
    segment = Segment(eye, layer(eye), (layer.weight,), layer)
    torch.manual_seed(0)
    s, exact = _input_basis(segment, 8)
    assert not exact and s.shape == (50, 8)
    assert set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert ((s != 0).sum(1) == 1).all()
    sizes = (s != 0).sum(0)
    assert int(sizes.max() - sizes.min()) <= 1 and int(sizes.sum()) == 50


def test_bias_column_is_sketched_with_the_inputs():
    """[a, 1] S: the bias's ones column adds its row of S, as padding a with ones would."""
    a = torch.randn(6, 20, dtype=torch.float64)
    layer = nn.Linear(20, 3).double()
    segment = Segment(a, layer(a), tuple(layer.parameters()), layer)
    padded = torch.nn.functional.pad(a, (0, 1), value=1.0)
    ref_layer = nn.Linear(21, 3, bias=False).double()
    reference = Segment(padded, ref_layer(padded), (ref_layer.weight,), ref_layer)
    torch.manual_seed(3)
    u, _ = _input_basis(segment, 5)
    torch.manual_seed(3)
    v, _ = _input_basis(reference, 5)
    torch.testing.assert_close(u, v)


def test_reduced_precision_only_where_sketching_and_for_float32():
    assert product_dtype(torch.zeros(2, dtype=torch.float64)) == torch.float64
    assert product_dtype(torch.zeros(2)) in (torch.float32, torch.bfloat16)
    trunk, heads, z, segments = _setup("relu", dtype=torch.float32)
    _, dz = _dense(heads, z)
    exact = _last_layer_gramian(trunk, z, dz).double()
    narrow, _ = sketch_gramian(segments, 13, K, dz=dz)  # exact: stays in float32
    torch.testing.assert_close(narrow, exact, rtol=1e-5, atol=1e-6 * float(exact.abs().max()))


@pytest.mark.parametrize(
    ("trunk", "message"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.Softmax(-1)), "elementwise.*got Softmax"),
        (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), "nn.Linear, got LayerNorm"),
        (nn.Sequential(nn.Linear(4, 4), nn.Conv1d(1, 1, 1)), "nn.Linear, got Conv1d"),
        (nn.Sequential(nn.ReLU()), "trainable parameters"),
        (nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(inplace=True)), r"LeakyReLU\(inplace=True\)"),
        (nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Dropout()), "ReLU.inplace"),
    ],
)
def test_unsupported_trunks_are_refused_with_a_reason(trunk, message):
    with pytest.raises(ValueError, match=message):
        sketch_layer_index(list(trunk))


def test_sketch_mode_applies_c_from_the_sketched_gramian():
    """backward(mode='sketch'): c from the last layer's Gramian (exact here), then the trunk
    gets Σ c_k ∇L_k and the heads their ordinary gradients."""
    trunk, heads, z, segments = _setup("relu", dtype=torch.float32)
    losses, dz = _dense(heads, z)
    c = make("upgrad", TASKS).coefficients(  # type: ignore[attr-defined]
        GradientInfo(losses.detach(), gramian=_last_layer_gramian(trunk, z, dz).double())
    )
    shared = list(trunk.parameters())
    on_z = torch.stack([(h(z) ** 2).sum() for h in heads])
    expected = torch.autograd.grad((c.float() * on_z).sum(), shared, retain_graph=True)
    expected_heads = torch.autograd.grad(on_z.sum(), list(heads.parameters()), retain_graph=True)
    task_z = split_features(z, K)
    losses = torch.stack([(h(u) ** 2).sum() for h, u in zip(heads, task_z, strict=True)])
    result = backward(
        losses, shared, make("upgrad", TASKS), mode="sketch", features=z, task_features=task_z,
        task_params=heads.parameters(), segments=segments,
    )  # fmt: skip
    assert result.mode == "sketch"
    torch.testing.assert_close(result.weights, c.float(), rtol=1e-4, atol=1e-6)
    for p, e in zip(shared, expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-6)
    for p, e in zip(heads.parameters(), expected_heads, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-6)


def _fidelity(seed: int, mode: str) -> float:
    """Cosine between `mode`'s MGDA update and the exact one; each task is labelled on its own
    rows only (as School's schools), so cross-row terms decide how the tasks relate."""
    torch.manual_seed(seed)
    k = 6
    trunk = nn.Sequential(nn.Linear(10, 200), nn.ReLU(), nn.Linear(200, 32), nn.ReLU())
    heads = nn.ModuleList([nn.Linear(32, 1) for _ in range(k)])
    x, y = torch.randn(128, 10), torch.randn(128, k)
    names = [f"t{i}" for i in range(k)]

    def mse(outputs):
        return torch.stack(
            [((o.squeeze(1)[i::k] - y[i::k, i]) ** 2).mean() for i, o in enumerate(outputs)]
        )

    z = trunk(x)
    backward(mse([h(z) for h in heads]), trunk.parameters(), make("mgda", names),
             task_params=heads.parameters())  # fmt: skip
    exact = torch.cat([p.grad.reshape(-1) for p in trunk.parameters()])
    trunk.zero_grad(set_to_none=True)
    z, segments = record_segments(trunk, x)
    task_z, maps = linear_task_features(z, list(heads))
    backward(
        mse(task_z), trunk.parameters(), make("mgda", names), mode=mode,  # type: ignore[arg-type]
        features=z, task_features=task_z, task_maps=maps, task_params=heads.parameters(),
        segments=segments,
    )  # fmt: skip
    update = torch.cat([p.grad.reshape(-1) for p in trunk.parameters()])
    return float(torch.nn.functional.cosine_similarity(exact, update, dim=0))


def test_sketch_mode_stays_close_to_the_exact_update_on_a_wide_layer():
    """A 201-column last layer sketched to 48 columns keeps MGDA's update within a few degrees
    of the exact one, closer than the representation mode, which misses the cross-row terms."""
    sketch = [_fidelity(seed, "sketch") for seed in range(3)]
    representation = [_fidelity(seed, "representation") for seed in range(3)]
    assert min(sketch) > 0.98
    assert sum(sketch) > sum(representation) + 0.05
