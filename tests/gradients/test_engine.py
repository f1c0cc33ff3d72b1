"""The engine's fast paths against the naive path: K separate backwards, then the method on J."""

from __future__ import annotations

import pytest
import torch

from polytask.balancers import GradientInfo, make_balancer
from polytask.gradients import (
    backward,
    jacobian_floats,
    record_segments,
    row_gramian,
    split_features,
)
from tests.balancers.helpers import (
    GRADIENT_METHODS,
    GRAMIAN_METHODS,
    Model,
    data,
    make,
    naive_grads,
)

K = 4
TASKS = [f"t{i}" for i in range(K)]


def _engine(
    model: Model, name: str, kind: str, mode: str, seed: int, split: bool = True
) -> list[torch.Tensor]:
    x, y = data(kind, K)
    val = data(kind, K, seed=1)
    balancer = make(name, TASKS)
    model.zero_grad(set_to_none=True)
    segments = None
    if mode == "gramian":
        z, segments = record_segments(model.trunk, x)
    else:
        z = model.trunk(x)
    task_z = split_features(z, K) if split else None
    losses = model.losses(task_z if split else z, y)
    val_loss = model.losses(model.trunk(val[0]), val[1]).sum()
    torch.manual_seed(seed)
    backward(
        losses,
        model.trunk.parameters(),
        balancer,
        mode=mode,  # type: ignore[arg-type]
        features=z,
        task_features=task_z,
        segments=segments,
        val_loss=val_loss,
    )
    return model.grads()


def _naive(
    model: Model, name: str, kind: str, seed: int, space: str = "params"
) -> list[torch.Tensor]:
    x, y = data(kind, K)
    balancer = make(name, TASKS)
    torch.manual_seed(seed)
    return naive_grads(model, balancer, x, y, data(kind, K, seed=1), space)


def _assert_same(fast: list[torch.Tensor], slow: list[torch.Tensor]) -> None:
    scale = max(float(s.abs().max()) for s in slow)
    for f, s in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, s, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_jacobian_path_equals_naive(name, kind):
    model = Model(kind, K)
    naive = _naive(model, name, kind, 3)
    _assert_same(_engine(model, name, kind, "jacobian", 3), naive)
    _assert_same(_engine(model, name, kind, "jacobian", 3, split=False), naive)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize(
    "name", [n for n in GRAMIAN_METHODS if n not in ("auto_lambda", "moml", "forum")]
)
def test_lean_gramian_path_equals_naive(name, kind):
    model = Model(kind, K)
    _assert_same(_engine(model, name, kind, "gramian", 3), _naive(model, name, kind, 3))


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in GRADIENT_METHODS
        if n not in ("auto_lambda", "moml", "forum", "moco", "excess_mtl", "db_mtl")
    ],
)
def test_representation_mode_equals_naive_on_features(name):
    model = Model("mlp", K)
    fast = _engine(model, name, "mlp", "representation", 5)
    _assert_same(fast, _naive(model, name, "mlp", 5, space="representation"))


def test_heads_get_ordinary_gradients_and_grads_accumulate():
    model = Model("mlp", K)
    x, y = data("mlp", K)
    losses = model.losses(model.trunk(x), y)
    expected = torch.autograd.grad(losses.sum(), list(model.heads.parameters()), retain_graph=True)
    model.zero_grad(set_to_none=True)
    backward(losses, model.trunk.parameters(), make("upgrad", TASKS))  # heads found from the graph
    for p, e in zip(model.heads.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e)
    first = [p.grad.clone() for p in model.trunk.parameters()]
    losses = model.losses(model.trunk(x), y)
    backward(losses, model.trunk.parameters(), make("upgrad", TASKS))
    for p, f in zip(model.trunk.parameters(), first, strict=True):
        torch.testing.assert_close(p.grad, 2 * f)


