"""MTAN, multi-task attention network (Liu, Johns & Davison, CVPR 2019): one shared encoder,
and per task a soft attention mask at every stage that picks the shared features it needs.

At stage j task k keeps a_j = m_j ⊙ p_j of the shared block output p_j, with
m_j = σ(W₂ ReLU(W₁ [p_j, f_j(a_{j−1})])): 1×1 "convolutions" over the channel dimension, so
the same module serves feature maps (B, C, H, W), sequences (B, C, T) and vectors (B, C).
f_j maps the previous stage's attended features to this stage's channels and size. The masks
read the block output rather than the paper's mid-block feature, so any block can be used.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polytask._validation import checked
from polytask.models._base import MultiTaskNet
from polytask.models._hints import LayerSizes, Rate, TaskRates, TowerSizes
from polytask.models._mlp import dense_block
from polytask.models._towers import task_towers
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
    """One task's attention mask at one stage."""

    def __init__(self, channels: int, previous: int | None) -> None:
        super().__init__()
        self.carry = ChannelLinear(previous, channels) if previous is not None else None
        width = channels * (1 if previous is None else 2)
        self.mask = nn.Sequential(
            ChannelLinear(width, channels),
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
    own; the blocks are shared."""

    @checked
    def __init__(
        self,
        blocks: Sequence[nn.Module] | nn.ModuleList,
        channels: Sequence[int],
        tasks: Sequence[Task],
        heads: Mapping[str, nn.Module] | nn.ModuleDict | None = None,
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
                        _StageAttention(c, channels[j - 1] if j else None)
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
        self._masks: dict[str, list[Tensor]] = {}  # floats only when asked: no sync per step

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        shared = []
        for block in self.blocks:
            x = block(x)
            shared.append(x)
        out = {}
        for t in self.tasks:
            attended: Tensor | None = None
            means = []
            stages: nn.ModuleList = self.attention[t.name]  # type: ignore[assignment]
            for stage, p in zip(stages, shared, strict=True):
                attended, mask = stage(p, attended)
                means.append(mask.detach().mean())
            self._masks[t.name] = means
            out[t.name] = t.shape_output(self.heads[t.name](attended))
        return out

    def diagnostics(self) -> dict[str, float]:
        """Mean attention mask per task and stage: the share of shared features a task keeps."""
        return {
            f"mtan/{name}/{j}": float(m)
            for name, means in self._masks.items()
            for j, m in enumerate(means)
        }

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.blocks.parameters()

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


def build_mtan(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    tower: TowerSizes = (),
    task_dropout: TaskRates | None = None,
) -> MTAN:
    """`mtan`: per task an attention mask over every layer of the shared `hidden` trunk, then
    its head or `tower`."""
    return mtan_mlp(len(features), tasks, hidden, dropout, tower, task_dropout)
