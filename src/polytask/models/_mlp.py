"""A plain MLP trunk, the default shared encoder for tabular inputs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from polytask._validation import checked


class MLP(nn.Module):
    """Linear → activation → dropout blocks; `out_dim` is the representation size."""

    @checked
    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.0,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"MLP in_dim must be >= 1, got {in_dim}")
        if not hidden:
            raise ValueError("MLP needs at least one hidden layer size")
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers += [nn.Linear(prev, width), activation()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = prev

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def dense_block(in_dim: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """One Linear → ReLU (→ Dropout) block: a stage of MTAN's encoder, a node of LTB's tree."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout > 0 else []))