def test_loss_balancers_take_the_plain_backward():
    model = Model("mlp", K)
    x, y = data("mlp", K)
    losses = model.losses(model.trunk(x), y)
    expected = torch.autograd.grad(losses.sum(), model.all_params(), retain_graph=True)
    result = backward(losses, model.trunk.parameters(), make("ew", TASKS))
    assert result.mode == "losses"
    for g, e in zip(model.grads(), expected, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("heads_read", ["split_features", "linear_task_features"])
@pytest.mark.parametrize("name", ["ew", "uncertainty", "dwa"])
def test_loss_balancers_reach_the_trunk_through_per_task_features(name, heads_read):
    """The quickstart's optional split_features (and linear_task_features) change nothing for a
    loss weighting: before the fix the trunk got no gradient at all (the heads read detached
    leaves, and one plain backward never reached z)."""
    from polytask.gradients import linear_task_features

    model = Model("cnn", K)
    x, y = data("cnn", K)
    losses = model.losses(model.trunk(x), y)
    plain = make(name, TASKS)
    expected = torch.autograd.grad(plain.combine(losses), model.all_params())
    model.zero_grad(set_to_none=True)
    z = model.trunk(x)
    if heads_read == "split_features":
        task_z, maps = split_features(z, K), None
        losses = model.losses(task_z, y)
    else:
        task_z, maps = linear_task_features(z, list(model.heads))
        losses = torch.stack([(u.squeeze(1) - y[:, k]).pow(2).mean() for k, u in enumerate(task_z)])
    result = backward(
        losses, model.trunk.parameters(), make(name, TASKS), features=z, task_features=task_z,
        task_maps=maps,
    )  # fmt: skip
    assert result.mode == "losses"
    _assert_same(model.grads(), list(expected))


def test_approximate_modes_match_their_definitions():
    """last_layer: c from the last layer's Jacobian; subsample: c from the sub-batch's."""
    model = Model("mlp", K)
    x, y = data("mlp", K)
    shared = list(model.trunk.parameters())
    for mode in ("last_layer", "subsample"):
        balancer = make("mgda", TASKS)
        z = model.trunk(x)
        losses = model.losses(z, y)
        probe = model.losses(model.trunk(x[:5]), y[:5])
        source, params = (losses, shared[-2:]) if mode == "last_layer" else (probe, shared)
        rows = [
            torch.cat(
                [g.reshape(-1) for g in torch.autograd.grad(source[i], params, retain_graph=True)]
            )
            for i in range(K)
        ]
        jac = torch.stack(rows)
        c = make("mgda", TASKS).coefficients(  # type: ignore[attr-defined]
            GradientInfo(losses.detach(), gramian=(jac @ jac.T).double())
        )
        expected = torch.autograd.grad((c.float() * losses).sum(), shared, retain_graph=True)
        model.zero_grad(set_to_none=True)
        result = backward(
            losses,
            shared,
            balancer,
            mode=mode,  # type: ignore[arg-type]
            features=z,
            probe_features=model.trunk(x[:5]),
        )
        torch.testing.assert_close(result.weights, c.float(), rtol=1e-5, atol=1e-6)
        for p, e in zip(shared, expected, strict=True):
            torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-6)


def test_gramian_path_holds_less_than_the_jacobian():
    model = Model("mlp", K)
    x, y = data("mlp", K)
    z, segments = record_segments(model.trunk, x)
    result = backward(
        model.losses(z, y),
        model.trunk.parameters(),
        make("upgrad", TASKS),
        mode="gramian",
        segments=segments,
    )
    assert result.held_floats < jacobian_floats(K, list(model.trunk.parameters()))


def test_reduce_hook_sees_the_jacobian_before_the_gramian():
    """A distributed all-reduce would be applied where `reduce` is; doubling J doubles c·J."""
    model = Model("mlp", K)
    x, y = data("mlp", K)
    seen = []

    def reduce(t):
        seen.append(t.shape)
        return 2 * t

    backward(
        model.losses(model.trunk(x), y),
        model.trunk.parameters(),
        make("mgda", TASKS),
        reduce=reduce,
    )
    doubled = [p.grad.clone() for p in model.trunk.parameters()]
    model.zero_grad(set_to_none=True)
    backward(model.losses(model.trunk(x), y), model.trunk.parameters(), make("mgda", TASKS))
    assert seen and seen[0][0] == K
    for d, p in zip(doubled, model.trunk.parameters(), strict=True):
        torch.testing.assert_close(d, 2 * p.grad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "representation"}, "needs features="),
        ({"mode": "gramian"}, "needs segments="),
        ({"mode": "subsample", "features": None}, "needs features="),
        ({"mode": "fast"}, "unknown gradient mode 'fast'"),
        (  # the heads read detached leaves: the trunk would never train
            {"task_features": "split"},
            r"task_features= needs features= \(the shared representation",
        ),
        (  # each process's rows of dz are other examples: their mean mixes them
            {"mode": "representation", "features": "z", "reduce": lambda t: t},
            "reduce= across processes would add up different processes' rows",
        ),
    ],
)
def test_missing_inputs_are_clear_errors(kwargs, message):
    model = Model("mlp", K)
    x, y = data("mlp", K)
    z = model.trunk(x)
    kwargs = {k: z if v == "z" else v for k, v in kwargs.items()}
    if kwargs.get("task_features") == "split":
        kwargs["task_features"] = split_features(z, K)
        losses = model.losses(kwargs["task_features"], y)
    else:
        losses = model.losses(z, y)
    with pytest.raises(ValueError, match=message):
        backward(losses, model.trunk.parameters(), make("mgda", TASKS), **kwargs)


