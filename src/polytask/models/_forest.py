"""Random forests, one per task, grown by scikit-learn and compiled into tensors.

A forest is grown, not trained: `refit`, which the Trainer calls with the whole training batch
before its first full-batch step, grows each task's trees on that task's labelled rows, then
copies every tree's nodes (split feature, threshold, children, leaf value) into buffers. From
then on the model predicts by walking those buffers with tensor gathers, so it evaluates,
checkpoints, serves and exports like any other architecture, without scikit-learn. Alone it is
a strong single-task baseline for small tabular tasks; in a blend (`model.blend`) its errors
are unlike a linear or multilevel model's, and their average beats both (Parkinsons' patients).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from polytask._validation import checked
from polytask.models._base import GrownNet, require_mse_regression
from polytask.models._hints import Count, Fraction
from polytask.tasks._task import Task

LEAVES = (1, 3, 10)
"""Smallest leaf sizes tried when none is given (the best out-of-bag score is kept)."""
CHUNK = 1 << 22
"""Rows × trees walked at once: bounds the memory of a forward pass."""


def grow_forest(
    x: np.ndarray,
    y: np.ndarray,
    *,
    trees: int,
    seed: int,
    min_leaf: int | None = None,
    max_features: float = 1.0,
    classify: bool = False,
) -> Any:
    """A scikit-learn random forest of `trees` trees on (x, y): with `min_leaf` None, the
    smallest leaf size among `LEAVES` with the best out-of-bag score (R² or accuracy: no rows
    are held out for it); a regressor, or a classifier with `classify`."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if classify else RandomForestRegressor
    if min_leaf is not None:
        leaves: tuple[int, ...] = (min_leaf,)
    else:
        leaves = LEAVES if len(y) >= 2 * max(LEAVES) else LEAVES[:1]
    models = []
    for leaf in leaves:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a few rows never out of bag in small tasks
            model = cls(
                trees, min_samples_leaf=leaf, max_features=max_features,
                oob_score=len(leaves) > 1, random_state=seed, n_jobs=1,
            )  # fmt: skip
            models.append(model.fit(x, y))
    if len(models) == 1:
        return models[0]
    return max(models, key=lambda m: float(m.oob_score_))


