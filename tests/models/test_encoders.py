"""Encoders: output shapes and strides, ViT position interpolation, parameter errors, the
tabular path unchanged, hard sharing and MTAN on images, and every gradient mode on a conv
trunk (the exact modes agreeing, the representation mode's z-gradients equal autograd's)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from polytask import Task, TaskData, TrainConfig, Trainer, make_balancer
from polytask.balancers import GradientInfo
from polytask.data._source import Batch
from polytask.gradients import head_gradients, plan_gradients
from polytask.models import (
    MTAN,
    Features,
    InputShape,
    MultiTaskModel,
    build_model,
    hard_sharing_mlp,
    mtan_mlp,
)
from polytask.models.encoders import ENCODERS, build_encoder, encoder_params
from polytask.train import task_losses, train_step

TASKS = [Task("a", "regression"), Task("b", "binary"), Task("c", "multiclass", num_classes=3)]
SMALL = {
    "cnn": {"channels": (4, 8)},
    "resnet_fpn": {"widths": (4, 8, 16), "fpn_channels": 6},
    "vit": {"patch": 4, "dim": 16, "depth": 2, "heads": 2},
}


def _images(n: int = 4, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# -- shapes and strides -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [
        # two stride-2 stages: ⌈16/4⌉ = 4, ⌈24/4⌉ = 6; ⌈20/4⌉ = 5, ⌈12/4⌉ = 3
        ("cnn", (16, 16), (8, 4, 4)),
        ("cnn", (20, 12), (8, 5, 3)),
        # stem /2, stages /4 /8 /16, pyramid merged at stride 4
        ("resnet_fpn", (16, 16), (6, 4, 4)),
        ("resnet_fpn", (32, 24), (6, 8, 6)),
        # 4×4 patches: the token grid
        ("vit", (16, 16), (16, 4, 4)),
        ("vit", (24, 32), (16, 6, 8)),
    ],
)
def test_image_encoders_output_their_declared_features_at_two_sizes(name, size, expected):
    torch.manual_seed(0)
    encoder = build_encoder(name, (3, 16, 16), **SMALL[name])
    stride = {"cnn": 4, "resnet_fpn": 4, "vit": 4}[name]
    assert encoder.features == Features(expected[0], stride, spatial=True)
    assert encoder.out_dim == expected[0]
    out = encoder(_images(4, *size))
    assert out.shape == (4, *expected)
    assert encoder.output_numel((3, *size)) == expected[0] * expected[1] * expected[2]


def test_cnn_stride_is_two_per_stage_and_resnet_fpn_stride_is_configurable():
    cnn = build_encoder("cnn", (1, 32, 32), channels=(4, 4, 4))
    assert cnn.features.stride == 8
    assert cnn(torch.randn(2, 1, 32, 32)).shape == (2, 4, 4, 4)
    fpn = build_encoder("resnet_fpn", (1, 32, 32), widths=(4, 8, 16), fpn_stride=8)
    assert fpn.features == Features(64, 8, spatial=True)
    assert fpn(torch.randn(2, 1, 32, 32)).shape == (2, 64, 4, 4)
    assert [len(stage) for stage in fpn.layers] == [1, 1, 1]
    deep = build_encoder("resnet_fpn", (1, 32, 32), widths=(4, 8), blocks=(2, 3))
    assert [len(stage) for stage in deep.layers] == [2, 3]


def test_mlp_encoder_is_the_tabular_mlp_with_its_features():
    torch.manual_seed(0)
    encoder = build_encoder("mlp", (5,), hidden=(7, 3))
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.ReLU())
    x = torch.randn(4, 5)
    torch.testing.assert_close(encoder(x), plain(x))
    assert encoder.features == Features(3)
    assert encoder(x).shape == (4, 3)


def test_vit_positions_are_the_parameter_at_the_built_grid_and_interpolated_elsewhere():
    torch.manual_seed(0)
    vit = build_encoder("vit", (3, 8, 8), patch=4, dim=8, depth=1, heads=2)
    embed = vit.net[0]
    assert embed.position.shape == (1, 8, 2, 2)
    assert embed.positions((2, 2)) is embed.position
    with torch.no_grad():  # a constant embedding per channel stays that constant
        embed.position.copy_(torch.arange(8.0).view(1, 8, 1, 1).expand(1, 8, 2, 2))
    resized = embed.positions((3, 5))
    assert resized.shape == (1, 8, 3, 5)
    torch.testing.assert_close(resized, torch.arange(8.0).view(1, 8, 1, 1).expand(1, 8, 3, 5))
    # a 12×20 image: its tokens get the interpolated embeddings, and gradients reach them
    x = _images(2, 12, 20)
    tokens = embed(x)
    torch.testing.assert_close(tokens, (embed.proj(x) + resized).permute(0, 2, 3, 1))
    vit(x).sum().backward()
    assert embed.position.grad is not None and embed.position.grad.abs().sum() > 0


def test_encoder_parameter_and_shape_errors_name_the_encoder_and_the_fix():
    with pytest.raises(ValueError, match=r"encoder 'cnn': chanels: unknown parameter \(did you"):
        build_encoder("cnn", (3, 16, 16), chanels=(8,))
    with pytest.raises(ValueError, match=r"encoder 'cnn': kernel: must be an odd positive"):
        build_encoder("cnn", (3, 16, 16), kernel=4)
    with pytest.raises(ValueError, match=r"unknown encoder 'vitt' \(did you mean 'vit'\?\)"):
        build_encoder("vitt", (3, 16, 16))
    with pytest.raises(ValueError, match=r"encoder 'cnn' takes images: input_shape must be \(C"):
        build_encoder("cnn", (16,))
    with pytest.raises(ValueError, match=r"encoder 'mlp' takes tabular rows: .* got \(3, 8, 8\)"):
        build_encoder("mlp", (3, 8, 8))
    with pytest.raises(ValueError, match=r"'vit': dim 30 must be a multiple of heads 4"):
        build_encoder("vit", (3, 16, 16), dim=30, heads=4)
    with pytest.raises(ValueError, match=r"'vit': the image size 16×18 must be a multiple of"):
        build_encoder("vit", (3, 16, 18), patch=4)
    with pytest.raises(ValueError, match=r"'resnet_fpn': fpn_stride must be .* \[4, 8\]"):
        build_encoder("resnet_fpn", (3, 16, 16), widths=(4, 8), fpn_stride=16)
    with pytest.raises(ValueError, match=r"one blocks count per stage width"):
        build_encoder("resnet_fpn", (3, 16, 16), widths=(4, 8), blocks=(1, 1, 1))
    cnn = build_encoder("cnn", (3, 16, 16), channels=(4,))
    with pytest.raises(ValueError, match=r"'cnn' takes images of shape \(N, 3, H, W\), got \(2,"):
        cnn(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"encoder 'cnn': channels: must list positive"):
        build_model(
            "hard_sharing", InputShape((3, 8, 8)), TASKS, encoder="cnn",
            encoder_params={"channels": [0]},
        )  # fmt: skip
    assert set(encoder_params("vit")) == {"patch", "dim", "depth", "heads", "mlp_ratio", "dropout"}
    names = {"mlp", "cnn", "resnet_fpn", "vit", "timm", "transformer", "hf", "audio"}
    assert names <= set(ENCODERS)


# -- timm, optional ------------------------------------------------------------------------


def test_timm_missing_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ValueError, match=r"encoder 'timm' needs the timm package.*pip install"):
        build_encoder("timm", (3, 16, 16), model_name="resnet18")


class _FakeInfo:
    def channels(self) -> list[int]:
        return [4, 12]

    def reduction(self) -> list[int]:
        return [2, 8]


class _FakeTimmModel(nn.Module):
    """What timm's features_only=True, out_indices=(-1,) model gives: a list of one map."""

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 12, 8, 8)
        self.feature_info = _FakeInfo()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(x)]


