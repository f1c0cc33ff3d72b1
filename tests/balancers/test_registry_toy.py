"""A new balancer added from a test file alone: one class and one registry entry make it
buildable by name (parameters checked from its signature) and trainable by the Trainer."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp
from polytask.balancers import (
    BALANCERS,
    GradientInfo,
    GramianBalancer,
    balancer_params,
    make_balancer,
)


class InverseNorm(GramianBalancer):
    """Toy inverse-norm weighting: c_k ∝ 1/√G_kk, summing to `scale`·K, so every task gradient
    gets the same length in the update (tasks with steep losses cannot drown the others)."""

    def __init__(self, scale: float = 1.0, eps: float = 1e-12) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"toy scale must be > 0, got {scale}")
        self.scale = scale
        self.eps = eps

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        inverse = g.diagonal().clamp_min(self.eps).rsqrt()
        return self.scale * g.shape[0] * inverse / inverse.sum()


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BALANCERS, "toy", InverseNorm)


@pytest.mark.usefixtures("toy")
def test_toy_is_built_by_name_with_parameters_checked_from_its_signature() -> None:
    assert set(balancer_params("toy")) == {"scale", "eps"}
    b = make_balancer("toy", scale=2.0)
    assert isinstance(b, InverseNorm) and b.scale == 2.0 and b.eps == 1e-12
    assert b.needs == frozenset({"gramian"}) and b.uses_gradients and not b.updates_state
    with pytest.raises(ValueError, match=r"balancer 'toy'.*scael.*its parameters: scale, eps"):
        make_balancer("toy", scael=2.0)  # a typo: the allowed names are listed
    with pytest.raises(ValueError, match=r"balancer 'toy': scale: .*number"):
        make_balancer("toy", scale="big")  # the annotation's type is enforced
    with pytest.raises(ValueError, match="toy scale must be > 0"):
        make_balancer("toy", scale=-1.0)  # the constructor's own check still runs


@pytest.mark.usefixtures("toy")
def test_toy_coefficients_equalise_gradient_lengths() -> None:
    jac = torch.tensor([[3.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    b = make_balancer("toy")
    b.setup(["a", "b"])
    c = b.coefficients(GradientInfo(torch.ones(2), gramian=jac @ jac.T))
    lengths = (c[:, None] * jac).norm(dim=1)
    assert torch.allclose(lengths[0], lengths[1]) and torch.isclose(c.sum(), c.new_tensor(2.0))


def _data(n: int, seed: int) -> TaskData:
    """Two regression tasks on the same 2-d projection z of 10 inputs (a linear in z, b
    quadratic), b on a 5× larger scale: its raw gradients are larger, so the toy weighs it less."""
    g = torch.Generator().manual_seed(seed)
    world = torch.Generator().manual_seed(123)  # the same structure for every split
    proj = torch.randn(10, 2, generator=world) / 10**0.5  # z ~ N(0, I) roughly
    x = torch.randn(n, 10, generator=g)
    z = x @ proj
    noise = 0.05 * torch.randn(n, 2, generator=g)
    targets = {
        "a": z[:, 0] + 0.5 * z[:, 1] + noise[:, 0],
        "b": 5 * (z[:, 1] - z[:, 0] ** 2 / 4) + noise[:, 1],
    }
    return TaskData(x, targets)


@pytest.mark.usefixtures("toy")
def test_toy_trains_a_model_through_the_trainer() -> None:
    torch.manual_seed(0)
    tasks = [Task("a", "regression"), Task("b", "regression")]
    model = hard_sharing_mlp(10, tasks, hidden=(32,))
    shared = [p.detach().clone() for p in model.shared_parameters()]
    config = TrainConfig(epochs=6, batch_size=32, lr=1e-2, progress=False, patience=None)
    trainer = Trainer(model, make_balancer("toy"), config)
    val = _data(200, seed=1)
    start = sum(m["loss"] for m in trainer.evaluate(val).values())
    history = trainer.fit(_data(400, seed=0), val)
    assert history[-1]["val/loss"] < 0.1 * start  # about 0.03 × in practice
    after = list(model.shared_parameters())
    assert shared and all(not torch.equal(p, q) for p, q in zip(after, shared, strict=True))
    # the toy's weights reached the update: the 5×-scaled task b got the smaller share
    assert history[-1]["weight/a"] > history[-1]["weight/b"] > 0


def test_the_balancer_table_in_the_docs_lists_every_method_and_its_parameters():
    """docs/guide/balancers.md: a row per registered balancer naming each constructor
    parameter (FAMO's loss_average was missing)."""
    import inspect
    import re
    from pathlib import Path

    from polytask.balancers import BALANCERS

    text = (Path(__file__).parents[2] / "docs" / "guide" / "balancers.md").read_text()
    rows: dict[str, str] = {}
    for line in text.splitlines():
        found = re.match(r"\| ((?:`[a-z_0-9]+`(?:, )?)+) \|.*\|(.*)\|\s*$", line)
        for name in re.findall(r"`([a-z_0-9]+)`", found.group(1)) if found else []:
            rows.setdefault(name, found.group(2))  # type: ignore[union-attr]
    for name, cls in BALANCERS.items():
        assert name in rows, f"no row for {name}"
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        missing = [p for p in params if f"`{p}`" not in rows[name]]
        assert not missing, f"{name}: {missing} not in its row"
