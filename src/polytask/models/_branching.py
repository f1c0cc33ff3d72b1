"""Learning to branch (Guo, Farrell, Li & Chen, ICML 2020): a tree-shaped network whose
branching is learnt with the weights.

Layer 0 is one root block on the input; every later layer has `branches` nodes, each a
Linear → ReLU block that reads one parent node of the layer below; each task's head reads one
node of the last layer. Each child's choice of parent is a categorical variable with learnt
logits θ, sampled with the Gumbel-softmax straight-through estimator while training (the
forward pass uses one parent, the gradient reaches every logit) and taken as argmax in
evaluation: `tree()` reads the learnt tree. Every node may feed every task, so all nodes and
logits are shared parameters; the heads are the tasks' own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polytask._validation import checked
from polytask.models._base import MultiTaskNet
from polytask.models._hints import Count, LayerSizes, Positive, Rate, TaskRates, TowerSizes
from polytask.models._mlp import dense_block
from polytask.models._towers import task_towers
from polytask.tasks._task import Task


class LearningToBranch(MultiTaskNet):
    """`hidden` layer sizes (the first is the shared root), `branches` nodes per later layer,
    Gumbel-softmax `temperature` for the parent choices; heads or `tower`s per task."""

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        hidden: Sequence[int] = (64, 64),
        branches: int = 2,
        temperature: float = 1.0,
        dropout: float = 0.0,
        tower: Sequence[int] = (),
        task_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self._init_tasks(tasks)
        if len(hidden) < 2 or min(hidden) < 1:
            raise ValueError(
                f"learning to branch needs at least two positive hidden sizes (a root and one "
                f"branching layer), got {list(hidden)}"
            )
        if branches < 1:
            raise ValueError(f"branches must be >= 1, got {branches}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.root = dense_block(in_dim, hidden[0], dropout)
        self.layers = nn.ModuleList(
            [
                nn.ModuleList(
                    [dense_block(hidden[i - 1], hidden[i], dropout) for _ in range(branches)]
                )
                for i in range(1, len(hidden))
            ]
        )
        parents = [1] + [branches] * (len(hidden) - 1)
        # logits[i][j, p]: node j of layer i + 1 (or task j, last) reading node p of layer i
        children = [branches] * (len(hidden) - 1) + [len(tasks)]
        self.logits = nn.ParameterList(
            [nn.Parameter(torch.zeros(c, p)) for c, p in zip(children, parents, strict=True)]
        )
        self.heads = task_towers(hidden[-1], tower, tasks, dropout, task_dropout)

    def _choices(self, logits: Tensor) -> Tensor:
        """One-hot parent choices (children × parents), straight-through while training."""
        if self.training:
            return F.gumbel_softmax(logits, tau=self.temperature, hard=True)
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        nodes = self.root(x).unsqueeze(0)  # (parents, B, d)
        for i in range(len(self.layers)):
            layer: nn.ModuleList = self.layers[i]  # type: ignore[assignment]
            mixed = torch.einsum("cp,pbd->cbd", self._choices(self.logits[i]), nodes)
            nodes = torch.stack([block(mixed[j]) for j, block in enumerate(layer)])
        inputs = torch.einsum("kp,pbd->kbd", self._choices(self.logits[-1]), nodes)
        return {
            t.name: t.shape_output(self.heads[t.name](z))
            for t, z in zip(self.tasks, inputs, strict=True)
        }

    def tree(self) -> dict[str, list[int]]:
        """Each task's path from the root: the node index it reads at every branching layer."""
        picks = [logits.argmax(-1).tolist() for logits in self.logits]
        paths = {}
        for k, name in enumerate(self.task_names):
            path, node = [], picks[-1][k]
            for layer in reversed(picks[:-1]):
                path.append(node)
                node = layer[node]
            paths[name] = path[::-1]
        return paths

    def diagnostics(self) -> dict[str, float]:
        """Per task, the probability of its current argmax path (1: the branching has settled)."""
        probs = [torch.softmax(logits.detach(), -1) for logits in self.logits]
        out = {}
        for k, (name, path) in enumerate(self.tree().items()):
            p = probs[-1][k, path[-1]]
            for i in range(len(path) - 1, 0, -1):
                p = p * probs[i][path[i], path[i - 1]]
            out[f"ltb/{name}/path_probability"] = float(p)
        return out

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.root.parameters()
        yield from self.layers.parameters()
        yield from self.logits

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        return self.heads[name].parameters()


def build_ltb(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    tower: TowerSizes = (),
    task_dropout: TaskRates | None = None,
    branches: Count = 2,
    temperature: Positive = 1.0,
) -> LearningToBranch:
    """`ltb` (learning to branch): a root layer of `hidden[0]` units, then `branches` nodes per
    later layer, each choosing its parent, and each task its node, by Gumbel-softmax at
    `temperature`; needs at least two `hidden` sizes."""
    return LearningToBranch(
        len(features),
        tasks,
        hidden=hidden,
        branches=branches,
        temperature=temperature,
        dropout=dropout,
        tower=tower,
        task_dropout=task_dropout,
    )
