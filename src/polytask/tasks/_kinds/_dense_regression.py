"""Dense regression (depth and the like): a value per pixel, read from .npy or 16-bit PNG
files; missing pixels are NaN; trained standardised with the training pixels' scale."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from polytask.tasks._columns import DataError
from polytask.tasks._kinds._base import Scale, TargetFit, unscale
from polytask.tasks._kinds._dense import (
    DenseKind,
    PixelStats,
    Size,
    refuse_shape,
    resize_valid,
    stats_metric,
)
from polytask.tasks._losses import LossSpec, standard_losses
from polytask.tasks._metrics import Metric, Undefined

if TYPE_CHECKING:
    from polytask.tasks._task import Task

LOG_FLOOR = 0.01
"""si_log takes the log of predictions above this (in units of the mean training value) and
continues it linearly below, so that a prediction at or below 0 is pushed up, not cut off."""

DELTA = 1.25
"""delta1 counts the pixels whose prediction is within this factor of the truth."""


def si_log(pred: Tensor, target: Tensor, **params: float) -> Tensor:
    """Scale-invariant log loss (Eigen et al., NIPS 2014) as per-pixel terms: with
    d = log y − log ŷ over an image's n pixels of positive target, the image's loss
    (1/n) Σ d² − (λ/n²) (Σ d)² is the mean of its pixels' d_i² − λ d_i d̄, so the mean of these
    terms over a batch's pixels weighs each image by its labelled pixels. Pixels whose target is
    not positive (missing ones arrive as 0) give 0. Targets and predictions are (N, H, W), in
    the rescaled units of `DenseRegressionKind` (value / training mean: d does not change)."""
    lam = params.get("lambda", 0.5)
    valid = target > 0
    log_pred = torch.where(
        pred > LOG_FLOOR,
        torch.log(pred.clamp_min(LOG_FLOOR)),
        math.log(LOG_FLOOR) + (pred - LOG_FLOOR),
    )
    d = torch.where(valid, torch.log(torch.where(valid, target, 1.0)) - log_pred, 0.0)
    per_image = d.sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp_min(1)
    return d**2 - lam * d * per_image[:, None, None]


ROUND_TRIP = 1e-6
"""A target within this share of |mean| + std of 0 is 0 come back through the float32
standardisation (its rounding: about 6e-8 of |mean|)."""


class DepthStats(PixelStats):
    """Sums over labelled pixels, in original units: |ŷ − y|, (ŷ − y)², and over pixels with
    y > 0 the relative error |ŷ − y| / y and the count within a factor 1.25 (delta1)."""

    def __init__(self) -> None:
        self.count = self.positive = 0
        self.abs_sum = self.square_sum = self.rel_sum = 0.0
        self.within = 0

    @classmethod
    def of(cls, truth: np.ndarray, prediction: np.ndarray) -> DepthStats:
        """Statistics of whole arrays."""
        stats = cls()
        stats.add(torch.as_tensor(prediction), torch.as_tensor(truth))
        return stats

    def add(self, prediction: Tensor, truth: Tensor) -> None:
        keep = ~torch.isnan(truth)
        y, p = truth[keep].double(), prediction[keep].double()
        err = (p - y).abs()
        self.count += len(y)
        self.abs_sum += float(err.sum())
        self.square_sum += float((err**2).sum())
        pos = y > 0
        y, p, err = y[pos], p[pos], err[pos]
        self.positive += len(y)
        self.rel_sum += float((err / y).sum())
        ratio = torch.maximum(p / y, y / p.clamp_min(1e-300))
        self.within += int(((p > 0) & (ratio < DELTA)).sum())

    def values(self) -> dict[str, float]:
        positive = self.positive
        none = Undefined("no positive target")
        return {
            "abs_err": self.abs_sum / self.count,
            "rel_err": self.rel_sum / positive if positive else none,
            "rmse": math.sqrt(self.square_sum / self.count),
            "delta1": self.within / positive if positive else none,
        }


class DenseRegressionKind(DenseKind):
    """A value per pixel (depth and the like): targets (N, H, W) float, NaN where missing, read
    from a .npy float array (H, W) or a 16-bit PNG (times `png_scale`, default 1/1000: millimetres
    to metres; 0 = no measurement) and resized bilinearly over the present pixels. Trained
    standardised with the training pixels' (mean, std) (`fit_files`), or, with the `si_log` loss,
    divided by their mean (logs need positive values); metrics in original units: abs_err,
    rel_err, rmse, delta1. The head gives (N, 1, H, W) or (N, H, W)."""

    served_meaning = "the predicted value per pixel in original units, shape (batch, H, W)"

    losses: ClassVar[Mapping[str, LossSpec]] = {
        **standard_losses("l1", "mse"),
        "si_log": LossSpec(si_log, ("lambda",)),
    }
    metrics: ClassVar[Mapping[str, Metric]] = {
        "abs_err": stats_metric("abs_err", DepthStats.of, False),
        "rel_err": stats_metric("rel_err", DepthStats.of, False),
        "rmse": stats_metric("rmse", DepthStats.of, False),
        "delta1": stats_metric("delta1", DepthStats.of, True),
    }
    params: ClassVar[Mapping[str, Any]] = {"png_scale": 0.001}
    loss_units = "standardised"

    def validate(self, task: Task) -> None:
        super().validate(task)
        scale = self.param(task, "png_scale")
        if not isinstance(scale, int | float) or not scale > 0:
            raise ValueError(f"task {task.name!r}: png_scale must be a number > 0, got {scale!r}")
        lam = (task.loss_params or {}).get("lambda", 0.5)
        if not 0 <= lam <= 1:
            raise ValueError(f"task {task.name!r}: si_log lambda must be in [0, 1], got {lam}")

    def expected_output(self, task: Task) -> str:
        return "one value"

    def output_shapes(self, task: Task, target: Tensor) -> list[tuple[int, ...]]:
        n, h, w = target.shape
        return [(n, 1, h, w), (n, h, w)]

    def target_shape(self, size: Size) -> tuple[int, ...]:
        return size

    def shape_output(self, raw: Tensor) -> Tensor:
        """(N, 1, H, W) → (N, H, W)."""
        return raw.squeeze(1) if raw.ndim == 4 and raw.shape[1] == 1 else raw

    def head_bias(self, task: Task) -> float | None:
        """With si_log, start at the mean training value (1 in its units): logs need ŷ > 0."""
        return 1.0 if task.loss == "si_log" else None

    def pixel_stats(self, task: Task) -> PixelStats:
        return DepthStats()

    def predict(self, output: Tensor) -> Tensor:
        return self.shape_output(output)

    def truth(self, target: Tensor, scale: Scale | None) -> np.ndarray:
        """The targets in original units, a 0 standardised and back (float32, ±1e-8 m) set to 0
        again: rel_err and delta1 read only y > 0, and a 0 come back as 1e-8 counted as a
        target with a relative error of 1e7."""
        y = super().truth(target, scale)
        if scale is not None:
            mean, std = scale
            y[np.abs(y) <= ROUND_TRIP * (abs(mean) + abs(std))] = 0.0
        return y

    def fit_files(self, task: Task, targets: Sequence[Tensor]) -> TargetFit:
        """The training pixels' (mean, std), from the rows' raw targets (original units); with
        si_log, (0, mean): a rescaling only, which keeps values positive."""
        total = square = 0.0
        count, low = 0, math.inf
        for target in targets:
            y = target[~torch.isnan(target)].double()
            if len(y):
                total, square = total + float(y.sum()), square + float((y**2).sum())
                count, low = count + len(y), min(low, float(y.min()))
        if not count:
            raise DataError(f"task {task.name!r}: no labelled pixel in the training rows")
        mean = total / count
        if task.loss == "si_log":
            if low <= 0:
                raise DataError(
                    f"task {task.name!r}: loss si_log takes logs of the targets, but the "
                    f"training rows hold values <= 0 (e.g. {low:g}); mark them missing (NaN)"
                )
            return TargetFit(scale=(0.0, mean))
        std = math.sqrt(max(square / count - mean**2, 0.0))
        return TargetFit(scale=(mean, std if std > 1e-12 * max(abs(mean), 1.0) else 1.0))

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """One value at every labelled pixel: nothing to learn."""
        y = target[~torch.isnan(target)]
        if not len(y) or bool((y != y[0]).any()):
            return super().degenerate(task, target, fit)
        value = float(unscale(y[:1], fit.scale)[0])
        return f"every labelled pixel is {value:.6g}"

    def read_map(
        self,
        task: Task,
        path: Path,
        array: np.ndarray,
        mode: str | None,
        fit: TargetFit,
        size: Size,
    ) -> Tensor:
        """A .npy of numbers (H, W) (NaN: missing) or a 16-bit PNG (value × png_scale; 0:
        missing), resized bilinearly over present pixels, standardised with `fit.scale` when
        given (raw, in original units, without)."""
        if mode is not None:
            if mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise DataError(
                    f"task {task.name!r}: {path} is a PNG of mode {mode}; {task.kind} PNGs are "
                    "16-bit greyscale (value × png_scale), or use a .npy float array"
                )
            raw = array.astype(np.float64)
            values = np.where(raw == 0, np.nan, raw * float(self.param(task, "png_scale")))
        elif array.dtype.kind not in "iuf":
            raise DataError(f"task {task.name!r}: {path} holds {array.dtype} values, not numbers")
        else:
            values = array.astype(np.float64)
        if values.ndim != 2:
            refuse_shape(task, path, values, "(H, W)")
        if np.isinf(values).any():
            raise DataError(
                f"task {task.name!r}: {path} holds infinite values; mark missing pixels NaN"
            )
        y = resize_valid(torch.from_numpy(values), size)
        if fit.scale is not None:
            mean, std = fit.scale
            y = (y - mean) / std
        return y.float()