def test_coordinate_methods_refuse_approximate_modes():
    model = Model("mlp", K)
    x, y = data("mlp", K)
    losses = model.losses(model.trunk(x), y)
    with pytest.raises(ValueError, match="needs mode='jacobian' or 'representation'"):
        backward(losses, model.trunk.parameters(), make("graddrop", TASKS), mode="last_layer")
    with pytest.raises(ValueError, match="needs a validation loss"):
        backward(losses, model.trunk.parameters(), make("auto_lambda", TASKS))
    with pytest.raises(ValueError, match=r"FAMO is not set up: call balancer.setup\(task_names\)"):
        backward(losses, model.trunk.parameters(), make_balancer("famo"))
    for sized in ("dwa", "gradnorm", "gradvac", "imtl", "moco", "modo", "excess_mtl"):
        model.zero_grad(set_to_none=True)  # were torch's size-mismatch and index errors
        with pytest.raises(ValueError, match=r"is not set up: call balancer.setup\(task_names"):
            backward(model.losses(model.trunk(x), y), model.trunk.parameters(),
                     make_balancer(sized))  # fmt: skip
    for lazy in ("db_mtl", "metabalance", "upgrad"):  # no setup needed: they still run
        model.zero_grad(set_to_none=True)
        backward(model.losses(model.trunk(x), y), model.trunk.parameters(), make_balancer(lazy))
    with pytest.raises(ValueError, match=r"set up for 4 tasks \['t0', .* and got 3 losses"):
        backward(losses[:3], model.trunk.parameters(), make("upgrad", TASKS))
    kept = model.trunk.parameters()
    backward(model.losses(model.trunk(x), y), kept, make("upgrad", TASKS))
    with pytest.raises(ValueError, match=r"shared_params is empty: a generator .* used up"):
        backward(model.losses(model.trunk(x), y), kept, make("upgrad", TASKS))
    with pytest.raises(ValueError, match="the losses carry no autograd graph"):
        backward(losses.detach(), model.trunk.parameters(), make("upgrad", TASKS))
    famo = make_balancer("famo")
    with pytest.raises(ValueError, match=r"FAMO: call setup\(task_names\) before load_state_dict"):
        famo.load_state_dict(make("famo", TASKS).state_dict())


def test_linear_layers_gramian_from_the_batch_equals_the_jacobian_path():
    """Batch 4 ≤ every layer's input width: every linear block takes the (a aᵀ) δ shortcut."""
    model = Model("mlp", K)
    x, y = data("mlp", K, n=4)
    grads = []
    for mode in ("jacobian", "gramian"):
        model.zero_grad(set_to_none=True)
        z, segments = record_segments(model.trunk, x)
        backward(model.losses(z, y), model.trunk.parameters(), make("upgrad", TASKS),
                 mode=mode, features=z, segments=segments)  # fmt: skip
        grads.append(model.grads())
    _assert_same(grads[1], grads[0])


def test_effective_weight_fit_is_optional_and_leaves_the_update_alone():
    model = Model("mlp", K)
    x, y = data("mlp", K)
    results, grads = [], []
    for fit in (True, False):
        model.zero_grad(set_to_none=True)
        losses = model.losses(model.trunk(x), y)
        balancer = make("trimmed_mean", TASKS)
        results.append(backward(losses, model.trunk.parameters(), balancer, fit_weights=fit))
        grads.append(model.grads())
    fitted, skipped = results
    assert skipped.weights is None
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the fit is the least-squares c: Jᵀc − d is orthogonal to every task gradient
    losses = model.losses(model.trunk(x), y)
    params = list(model.trunk.parameters())
    jac = torch.stack([
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])
        for loss in losses
    ])  # fmt: skip
    update = torch.cat([g.reshape(-1) for g in grads[0][: len(params)]])
    assert fitted.weights is not None
    residual = jac.T.double() @ fitted.weights.double() - update.double()
    assert float((jac.double() @ residual).abs().max()) < 1e-4 * float(jac.norm() * update.norm())