def test_timm_models_are_wrapped_with_channels_and_stride_from_feature_info(monkeypatch):
    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        return _FakeTimmModel(kwargs["in_chans"])

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    encoder = build_encoder("timm", (3, 16, 16), model_name="tiny_net")
    assert calls == [
        (
            "tiny_net",
            {"pretrained": False, "features_only": True, "out_indices": (-1,), "in_chans": 3},
        )
    ]
    assert encoder.features == Features(12, 8, spatial=True)
    assert encoder(_images(2, 16, 24)).shape == (2, 12, 2, 3)
    model = build_model(
        "hard_sharing", InputShape((3, 16, 16)), TASKS, encoder="timm",
        encoder_params={"model_name": "tiny_net"},
    )  # fmt: skip
    assert model(_images(2))["c"].shape == (2, 3)


# -- architectures ---------------------------------------------------------------------


def test_tabular_hard_sharing_is_unchanged():
    names = [f"x{i}" for i in range(6)]
    params = {"hidden": (16, 8), "dropout": 0.1, "tower": (4,), "task_dropout": {"b": 0.2}}
    new = build_model("hard_sharing", names, TASKS, seed=3, **params)
    old = hard_sharing_mlp(6, TASKS, seed=3, **params)  # the builder before encoders
    assert list(new.state_dict()) == list(old.state_dict())
    for a, b in zip(new.state_dict().values(), old.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.randn(5, 6)
    new.eval(), old.eval()
    for name, out in new(x).items():
        assert torch.equal(out, old(x)[name])
    assert new.features == Features(8) and new.representation_dim == 8
    # the mlp encoder's own parameters win over the architecture's hidden
    wide = build_model("hard_sharing", names, TASKS, encoder_params={"hidden": (5,)})
    assert wide.features == Features(5)


def test_tabular_mtan_is_unchanged():
    names = [f"x{i}" for i in range(6)]
    new = build_model("mtan", names, TASKS, seed=1, hidden=(8, 8), tower=(4,))
    torch.manual_seed(1)
    old = mtan_mlp(6, TASKS, hidden=(8, 8), tower=(4,))
    for a, b in zip(new.state_dict().values(), old.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_hard_sharing_on_images_pools_each_head_and_refuses_towers():
    model = build_model(
        "hard_sharing", InputShape((3, 16, 16)), TASKS, encoder="cnn",
        encoder_params=SMALL["cnn"], seed=0,
    )  # fmt: skip
    assert isinstance(model, MultiTaskModel)
    assert model.features == Features(8, 4, spatial=True)
    assert model.representation_dim == 8 * 4 * 4
    x = _images()
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"a": (4,), "b": (4,), "c": (4, 3)}
    z = model.representation(x)
    head = model.heads["c"][-1]  # global average pool, then the task's linear layer
    torch.testing.assert_close(out["c"], head(z.mean((2, 3))))
    with pytest.raises(ValueError, match=r"tower and task_dropout apply to a trunk that outputs"):
        build_model("hard_sharing", InputShape((3, 16, 16)), TASKS, encoder="cnn", tower=(4,))
    with pytest.raises(ValueError, match=r"'mmoe' takes tabular rows only.*hard_sharing or mtan"):
        build_model("mmoe", InputShape((3, 16, 16)), TASKS)


@pytest.mark.parametrize("encoder", ["cnn", "resnet_fpn"])
def test_mtan_on_images_attends_after_every_stage_forward_and_backward(encoder):
    model = build_model(
        "mtan", InputShape((3, 16, 16)), TASKS, encoder=encoder,
        encoder_params=SMALL[encoder], seed=0,
    )  # fmt: skip
    assert isinstance(model, MTAN)
    stages = len(model.blocks)
    assert stages == (2 if encoder == "cnn" else 4)  # resnet_fpn: the stem and three stages
    assert model.features.spatial and model.features.stride == 4
    out = model(_images())
    assert {k: tuple(v.shape) for k, v in out.items()} == {"a": (4,), "b": (4,), "c": (4, 3)}
    assert set(model.diagnostics()) == {f"mtan/{t.name}/{j}" for t in TASKS for j in range(stages)}
    # each mask: 1×1 conv → BN → ReLU → 1×1 conv → sigmoid
    mask = model.attention["a"][0].mask
    assert [type(m).__name__ for m in mask] == [
        "ChannelLinear", "BatchNorm2d", "ReLU", "ChannelLinear", "Sigmoid",
    ]  # fmt: skip
    sum(o.float().sum() for o in out.values()).backward()
    shared = list(model.shared_parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shared)
    if encoder == "resnet_fpn":  # the pyramid is shared, run on each task's attended stages
        assert {id(p) for p in model.neck.parameters()} <= {id(p) for p in shared}
    own = {id(p) for p in model.task_parameters("a")}
    assert own.isdisjoint(id(p) for p in shared)
    assert all(p.grad is not None for p in model.attention["a"].parameters())
    with pytest.raises(ValueError, match=r"encoder 'vit' has no stages: use encoder cnn or"):
        build_model("mtan", InputShape((3, 16, 16)), TASKS, encoder="vit")


# -- gradient modes on a spatial trunk --------------------------------------------------------


def _image_batch(n: int = 8) -> Batch:
    g = torch.Generator().manual_seed(5)
    targets = {
        "a": torch.randn(n, generator=g),
        "b": torch.randint(0, 2, (n,), generator=g).float(),
        "c": torch.randint(0, 3, (n,), generator=g),
    }
    return Batch(_images(n), targets)


def _cnn_model() -> MultiTaskModel:
    model = build_model(
        "hard_sharing", InputShape((3, 16, 16)), TASKS, encoder="cnn",
        encoder_params=SMALL["cnn"], seed=0,
    )  # fmt: skip
    assert isinstance(model, MultiTaskModel)
    return model


def _step(mode: str, balancer: str = "upgrad") -> tuple[MultiTaskModel, list[torch.Tensor]]:
    """One train_step of a fresh cnn model in `mode`; the model and its shared gradients."""
    model = _cnn_model()
    method = make_balancer(balancer)
    plan = plan_gradients(model, method, mode, batch_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the weights: compare grads
    train_step(model, method, optimizer, _image_batch(), TASKS, plan)
    return model, [p.grad.clone() for p in model.shared_parameters()]


MODES_RUN = ["jacobian", "gramian", "representation", "last_layer", "subsample"]


@pytest.mark.parametrize("mode", MODES_RUN)
def test_every_gradient_mode_steps_a_cnn_trunk(mode):
    model, grads = _step(mode)
    assert model.representation(_image_batch().x).shape == (8, 8, 4, 4)
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is not None for name in model.task_names for p in model.task_parameters(name))


def test_sketch_mode_refuses_a_conv_trunk_naming_the_modes_that_work():
    model = _cnn_model()
    with pytest.raises(ValueError, match=r"sketch.*nn.Linear.*'last_layer' or 'representation'"):
        plan_gradients(model, make_balancer("upgrad"), "sketch", batch_size=8)


def test_jacobian_and_gramian_modes_agree_on_a_cnn_trunk():
    _, jacobian = _step("jacobian")
    _, gramian = _step("gramian")
    scale = max(float(g.abs().max()) for g in jacobian)
    for a, b in zip(gramian, jacobian, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_representation_mode_z_gradients_and_update_equal_autograd():
    batch = _image_batch()
    model = _cnn_model()
    balancer = make_balancer("upgrad")
    plan = plan_gradients(model, balancer, "representation", batch_size=8)
    recorded = plan.record(model, batch.x)
    z = recorded.features
    assert z is not None and z.shape == (8, 8, 4, 4)
    losses = task_losses(recorded.outputs, batch, TASKS)
    # autograd: each task's loss on a fresh forward of the heads, differentiated w.r.t. z
    leaf = z.detach().requires_grad_(True)
    fresh = task_losses(model.heads_forward(leaf), batch, TASKS)
    expected = torch.stack(
        [torch.autograd.grad(fresh[k], leaf, retain_graph=True)[0] for k in range(len(TASKS))]
    )
    heads = [p for name in model.task_names for p in model.task_parameters(name)]
    dz, _ = head_gradients(losses, z, recorded.task_features, recorded.task_maps, heads)
    assert dz is not None and dz.shape == (3, 8, 8, 4, 4)
    torch.testing.assert_close(dz, expected)
    # and the step's update: UPGrad's c on those gradients, one trunk backward of Σ c_k ∂L_k/∂z
    _, update = _step("representation")
    flat = expected.reshape(3, -1)
    c = make_balancer("upgrad").coefficients(
        GradientInfo(fresh.detach(), gramian=(flat @ flat.T).double())
    )
    model.zero_grad()
    z2 = model.representation(batch.x)
    cotangent = (c.to(z2.dtype).view(3, 1, 1, 1, 1) * expected).sum(0)
    manual = torch.autograd.grad(z2, list(model.shared_parameters()), cotangent)
    scale = max(float(g.abs().max()) for g in manual)
    for a, b in zip(update, manual, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


# -- training ----------------------------------------------------------------------------


def _bars(n: int, seed: int) -> TaskData:
    """Noisy 3×16×16 images with one bright bar of 12 pixels anywhere: is it horizontal (2×6,
    else 6×2), is it in the red channel (else the green); chance is 50% for both, and the mean
    intensity says neither, so the trunk must learn oriented and per-channel filters."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 3, 16, 16, generator=g)
    horizontal = torch.randint(0, 2, (n,), generator=g)
    red = torch.randint(0, 2, (n,), generator=g)
    corner = torch.randint(0, 11, (n, 2), generator=g)
    for i in range(n):
        h, w = (2, 6) if horizontal[i] else (6, 2)
        r, c = int(corner[i, 0]), int(corner[i, 1])
        x[i, 0 if red[i] else 1, r : r + h, c : c + w] += 2.0
    return TaskData(x, {"horizontal": horizontal.float(), "red": red.float()})


def test_a_cnn_hard_sharing_model_learns_two_image_tasks():
    tasks = [Task("horizontal", "binary"), Task("red", "binary")]
    model = build_model(
        "hard_sharing", InputShape((3, 16, 16)), tasks, encoder="cnn",
        encoder_params={"channels": (8, 16)}, seed=0,
    )  # fmt: skip
    config = TrainConfig(epochs=6, batch_size=32, lr=1e-2, progress=False, patience=None, seed=0)
    trainer = Trainer(model, make_balancer("upgrad"), config)
    trainer.fit(_bars(384, 0), _bars(128, 1))
    metrics = trainer.evaluate(_bars(256, 2))
    assert metrics["horizontal"]["accuracy"] > 0.85, metrics
    assert metrics["red"]["accuracy"] > 0.85, metrics


def test_pooled_heads_match_adaptive_pooling_by_hand():
    """The spatial head is global average pooling then the task's layer (hand-computed)."""
    model = _cnn_model()
    z = torch.arange(2 * 8 * 2 * 2, dtype=torch.float32).view(2, 8, 2, 2)
    linear = model.heads["a"][-1]
    expected = z.mean((2, 3)) @ linear.weight.T + linear.bias
    torch.testing.assert_close(model.heads["a"](z), expected)
    torch.testing.assert_close(F.adaptive_avg_pool2d(z, 1).flatten(1), z.mean((2, 3)))
