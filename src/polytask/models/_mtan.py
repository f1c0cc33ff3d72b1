"""MTAN, multi-task attention network (Liu, Johns & Davison, CVPR 2019): one shared encoder,
and per task a soft attention mask at every stage that picks the shared features it needs.

At stage j task k keeps a_j = m_j ⊙ p_j of the shared block output p_j, with
m_j = σ(W₂ ReLU(W₁ [p_j, f_j(a_{j−1})])): 1×1 "convolutions" over the channel dimension, so
the same module serves feature maps (B, C, H, W), sequences (B, C, T) and vectors (B, C).
f_j maps the previous stage's attended features to this stage's channels and size. The masks
read the block output rather than the paper's mid-block feature, so any block can be used.

On images (`build_mtan` with an `InputShape`) the blocks are a conv encoder's stages (`cnn`,
`resnet_fpn`), the masks carry a BatchNorm after their first 1×1 convolution as in the paper,
and an encoder's neck (resnet_fpn's feature pyramid, shared) merges each task's attended
stages into its feature map.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polytask._validation import checked
from polytask.models._base import MultiTaskNet
from polytask.models._hints import LayerSizes, Rate, TaskRates, TowerSizes
from polytask.models._mlp import dense_block
from polytask.models._towers import task_towers
from polytask.models.encoders._base import Features, InputShape, tabular_shape
from polytask.models.encoders._registry import (
    EncoderName,
    EncoderParams,
    build_encoder,
    check_encoder,
    input_shape_of,
)
from polytask.tasks._task import Task

_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


class ChannelLinear(nn.Linear):
    """A linear map over dim 1 (channels) at every position: a 1×1 convolution of any rank."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.movedim(1, -1), self.weight, self.bias).movedim(-1, 1)


def _resize(x: Tensor, size: torch.Size) -> Tensor:
    """Average-pool (or replicate) the positions of x to `size`; vectors pass through."""
    if x.shape[2:] == size:
        return x
    return _POOLS[len(size)](x, tuple(size))  # type: ignore[arg-type]


