"""Surface normals: a unit vector per pixel, read from .npy files; missing pixels are NaN."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polytask.tasks._columns import DataError
from polytask.tasks._kinds._base import Geometry, TargetFit
from polytask.tasks._kinds._dense import (
    DenseKind,
    PixelStats,
    Size,
    refuse_shape,
    resize_valid,
    stats_metric,
    transform_map,
)
from polytask.tasks._losses import LossSpec
from polytask.tasks._metrics import Metric

if TYPE_CHECKING:
    from polytask.tasks._task import Task

BIN = 0.1
"""Width (degrees) of the angle histogram the median angle is read from."""

THRESHOLDS = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}
"""The customary angle thresholds (degrees): the share of pixels with a smaller error."""


def unit(v: Tensor) -> Tensor:
    """Vectors (N, 3, ...) scaled to unit length (a zero vector stays zero)."""
    return F.normalize(v, dim=1, eps=1e-6)


def cosine(pred: Tensor, target: Tensor) -> Tensor:
    """1 − cos(angle) between the predicted direction and the target, per pixel (N, H, W)."""
    return 1 - (unit(pred) * target).sum(dim=1)


def l1(pred: Tensor, target: Tensor) -> Tensor:
    """|n̂ − n|₁ summed over x, y, z, per pixel (N, H, W), n̂ the unit predicted direction."""
    return (unit(pred) - target).abs().sum(dim=1)


def renormalise(t: Tensor) -> Tensor:
    """(..., 3, H, W) vectors at unit length; pixels with a missing component or a zero vector: NaN
    in all three."""
    norm = t.norm(dim=-3, keepdim=True)
    keep = ~torch.isnan(norm) & (norm > 1e-6)
    return torch.where(keep, t / norm.clamp_min(1e-6), float("nan"))


class AngleStats(PixelStats):
    """Angles (degrees) between predicted and true normals over labelled pixels: their sum,
    the counts under each threshold, and a histogram in 0.1° bins, from which the median is
    read (the centre of the bin holding it: within 0.05° of the exact median)."""

    def __init__(self) -> None:
        self.count = 0
        self.angle_sum = 0.0
        self.under = dict.fromkeys(THRESHOLDS, 0)
        self.histogram = torch.zeros(round(180 / BIN), dtype=torch.long)

    @classmethod
    def of(cls, truth: np.ndarray, prediction: np.ndarray) -> AngleStats:
        """Statistics of whole arrays."""
        stats = cls()
        stats.add(torch.as_tensor(prediction), torch.as_tensor(truth))
        return stats

    def add(self, prediction: Tensor, truth: Tensor) -> None:
        keep = ~torch.isnan(truth).any(dim=1)
        p, t = (v.double().movedim(1, -1)[keep] for v in (prediction, truth))
        # atan2(|p × t|, p · t): accurate at small angles too, where acos(p · t) is not
        angle = torch.rad2deg(torch.atan2(torch.linalg.cross(p, t).norm(dim=-1), (p * t).sum(-1)))
        angle[p.norm(dim=-1) == 0] = 90.0  # no direction: cos 0, as the loss reads it (atan2: 0)
        self.count += len(angle)
        self.angle_sum += float(angle.sum())
        for name, limit in THRESHOLDS.items():
            self.under[name] += int((angle < limit).sum())
        bins = (angle / BIN).long().clamp(max=len(self.histogram) - 1)
        self.histogram += torch.bincount(bins, minlength=len(self.histogram))

    def values(self) -> dict[str, float]:
        ranks = torch.tensor([(self.count + 1) // 2, self.count // 2 + 1])  # the middle one(s)
        middle = torch.searchsorted(self.histogram.cumsum(0), ranks).double().mean()
        return {
            "mean_angle": self.angle_sum / self.count,
            "median_angle": (float(middle) + 0.5) * BIN,
            **{name: n / self.count for name, n in self.under.items()},
        }


class NormalsKind(DenseKind):
    """A unit vector per pixel (surface normals in camera axes, x to the right): targets
    (N, 3, H, W) float, NaN where missing, read from a .npy float array (3, H, W). The head gives
    (N, 3, H, W), scaled to unit length by the loss and the predictions; loss 1 − cos (default)
    or l1 over labelled pixels; metrics the mean and median angle error (degrees) and the share
    of pixels within 11.25°, 22.5° and 30°. A horizontal flip negates x."""

    served_meaning = "the predicted unit normal per pixel, shape (batch, 3, H, W)"

    losses: ClassVar[Mapping[str, LossSpec]] = {"cosine": LossSpec(cosine), "l1": LossSpec(l1)}
    metrics: ClassVar[Mapping[str, Metric]] = {
        "mean_angle": stats_metric("mean_angle", AngleStats.of, False),
        "median_angle": stats_metric("median_angle", AngleStats.of, False),
        **{name: stats_metric(name, AngleStats.of, True) for name in THRESHOLDS},
    }

    def out_features(self, task: Task) -> int:
        return 3

    def expected_output(self, task: Task) -> str:
        return "a vector (x, y, z)"

    def output_shapes(self, task: Task, target: Tensor) -> list[tuple[int, ...]]:
        n, _, h, w = target.shape
        return [(n, 3, h, w)]

    def target_shape(self, size: Size) -> tuple[int, ...]:
        return (3, *size)

    def element_mask(self, target: Tensor) -> Tensor:
        """One entry per pixel (N, H, W): all three components present."""
        return ~torch.isnan(target).any(dim=1)

    def pixel_stats(self, task: Task) -> PixelStats:
        return AngleStats()

    def predict(self, output: Tensor) -> Tensor:
        return unit(output)

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """The same normal at every labelled pixel: nothing to learn."""
        vectors = target.movedim(1, -1)[self.element_mask(target)]
        if not len(vectors) or bool((vectors != vectors[0]).any()):
            return super().degenerate(task, target, fit)
        x, y, z = vectors[0].tolist()
        return f"every labelled pixel has the normal ({x:.3g}, {y:.3g}, {z:.3g})"

    def read_map(
        self,
        task: Task,
        path: Path,
        array: np.ndarray,
        mode: str | None,
        fit: TargetFit,
        size: Size,
    ) -> Tensor:
        """A .npy float array (3, H, W) (NaN: missing), resized bilinearly over the present
        pixels and scaled back to unit length."""
        if mode is not None:
            raise DataError(
                f"task {task.name!r}: {path} is a PNG; normals are read from a .npy float array "
                "(3, H, W)"
            )
        if array.dtype.kind != "f":
            raise DataError(f"task {task.name!r}: {path} holds {array.dtype} values, not floats")
        if array.ndim != 3 or array.shape[0] != 3:
            refuse_shape(task, path, array, "(3, H, W): x, y, z first")
        if np.isinf(array).any():
            raise DataError(
                f"task {task.name!r}: {path} holds infinite values; mark missing pixels NaN"
            )
        normals = renormalise(torch.from_numpy(array.astype(np.float32)))
        return renormalise(resize_valid(normals, size))

    def rescale_target(self, task: Task, target: Tensor, original_size: Size, size: Size) -> Tensor:
        """As every map, then at unit length again (resizing averages neighbouring normals)."""
        return renormalise(super().rescale_target(task, target, original_size, size))

    def transform_target(self, task: Task, target: Tensor, geometry: Geometry) -> Tensor:
        """The map flipped, cropped and resized with its image; a flip mirrors x."""
        moved = transform_map(target, geometry, lambda t, size: renormalise(resize_valid(t, size)))
        if geometry.hflip:
            moved = torch.cat([-moved[..., :1, :, :], moved[..., 1:, :, :]], dim=-3)
        return moved
