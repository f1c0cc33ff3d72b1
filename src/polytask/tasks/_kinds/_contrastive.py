"""Contrastive learning from augmented views (SimCLR, Chen et al. 2020), a self-supervised
auxiliary task: two random views of each row go through the model, the head is a projection,
and the NT-Xent loss pulls the two views of a row together against every other view in the
batch: for view i with partner j, ℓ_i = −log exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ), s the cosine
similarity of the projections and τ the `temperature` (a loss parameter, 0.5 by default).

Views, by the input's shape: images (N, C, H, W) get a random horizontal flip (probability
`flip`) and a random resized crop (area fraction in [`crop_scale`, 1], aspect ratio in
[3/4, 4/3], resized back by bilinear sampling), then noise; other inputs get a random
`mask_rate` of their values set to 0, then noise of std `noise_std`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polytask.tasks._kinds._base import Derived
from polytask.tasks._kinds._self_supervised import SelfSupervisedKind, masked, normal, uniform
from polytask.tasks._losses import LossSpec
from polytask.tasks._metrics import Metric, Undefined

if TYPE_CHECKING:
    from polytask.tasks._task import Task


def nt_xent(pred: Tensor, target: Tensor, temperature: float = 0.5) -> Tensor:
    """Per-row NT-Xent losses of projections `pred` (M, P); rows with the same `target` (an
    id per original row) are views of one row, each other's positives."""
    z = F.normalize(pred.reshape(len(pred), -1).float(), dim=1)
    own = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = (z @ z.T / temperature).masked_fill(own, -math.inf)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (target[:, None] == target[None, :]) & ~own
    summed = log_prob.masked_fill(~positive, 0.0).sum(1)
    return -summed / positive.sum(1).clamp_min(1)


def positive_top1(ids: np.ndarray, projections: np.ndarray) -> float:
    """How often a view's most similar other view (cosine) is a view of the same row."""
    if len(ids) < 2:
        return Undefined("needs 2 views")
    z = projections.reshape(len(ids), -1)
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(ids[sim.argmax(1)] == ids))


def image_view(
    x: Tensor, flip: float, crop_scale: float, generator: torch.Generator | None
) -> Tensor:
    """A random horizontal flip and resized crop of each image (N, C, H, W), in one bilinear
    resampling (`affine_grid` + `grid_sample`: plain torch)."""
    n = x.shape[0]
    u = uniform((n, 5), generator, x)
    area = crop_scale + (1 - crop_scale) * u[:, 0]
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1]
    ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * ratio).clamp(max=1.0)  # fractions of the image's width, height
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (1 - width) * (2 * u[:, 2] - 1)  # in [-1, 1] coordinates, crop inside
    centre_y = (1 - height) * (2 * u[:, 3] - 1)
    sign = torch.where(u[:, 4] < flip, -1.0, 1.0).to(x.dtype)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = width * sign, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class ContrastiveKind(SelfSupervisedKind):
    """NT-Xent on two augmented views of each row; the head (`projection` outputs, 64) is the
    projection, and `temperature` is the loss's parameter (`loss_params`)."""

    losses: ClassVar[Mapping[str, LossSpec]] = {"nt_xent": LossSpec(nt_xent, ("temperature",))}
    metrics: ClassVar[Mapping[str, Metric]] = {
        "positive_top1": Metric("positive_top1", positive_top1, True),
    }
    params: ClassVar[Mapping[str, float]] = {
        "projection": 64,
        "noise_std": 0.1,
        "mask_rate": 0.2,
        "flip": 0.5,
        "crop_scale": 0.5,
    }
    squeeze = False

    def validate(self, task: Task) -> None:
        super().validate(task)
        for name in ("mask_rate", "flip"):
            if not 0 <= self.param(task, name) <= 1:
                raise ValueError(
                    f"task {task.name!r}: {name} must be in [0, 1], got {self.param(task, name)}"
                )
        if not 0 < self.param(task, "crop_scale") <= 1:
            raise ValueError(
                f"task {task.name!r}: crop_scale (the smallest crop's area fraction) must be in "
                f"(0, 1], got {self.param(task, 'crop_scale')}"
            )
        projection = self.param(task, "projection")
        if projection < 1 or projection != int(projection):
            raise ValueError(f"task {task.name!r}: projection must be a positive integer")
        temperature = (task.loss_params or {}).get("temperature", 0.5)
        if not temperature > 0:
            raise ValueError(f"task {task.name!r}: temperature must be > 0, got {temperature}")

    def out_features(self, task: Task) -> int:
        return int(self.param(task, "projection"))

    def view(self, task: Task, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """One random view of each row of `x`: token ids (text) lose `mask_rate` of their
        tokens (set to padding, which the encoder skips) and get no noise; other values have
        `mask_rate` of them set to 0 (never padding: a clip keeps its length) and noise."""
        if x.dim() == 4:
            view = image_view(x, self.param(task, "flip"), self.param(task, "crop_scale"),
                              generator)  # fmt: skip
        else:
            drop = masked(x, self.param(task, "mask_rate"), generator)
            view = torch.where(drop, torch.zeros_like(x), x)
            if not x.is_floating_point():
                return view
        return view + self.param(task, "noise_std") * normal(x.shape, generator, x)

    def derive(self, task: Task, x: Tensor, generator: torch.Generator | None) -> Derived:
        ids = torch.arange(x.shape[0], dtype=torch.float32, device=x.device)
        views = [self.view(task, x, generator) for _ in range(2)]
        return Derived(torch.cat(views), ids.repeat(2))

    def evaluate(
        self, metrics: Sequence[Metric], predictions: np.ndarray, targets: np.ndarray
    ) -> dict[str, float]:
        return {m.name: m(targets, predictions) for m in metrics}