class GlobalPool(nn.Module):
    """Mean over every position after the channel dimension: (B, C, ...) → (B, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(-1) if x.dim() > 2 else x


class _StageAttention(nn.Module):
    """One task's attention mask at one stage (`norm`: a BatchNorm2d after the first 1×1
    convolution, for feature maps)."""

    def __init__(self, channels: int, previous: int | None, norm: bool = False) -> None:
        super().__init__()
        self.carry = ChannelLinear(previous, channels) if previous is not None else None
        width = channels * (1 if previous is None else 2)
        self.mask = nn.Sequential(
            ChannelLinear(width, channels),
            *([nn.BatchNorm2d(channels)] if norm else []),
            nn.ReLU(),
            ChannelLinear(channels, channels),
            nn.Sigmoid(),
        )

    def forward(self, shared: Tensor, previous: Tensor | None) -> tuple[Tensor, Tensor]:
        inputs = shared
        if previous is not None and self.carry is not None:
            inputs = torch.cat([shared, _resize(self.carry(previous), shared.shape[2:])], dim=1)
        mask = self.mask(inputs)
        return mask * shared, mask


class MTAN(MultiTaskNet):
    """Shared `blocks` (run in order; block j outputs `channels[j]` channels on dim 1) and per
    task one attention mask per block, then the task's head on its last attended features.
    Default heads pool over positions and apply the task's output layer; pass `heads` (task
    name → module on (B, channels[-1], ...)) for dense outputs. Masks and heads are each task's
    own; the blocks are shared, and so is the `neck` when given: a module from the list of a
    task's attended stage outputs to what its head reads (e.g. a feature pyramid). `norm` puts
    a BatchNorm in every mask (feature maps); `features` describes what the heads read."""

    @checked
    def __init__(
        self,
        blocks: Sequence[nn.Module] | nn.ModuleList,
        channels: Sequence[int],
        tasks: Sequence[Task],
        heads: Mapping[str, nn.Module] | nn.ModuleDict | None = None,
        neck: nn.Module | None = None,
        norm: bool = False,
        features: Features | None = None,
    ) -> None:
        super().__init__()
        self._init_tasks(tasks)
        if not blocks or len(blocks) != len(channels):
            raise ValueError(
                f"MTAN needs one channel count per block; got {len(blocks)} blocks and "
                f"channels {list(channels)}"
            )
        heads = dict(heads or {})
        unknown = sorted(set(heads) - set(self.task_names))
        if unknown:
            raise ValueError(f"heads names unknown tasks {unknown}; tasks: {list(self.task_names)}")
        self.blocks = nn.ModuleList(blocks)
        self.attention = nn.ModuleDict(
            {
                n: nn.ModuleList(
                    [
                        _StageAttention(c, channels[j - 1] if j else None, norm)
                        for j, c in enumerate(channels)
                    ]
                )
                for n in self.task_names
            }
        )
        self.heads = nn.ModuleDict(
            {t.name: heads.get(t.name) or nn.Sequential(GlobalPool(), t.build_head(channels[-1]))
             for t in tasks}
        )  # fmt: skip
        self.neck = neck
        self.features = features or Features(channels[-1])
        self._masks: dict[str, list[Tensor]] = {}  # floats only when asked: no sync per step

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        shared = []
        for block in self.blocks:
            x = block(x)
            shared.append(x)
        out = {}
        for t in self.tasks:
            attended: Tensor | None = None
            means, kept = [], []
            stages: nn.ModuleList = self.attention[t.name]  # type: ignore[assignment]
            for stage, p in zip(stages, shared, strict=True):
                attended, mask = stage(p, attended)
                means.append(mask.detach().mean())
                kept.append(attended)
            self._masks[t.name] = means
            features = attended if self.neck is None else self.neck(kept)
            out[t.name] = t.shape_output(self.heads[t.name](features))
        return out

    def diagnostics(self) -> dict[str, float]:
        """Mean attention mask per task and stage: the share of shared features a task keeps."""
        return {
            f"mtan/{name}/{j}": float(m)
            for name, means in self._masks.items()
            for j, m in enumerate(means)
        }

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.blocks.parameters()
        if self.neck is not None:
            yield from self.neck.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        yield from self.attention[name].parameters()
        yield from self.heads[name].parameters()


@checked
def mtan_mlp(
    in_dim: int,
    tasks: Sequence[Task],
    hidden: Sequence[int] = (128, 128),
    dropout: float = 0.0,
    tower: Sequence[int] = (),
    task_dropout: Mapping[str, float] | None = None,
) -> MTAN:
    """MTAN over an MLP encoder (tabular inputs): one stage per hidden layer, then each task's
    head or `tower` (see `task_towers`)."""
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must list positive layer sizes, got {list(hidden)}")
    sizes = [in_dim, *hidden]
    blocks = [dense_block(a, b, dropout) for a, b in itertools.pairwise(sizes)]
    heads = task_towers(hidden[-1], tower, tasks, dropout, task_dropout)
    return MTAN(blocks, hidden, tasks, heads=dict(heads.items()))


def mtan_encoder(
    input_shape: Sequence[int] | InputShape,
    tasks: Sequence[Task],
    encoder: str,
    encoder_params: Mapping[str, Any] | None = None,
) -> MTAN:
    """MTAN over the stages of the conv encoder `encoder` (`cnn`, `resnet_fpn`) for inputs of
    `input_shape`: per task a mask (1×1 conv → BN → ReLU → 1×1 conv → sigmoid) after every
    stage, the encoder's neck (shared) on each task's attended stages, and each task's head
    from its kind (`Task.build_head(features)`)."""
    trunk = build_encoder(encoder, input_shape, **dict(encoder_params or {}))
    stages = trunk.stages()
    if not stages:
        staged = [n for n in ("cnn", "resnet_fpn") if n != encoder]
        raise ValueError(
            f"mtan attends after every stage of a conv encoder, and encoder {encoder!r} has no "
            f"stages: use encoder {' or '.join(staged)} (or architecture hard_sharing)"
        )
    heads = {t.name: t.build_head(trunk.features) for t in tasks}
    return MTAN(
        stages, trunk.stage_channels, tasks, heads, trunk.neck(), norm=True,
        features=trunk.features,
    )  # fmt: skip


def build_mtan(
    features: Sequence[str] | InputShape,
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    tower: TowerSizes = (),
    task_dropout: TaskRates | None = None,
    encoder: EncoderName = "mlp",
    encoder_params: EncoderParams | None = None,
) -> MTAN:
    """`mtan`: per task an attention mask over every layer of the shared `hidden` trunk, then
    its head or `tower`; on images (an InputShape) over every stage of `encoder` (`cnn` or
    `resnet_fpn`, with its `encoder_params`)."""
    shape = features if isinstance(features, InputShape) else input_shape_of(features)
    if encoder == "mlp":
        width = tabular_shape("mlp", shape)
        given = {"hidden": hidden, "dropout": dropout, **(encoder_params or {})}
        params = check_encoder("mlp", given)
        return mtan_mlp(width, tasks, params["hidden"], params["dropout"], tower, task_dropout)
    if tower or task_dropout:
        raise ValueError(
            f"tower and task_dropout apply to mtan on tabular rows; with encoder {encoder!r} "
            "each task's head comes from its task kind: remove them"
        )
    return mtan_encoder(shape, tasks, encoder, encoder_params)