@pytest.mark.parametrize(
    ("k", "n"), [(2, 100), (2, 3 * 8192 + 77), (5, 4 * 8192), (8, 2 * 8192 + 1), (3, 50_000)]
)
def test_chunked_gramian_equals_the_float64_product(k, n):
    """The CPU Gramian summed from chunk products agrees with J Jᵀ in float64 (the reference),
    for lengths with and without a tail and for a strided view, to float32 rounding."""
    g = torch.Generator().manual_seed(k + n)
    rows = torch.randn(k, 2 * n, generator=g)[:, ::2]  # a strided view as well
    for r in (rows, rows.contiguous()):
        exact = r.double() @ r.double().T
        chunked = row_gramian(r)
        assert chunked.dtype == torch.float64
        error = float((chunked - exact).abs().max())
        assert error <= 1e-5 * float(exact.abs().max())


@pytest.mark.parametrize("name", ["upgrad", "mgda", "db_mtl"])
def test_a_shared_parameter_no_loss_reaches_gets_no_grad_and_leaves_the_rest_alone(name):
    """An unused layer among the shared parameters: J's blocks stayed aligned only when every
    parameter was reached (before the fix: a reshape error, or a split error for DB-MTL). Like
    a plain backward it gets no `.grad` (it had zeros, which AdamW then decayed)."""
    model = Model("mlp", K)
    x, y = data("mlp", K)
    unused = torch.nn.Linear(8, 3)
    expected = _engine(model, name, "mlp", "jacobian", 3, split=False)
    model.zero_grad(set_to_none=True)
    losses = model.losses(model.trunk(x), y)
    shared = [*model.trunk.parameters(), *unused.parameters()]
    backward(losses, shared, make(name, TASKS), mode="jacobian")
    _assert_same(model.grads(), expected)
    assert all(p.grad is None for p in unused.parameters())


@pytest.mark.parametrize("mode", ["jacobian", "representation", "last_layer"])
def test_parameters_no_loss_reaches_get_no_grad_in_every_exact_path(mode):
    """A shared layer and a head that no loss reaches (a task not drawn this step) keep
    `.grad` None, as after a plain backward, so the optimizer leaves them alone: AdamW with
    zeros decays them and moves them along their momentum."""
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    spare, heads = torch.nn.Linear(3, 4), [torch.nn.Linear(4, 1) for _ in range(3)]
    z = trunk(torch.randn(8, 3))
    losses = torch.stack([h(z).pow(2).mean() for h in heads[:2]])
    head_params = [p for h in heads for p in h.parameters()]
    features = None if mode == "jacobian" else z
    balancer = make_balancer("upgrad")
    balancer.setup(["a", "b"])
    backward(losses, [*trunk.parameters(), *spare.parameters()], balancer, mode=mode,
             features=features, task_params=head_params)  # fmt: skip
    assert all(p.grad is None for p in [*spare.parameters(), *heads[2].parameters()])
    assert all(p.grad is not None for p in [*trunk.parameters(), *heads[0].parameters()])


def test_auto_mode_is_the_trainers_choice_and_last_layer_needs_the_parameters_in_order():
    model = Model("mlp", K)
    x, y = data("mlp", K)
    z = model.trunk(x)
    result = backward(model.losses(z, y), balancer=make("mgda_ub", TASKS), features=z)
    assert result.mode == "representation"  # MGDA-UB's own space, as the guide says
    z = model.trunk(x)
    assert backward(model.losses(z, y), model.trunk.parameters(), make("upgrad", TASKS)).mode == (
        "jacobian"
    )
    z = model.trunk(x)
    with pytest.raises(ValueError, match="'last_layer' reads the last shared parameters"):
        backward(model.losses(z, y), None, make("mgda", TASKS), mode="last_layer", features=z)


