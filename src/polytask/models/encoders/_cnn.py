"""Encoder `cnn`: a small plain conv net (conv → BN → ReLU stages, each halving the size), the
cheapest image trunk; its output is the last stage's feature map."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator
from torch import Tensor, nn

from polytask.models._hints import LayerSizes, Rate
from polytask.models.encoders._base import Encoder, Features, check_image, image_shape


def _odd(k: int) -> int:
    if k < 1 or k % 2 == 0:
        raise ValueError(f"must be an odd positive kernel size (to keep 'same' padding), got {k}")
    return k


Kernel = Annotated[int, AfterValidator(_odd)]
"""An odd kernel size >= 1."""


def conv_stage(
    in_channels: int, out_channels: int, kernel: int, stride: int, dropout: float = 0.0
) -> nn.Sequential:
    """Conv (no bias: the BN has one) → BatchNorm → ReLU (→ channel dropout)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class CNNEncoder(Encoder):
    """`len(channels)` stages of stride 2, so the output (N, channels[-1], ⌈H/s⌉, ⌈W/s⌉) has
    stride s = 2^len(channels). `net` is the stages as one nn.Sequential (the lean Gramian
    gradient mode walks it block by block; MTAN attends after each)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (32, 64, 128),
        kernel: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c, _, _ = image_shape("cnn", input_shape)
        sizes = [c, *channels]
        self.net = nn.Sequential(
            *(conv_stage(a, b, kernel, 2, dropout) for a, b in itertools.pairwise(sizes))
        )
        self.stage_channels = tuple(channels)
        self._declare(input_shape, Features(channels[-1], 2 ** len(channels), spatial=True))

    def stages(self) -> list[nn.Module]:
        return list(self.net)

    def forward(self, x: Tensor) -> Tensor:
        check_image("cnn", x, self.input_shape[0])
        out: Tensor = self.net(x)
        return out


def build_cnn(
    input_shape: tuple[int, ...],
    /,
    *,
    channels: LayerSizes = (32, 64, 128),
    kernel: Kernel = 3,
    dropout: Rate = 0.0,
) -> CNNEncoder:
    """`cnn`: one conv → BN → ReLU stage of stride 2 per entry of `channels` (its output
    channels), `kernel`×`kernel` convolutions, channel `dropout` after each stage."""
    image_shape("cnn", input_shape)
    return CNNEncoder(input_shape, channels, kernel, dropout)
