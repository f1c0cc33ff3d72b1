"""Shared pieces for balancer tests: small models and the naive (K backwards) reference."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polytask.balancers import (
    BALANCERS,
    Balancer,
    BilevelBalancer,
    GradientInfo,
    GramianBalancer,
    JacobianBalancer,
    make_balancer,
)


def make(name: str, tasks: list[str]) -> Balancer:
    params: dict[str, object] = {}
    if name == "fixed":
        params["weights"] = {t: float(i + 1) for i, t in enumerate(tasks)}
    if name == "krum":
        params = {"n_byzantine": 1, "n_selected": 2}
    balancer = make_balancer(name, **params)
    balancer.setup(tasks)
    return balancer


GRADIENT_METHODS = sorted(
    n for n, c in BALANCERS.items() if issubclass(c, GramianBalancer | JacobianBalancer)
)
GRAMIAN_METHODS = sorted(n for n, c in BALANCERS.items() if issubclass(c, GramianBalancer))


class Model(nn.Module):
    """A sequential trunk and K linear heads; `kind` picks an MLP or a small CNN."""

    def __init__(self, kind: str, k: int) -> None:
        super().__init__()
        torch.manual_seed(1)
        if kind == "mlp":
            self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh())
            dim = 8
        else:
            self.trunk = nn.Sequential(
                nn.Conv2d(2, 4, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(4, 4, 3, stride=2),
                nn.Tanh(),
                nn.Flatten(),
            )
            dim = 4 * 3 * 3
        self.heads = nn.ModuleList([nn.Linear(dim, 1) for _ in range(k)])

    def losses(self, z: Tensor | list[Tensor], y: Tensor) -> Tensor:
        """Mean squared error per head; z is shared or one tensor per head."""
        zs = z if isinstance(z, list) else [z] * len(self.heads)
        return torch.stack(
            [
                ((h(zi).squeeze(1) - y[:, i]) ** 2).mean()
                for i, (h, zi) in enumerate(zip(self.heads, zs, strict=True))
            ]
        )

    def all_params(self) -> list[nn.Parameter]:
        return [*self.trunk.parameters(), *self.heads.parameters()]

    def grads(self) -> list[Tensor]:
        return [
            p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in self.all_params()
        ]


def data(kind: str, k: int, n: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g) if kind == "mlp" else torch.randn(n, 2, 7, 7, generator=g)
    return x, torch.randn(n, k, generator=g) * torch.arange(1, k + 1)


def naive_grads(
    model: Model,
    balancer: Balancer,
    x: Tensor,
    y: Tensor,
    val: tuple[Tensor, Tensor],
    space: str = "params",
) -> list[Tensor]:
    """K separate backward passes, J built row by row, the balancer on J; heads get ∂L_k."""
    z = model.trunk(x)
    losses = model.losses(z, y)
    shared = list(model.trunk.parameters())
    heads = list(model.heads.parameters())
    wrt: list[Tensor] = [z] if space == "representation" else shared
    rows = []
    for i in range(losses.shape[0]):
        gs = torch.autograd.grad(losses[i], wrt, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    jac = torch.stack(rows)
    products = flat_val = None
    if isinstance(balancer, BilevelBalancer):
        g_val = torch.autograd.grad(model.losses(model.trunk(val[0]), val[1]).sum(), shared)
        flat_val = torch.cat([g.reshape(-1) for g in g_val])
        products = jac.double() @ flat_val.double()
    info = GradientInfo(losses.detach(), jacobian=jac, val_products=products, val_gradient=flat_val)
    combined = balancer.aggregate(info)  # type: ignore[attr-defined]
    head_grads = torch.autograd.grad(losses.sum(), heads, retain_graph=True)
    if space == "representation":
        shared_grads = torch.autograd.grad(z, shared, combined.reshape(z.shape))
    else:
        sizes = [p.numel() for p in shared]
        shared_grads = tuple(
            c.view(p.shape) for c, p in zip(combined.split(sizes), shared, strict=True)
        )
    return [*shared_grads, *head_grads]
