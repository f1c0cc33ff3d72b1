"""What every encoder (a shared trunk for one input modality) promises: a `Features`
description of its output, so that heads and architectures can be built for it without a
dry run, and an `InputShape` that tells an architecture builder its inputs are not tabular."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Features:
    """What an encoder outputs: a vector of `channels` per row, (spatial) a feature map of
    `channels` with one cell per `stride` input pixels on each side, or (sequence) `channels`
    per position of a padded sequence, with the padding mask carried as one more channel
    (`split_mask` / `join_mask`), so that the representation stays one tensor that every
    gradient mode can differentiate."""

    channels: int
    """C: the vector's size, or the feature map's channels."""
    stride: int = 1
    """Input pixels per feature-map cell along each side (spatial outputs only)."""
    spatial: bool = False
    """True: `forward` gives (N, C, h, w); False: (N, C)."""
    sequence: bool = False
    """True: `forward` gives (N, L, C + 1): C features per position (zero where padded), then
    the mask (1 at real positions, 0 at padding); `stride` input steps per position."""
    size: tuple[int, ...] | None = field(default=None, compare=False)
    """The input's spatial size (height, width) the map is of, where the encoder knows it
    (per-pixel heads check that it is a multiple of `stride`)."""

    def __post_init__(self) -> None:
        if self.channels < 1 or self.stride < 1:
            raise ValueError(
                f"Features needs channels >= 1 and stride >= 1, got {self.channels}, {self.stride}"
            )
        if self.spatial and self.sequence:
            raise ValueError("Features are spatial (a feature map) or a sequence, not both")

    @property
    def per_position(self) -> bool:
        """The representation keeps positions (a feature map or a sequence), not one vector."""
        return self.spatial or self.sequence


def split_mask(z: Tensor) -> tuple[Tensor, Tensor]:
    """A sequence representation (N, L, C + 1) → its features (N, L, C) and its padding mask
    (N, L), True at real positions."""
    return z[..., :-1], z[..., -1] > 0.5


def join_mask(h: Tensor, mask: Tensor) -> Tensor:
    """Features (N, L, C) and a mask (N, L) → the sequence representation (N, L, C + 1), its
    features zeroed at padded positions (so nothing downstream reads them)."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return torch.cat([h * m, m], dim=-1)


class MaskedPool(nn.Module):
    """(N, L, C + 1) sequence representation → (N, C), the mean over real positions: how a
    sequence-level head (a label per sentence or utterance) reads a sequence."""

    def forward(self, z: Tensor) -> Tensor:
        h, mask = split_mask(z)
        m = mask.to(h.dtype).unsqueeze(-1)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


@dataclass(frozen=True)
class InputShape:
    """The shape of one input row, e.g. (C, H, W) for images: given to an architecture builder
    (`hard_sharing`, `mtan`) instead of the tabular feature names, so it builds an encoder."""

    shape: tuple[int, ...]
    vocab_size: int | None = None
    """Token inputs: how many token ids there are (text encoders' embedding size)."""
    sample_rate: int | None = None
    """Audio inputs: samples per second of the waveforms (audio encoders' filter bank)."""

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if not shape or any(not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"InputShape needs positive integer sizes, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)

    def __iter__(self) -> Iterator[int]:
        return iter(self.shape)

    def __len__(self) -> int:
        return len(self.shape)

    def __getitem__(self, i: int) -> int:
        return self.shape[i]


class Encoder(nn.Module):
    """A shared trunk: `forward(x)` gives the features `features` describes; `out_dim` is
    `features.channels` (what hard sharing reads). Conv encoders also list their `stages()`
    (run in order; `stage_channels` each) and the `neck()` that merges the stages' outputs
    into the features, so that MTAN can attend after every stage."""

    features: Features
    out_dim: int
    input_shape: tuple[int, ...]
    """The input shape the encoder was built for (one row, e.g. (C, H, W))."""
    stage_channels: tuple[int, ...] = ()

    def _declare(self, input_shape: Sequence[int], features: Features) -> None:
        """Set what the encoder promises (call once its layers exist)."""
        self.input_shape = tuple(input_shape)
        if features.spatial and features.size is None and len(self.input_shape) >= 2:
            features = replace(features, size=tuple(self.input_shape[-2:]))
        self.features = features
        self.out_dim = features.channels

    def stages(self) -> list[nn.Module] | None:
        """The ordered stages whose outputs `neck()` merges (None: not a staged conv net)."""
        return None

    def neck(self) -> nn.Module | None:
        """The module that turns the list of every stage's output into the features (None:
        the last stage's output is the features)."""
        return None

    def output_numel(self, input_shape: Sequence[int] | None = None) -> int:
        """Floats per row of the output for `input_shape` (default: the one built for); a
        feature map has ceil(size / stride) cells along each side."""
        shape = tuple(input_shape or self.input_shape)
        if self.features.sequence:  # the longest sequence, with the mask channel
            return (self.features.channels + 1) * math.ceil(shape[0] / self.features.stride)
        if not self.features.spatial:
            return self.features.channels
        cells = math.prod(math.ceil(s / self.features.stride) for s in shape[1:])
        return self.features.channels * cells

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError


def tabular_shape(encoder: str, input_shape: Sequence[int] | InputShape) -> int:
    """F from `input_shape` (F,), or a ValueError naming the encoder and what it takes."""
    shape = tuple(input_shape)
    if len(shape) != 1 or not isinstance(shape[0], int) or shape[0] < 1:
        raise ValueError(
            f"encoder {encoder!r} takes tabular rows: input_shape must be (F,), got {shape} "
            "(for images use encoder cnn, resnet_fpn, vit or timm)"
        )
    return shape[0]


def image_shape(encoder: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) from `input_shape`, or a ValueError naming the encoder and what it takes."""
    shape = tuple(input_shape)
    if len(shape) != 3 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(
            f"encoder {encoder!r} takes images: input_shape must be (C, H, W) of positive sizes "
            f"(polytask.models.InputShape((C, H, W))), got {shape}"
        )
    return shape


def check_image(encoder: str, x: Tensor, channels: int) -> None:
    """Refuse a batch that is not (N, `channels`, H, W), naming the encoder and both shapes."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"encoder {encoder!r} takes images of shape (N, {channels}, H, W), got {tuple(x.shape)}"
        )