@pytest.mark.parametrize(
    "layers",
    [
        # a ReLU before a Flatten (a view) and a linear layer: the ReLU's in-place step met a
        # view made without autograd ("A view was created in no_grad mode ...")
        lambda: [torch.nn.Conv2d(2, 3, 3, 2, 1), torch.nn.ReLU(), torch.nn.Flatten(),
                 torch.nn.Linear(48, 8), torch.nn.ReLU()],
        # the Flatten last: its input's cotangent is a view of z's, which must stay unchanged
        lambda: [torch.nn.Conv2d(2, 3, 3, 2, 1), torch.nn.Tanh(), torch.nn.Conv2d(3, 2, 3),
                 torch.nn.ReLU(), torch.nn.Flatten()],
    ],
)  # fmt: skip
@pytest.mark.parametrize("name", ["upgrad", "mgda"])
def test_gramian_path_on_conv_trunks_with_relu_and_flatten_equals_naive(name, layers):
    model = Model("cnn", K)
    torch.manual_seed(2)
    model.trunk = torch.nn.Sequential(*layers())
    dim = model.trunk(data("cnn", K)[0]).shape[1]
    model.heads = torch.nn.ModuleList([torch.nn.Linear(dim, 1) for _ in range(K)])
    naive = _naive(model, name, "cnn", 3)
    _assert_same(_engine(model, name, "cnn", "gramian", 3), naive)
    _assert_same(_engine(model, name, "cnn", "gramian", 3, split=False), naive)


def test_loss_weighting_counts_features_still_on_zs_graph_once():
    """Task features computed from z itself (not cut from its graph) already pass the
    gradient to the trunk: pushing Σ ∂total/∂u_k through z again doubled it."""
    model = Model("mlp", K)
    x, y = data("mlp", K)
    losses = model.losses(model.trunk(x), y)
    expected = torch.autograd.grad(losses.sum(), model.all_params())
    model.zero_grad(set_to_none=True)
    z = model.trunk(x)
    firsts = [h(z) for h in model.heads]  # on z's graph
    losses = torch.stack([(u.squeeze(1) - y[:, k]).pow(2).mean() for k, u in enumerate(firsts)])
    backward(losses, model.trunk.parameters(), make("ew", TASKS), features=z, task_features=firsts)
    _assert_same(model.grads(), list(expected))


@pytest.mark.parametrize("mode", ["jacobian", "representation"])
def test_weight_tied_between_trunk_and_head_is_refused_with_features(mode):
    # the per-task modes cut the graph at z: the head's use of W would get no gradient
    # (UPGrad's update on W was 3.2 off in max-abs against the whole graph's, without a word)
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 4))
    v = torch.nn.Parameter(torch.randn(4))
    x = torch.randn(8, 4)

    def forward():
        z = torch.tanh(x @ w.T)
        tied = ((z @ w.T).sum(1) - 1).pow(2).mean()
        return z, torch.stack([tied, (z @ v - 2).pow(2).mean()])

    z, losses = forward()
    with pytest.raises(ValueError, match="tied between the trunk and a head"):
        backward(losses, balancer=make("upgrad", ["a", "b"]), features=z, mode=mode)
    assert w.grad is None
    _, losses = forward()  # the whole graph's Jacobian takes both uses
    backward(losses, [w], make("upgrad", ["a", "b"]), mode="jacobian", task_params=[v])
    assert w.grad is not None and v.grad is not None


@pytest.mark.parametrize(
    "name", ["famo", "gls", "db_mtl", "moco", "stch", "uncertainty", "imtl_l", "imtl", "dwa"]
)
def test_methods_that_read_the_losses_scale_refuse_a_negative_loss(name):
    """A Gaussian NLL can be negative: MoCo and DB-MTL then ascended that task, FAMO gave it
    every weight, GLS none, uncertainty's objective fell without bound; all silently."""
    torch.manual_seed(0)
    trunk, heads = torch.nn.Linear(3, 4), [torch.nn.Linear(4, 1) for _ in range(2)]
    z = trunk(torch.randn(8, 3))
    losses = torch.stack([heads[0](z).pow(2).mean() - 5.0, heads[1](z).pow(2).mean()])
    balancer = make_balancer(name)
    balancer.setup(["nll", "b"])
    with pytest.raises(ValueError, match=r"needs losses >= 0 \(.*\), and nll's is -"):
        backward(losses, trunk.parameters(), balancer)
    plain = make_balancer("upgrad")
    plain.setup(["nll", "b"])
    backward(losses, trunk.parameters(), plain)  # reads the gradients only: fine
