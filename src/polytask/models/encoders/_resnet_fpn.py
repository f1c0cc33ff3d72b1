"""Encoder `resnet_fpn`: ResNet-style stages of basic residual blocks, and a feature pyramid
(lateral 1×1 convolutions added top-down to the upsampled coarser level) merged into ONE fine
feature map: deep features at a small stride, what dense heads (segmentation, depth,
detection) need."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator, Field
from torch import Tensor, nn
from torch.nn import functional as F

from polytask.models._hints import LayerSizes
from polytask.models.encoders._base import Encoder, Features, check_image, image_shape
from polytask.models.encoders._cnn import conv_stage


class BasicBlock(nn.Module):
    """Two 3×3 conv → BN with a skip connection (a 1×1 conv → BN when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


class FeaturePyramid(nn.Module):
    """Top-down merge of the last `len(in_channels)` maps of a list (coarsest last): each
    level's 1×1 lateral plus the coarser merged level upsampled ×2 (nearest, to its size),
    down to the finest level, then a 3×3 conv; one map of `out_channels`."""

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.smooth = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        levels = list(maps)[-len(self.laterals) :]
        merged = self.laterals[-1](levels[-1])
        for lateral, level in zip(reversed(self.laterals[:-1]), reversed(levels[:-1]), strict=True):
            merged = lateral(level) + F.interpolate(merged, size=level.shape[2:], mode="nearest")
        out: Tensor = self.smooth(merged)
        return out


class ResNetFPN(Encoder):
    """A stride-2 stem (3×3 conv → BN → ReLU) to `widths[0]` channels, then per width one
    stage of `blocks` basic blocks (a count for every stage, or one each) whose first has
    stride 2 (stage i at stride 2^(i+2)), and a `FeaturePyramid` over the stages from stride
    `fpn_stride` on: output (N, fpn_channels, ⌈H/fpn_stride⌉, ⌈W/fpn_stride⌉)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: int | Sequence[int] = 1,
        fpn_channels: int = 64,
        fpn_stride: int = 4,
    ) -> None:
        super().__init__()
        c, _, _ = image_shape("resnet_fpn", input_shape)
        blocks = [blocks] * len(widths) if isinstance(blocks, int) else list(blocks)
        if len(blocks) != len(widths):
            raise ValueError(
                f"encoder 'resnet_fpn' needs one blocks count per stage width; got widths "
                f"{list(widths)} and blocks {list(blocks)}"
            )
        strides = [2 ** (i + 2) for i in range(len(widths))]
        if fpn_stride not in strides:
            raise ValueError(
                f"encoder 'resnet_fpn': fpn_stride must be the stride of a stage, one of "
                f"{strides} for {len(widths)} widths, got {fpn_stride}"
            )
        self.stem = conv_stage(c, widths[0], 3, 2)
        layers = []
        previous = widths[0]
        for width, count in zip(widths, blocks, strict=True):
            rest = (BasicBlock(width, width) for _ in range(count - 1))
            layers.append(nn.Sequential(BasicBlock(previous, width, 2), *rest))
            previous = width
        self.layers = nn.ModuleList(layers)
        used = strides.index(fpn_stride)
        self.fpn = FeaturePyramid(widths[used:], fpn_channels)
        self.stage_channels = (widths[0], *widths)
        self._declare(input_shape, Features(fpn_channels, fpn_stride, spatial=True))

    def stages(self) -> list[nn.Module]:
        return [self.stem, *self.layers]

    def neck(self) -> nn.Module:
        return self.fpn

    def forward(self, x: Tensor) -> Tensor:
        check_image("resnet_fpn", x, self.input_shape[0])
        maps = []
        for stage in self.stages():
            x = stage(x)
            maps.append(x)
        out: Tensor = self.fpn(maps)
        return out


def _positive(sizes: int | tuple[int, ...]) -> int | tuple[int, ...]:
    counts = [sizes] if isinstance(sizes, int) else list(sizes)
    if not counts or min(counts) < 1:
        raise ValueError(f"must be a positive block count or list of them, got {sizes}")
    return sizes


def build_resnet_fpn(
    input_shape: tuple[int, ...],
    /,
    *,
    widths: LayerSizes = (32, 64, 128, 256),
    blocks: Annotated[int | tuple[int, ...], AfterValidator(_positive)] = 1,
    fpn_channels: Annotated[int, Field(ge=1)] = 64,
    fpn_stride: Annotated[int, Field(ge=4)] = 4,
) -> ResNetFPN:
    """`resnet_fpn`: residual stages of `widths` channels with `blocks` basic blocks each (one
    count for every stage, or one per stage; stage i at stride 2^(i+2)), merged by a feature
    pyramid into one map of `fpn_channels` at stride `fpn_stride` (4: the first stage's)."""
    image_shape("resnet_fpn", input_shape)
    return ResNetFPN(input_shape, widths, blocks, fpn_channels, fpn_stride)