class Forest(GrownNet):
    """A random forest per task on the encoded input columns (one-output regression tasks with
    the mse loss), grown from the whole training batch by `refit` (the Trainer calls it before
    its first full-batch step: `training.optimizer: lbfgs`, a batch of at least the training
    rows; it stops after that step) and then predicted with tensor ops. Until grown it
    predicts 0. `min_leaf` None picks the smallest leaf from `LEAVES` by the out-of-bag
    score; `max_features`: the share of columns each split may choose from."""

    refit_reason: ClassVar[str | None] = (
        "architecture forest grows its trees from the whole training set"
    )
    feature: Tensor
    threshold: Tensor
    left: Tensor
    right: Tensor
    value: Tensor
    roots: Tensor
    depth: Tensor
    _VARIABLE: ClassVar[tuple[str, ...]] = (
        "feature", "threshold", "left", "right", "value", "roots",
    )  # fmt: skip

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        trees: int = 100,
        min_leaf: int | None = None,
        max_features: float = 1.0,
    ) -> None:
        super().__init__()
        require_mse_regression(
            tasks,
            "architecture forest grows trees by squared error, one value per task",
            "another architecture (compare's classic baselines fit forests to classification "
            "tasks too)",
        )
        self._init_grown(tasks)
        self.in_dim, self.trees = in_dim, trees
        self.min_leaf, self.max_features = min_leaf, max_features
        self.register_buffer("feature", torch.zeros(0, dtype=torch.long))
        self.register_buffer("threshold", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("left", torch.zeros(0, dtype=torch.long))
        self.register_buffer("right", torch.zeros(0, dtype=torch.long))
        self.register_buffer("value", torch.zeros(0))
        self.register_buffer("roots", torch.zeros(len(tasks), 0, dtype=torch.long))
        self.register_buffer("depth", torch.zeros((), dtype=torch.long))
        self.steps = 0
        """`depth` as a Python int: a walk's steps, fixed in an exported graph."""

    @torch.no_grad()
    def refit(
        self,
        x: Tensor,
        targets: Mapping[str, Tensor],
        masks: Sequence[Tensor],
        weights: Tensor,
    ) -> bool:
        """Grow every task's trees on its labelled rows of the training batch (once: a grown
        forest stays as it is); True when it grew them."""
        if self.fitted:
            return False
        inputs = x.detach().reshape(len(x), -1).double().cpu().numpy()
        forests = []
        for k, task in enumerate(self.tasks):
            m = self._labelled(task, masks[k], "a forest").cpu().numpy()
            y = targets[task.name].reshape(len(x), -1)[:, 0].double().cpu().numpy()[m]
            seed = int(self.seed) + k
            grown = grow_forest(inputs[m], y, trees=self.trees, seed=seed,
                                min_leaf=self.min_leaf, max_features=self.max_features)  # fmt: skip
            forests.append(grown)
        self._compile([[t.tree_ for t in f.estimators_] for f in forests])
        return True

    @property
    def fitted(self) -> bool:
        """Whether the trees are grown (read from a buffer's size: fixed in an exported graph)."""
        return self.value.numel() > 0

    def _compile(self, forests: Sequence[Sequence[Any]]) -> None:
        """Every tree's nodes into the flat buffers: a leaf's children are itself, its threshold
        +inf (so a walk that reached it stays), so all walks take `depth` steps."""
        parts: dict[str, list[np.ndarray]] = {n: [] for n in ("f", "t", "l", "r", "v")}
        roots, offset, depth = [], 0, 0
        for trees in forests:
            row = []
            for tree in trees:
                n = int(tree.node_count)
                ids = np.arange(n)
                leaf = tree.children_left == -1
                parts["f"].append(np.where(leaf, 0, tree.feature))
                parts["t"].append(np.where(leaf, np.inf, tree.threshold))
                parts["l"].append(np.where(leaf, ids, tree.children_left) + offset)
                parts["r"].append(np.where(leaf, ids, tree.children_right) + offset)
                parts["v"].append(tree.value.reshape(n, -1)[:, 0])
                row.append(offset)
                offset += n
                depth = max(depth, int(tree.max_depth))
            roots.append(row)
        device = self.anchor.device
        joined = {k: np.concatenate(v) for k, v in parts.items()}
        self.feature = torch.as_tensor(joined["f"], dtype=torch.long, device=device)
        self.threshold = torch.as_tensor(joined["t"], dtype=torch.float64, device=device)
        self.left = torch.as_tensor(joined["l"], dtype=torch.long, device=device)
        self.right = torch.as_tensor(joined["r"], dtype=torch.long, device=device)
        self.value = torch.as_tensor(joined["v"], dtype=torch.float32, device=device)
        self.roots = torch.as_tensor(np.asarray(roots), dtype=torch.long, device=device)
        self.depth.fill_(depth)
        self.steps = depth

    def _loaded(self) -> None:
        self.steps = int(self.depth)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = x.reshape(x.shape[0], -1)
        # sklearn compares float32 inputs with float64 thresholds: so does this
        step = max(1, CHUNK // max(1, self.roots.numel()))
        return self._outputs(x, x.float().double(), step, self._walk)

    def _walk(self, rows: Tensor) -> Tensor:
        """Each task's mean over its trees for `rows`: every row walks every tree `depth` steps
        down (the nodes as a rows × trees index), then reads its leaves' values."""
        node = self.roots.reshape(1, -1) + torch.zeros_like(rows[:, :1], dtype=torch.long)
        for _ in range(self.steps):
            go_left = rows.gather(1, self.feature[node]) <= self.threshold[node]
            node = torch.where(go_left, self.left[node], self.right[node])
        return self.value[node].unflatten(1, self.roots.shape).mean(2)


def build_forest(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    trees: Count = 100,
    min_leaf: Count | None = None,
    max_features: Fraction = 1.0,
) -> Forest:
    """`forest`: a random forest of `trees` trees per task (one-output mse regression tasks),
    grown by scikit-learn from the whole training batch (`training.optimizer: lbfgs`, batch at
    least the training rows; training stops after its first step) and predicted with tensor
    ops. `min_leaf`: the smallest leaf (none: 1, 3 or 10 by the out-of-bag score);
    `max_features`: the share of columns each split may choose from. Alone, a single-task
    baseline; in `model.blend`, a partner whose errors are unlike a linear model's."""
    if max_features <= 0:
        raise ValueError("max_features must be above 0 (the share of columns a split reads)")
    return Forest(len(features), tasks, trees, min_leaf, max_features)
