"""Test stand-ins for the image tests: two tiny file-read task kinds (a class mask read from a
PNG, and a variable number of boxes per image read from JSON), registered per test with
monkeypatch, so nothing outside the test sees them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from polytask.models.encoders import Features
from polytask.tasks import IGNORE_INDEX, KINDS, Metric, TargetFit, Task, TaskKind, standard_losses
from polytask.tasks._columns import DataError
from polytask.tasks._kinds._base import Geometry


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> str:
    """`array` (H, W) or (H, W, 3) of uint8 as a PNG at `path`; returns the file's name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)
    return path.name


class MaskKind(TaskKind):
    """Per-pixel classes read from an 8-bit PNG (255: not labelled), resized by nearest
    neighbour; flips and crops with its image."""

    losses = standard_losses("cross_entropy")
    metrics: ClassVar[Mapping[str, Metric]] = {
        "pixel_accuracy": Metric("pixel_accuracy", lambda y, p: float((y == p).mean()), True)
    }
    params: ClassVar[Mapping[str, Any]] = {"classes": 2}
    reads_files = True
    dense = True
    squeeze = False

    def out_features(self, task: Task) -> int:
        return int(self.param(task, "classes"))

    def build_head(self, task: Task, features: Features) -> nn.Module:
        """A 1×1 conv to the classes, upsampled to the input's resolution."""
        head = nn.Conv2d(features.channels, self.out_features(task), 1)
        if features.stride == 1:
            return head
        return nn.Sequential(head, nn.Upsample(scale_factor=features.stride, mode="nearest"))

    def read_target(
        self, task: Task, value: Any, base: Path, fit: TargetFit, size: tuple[int, int]
    ) -> Tensor:
        path = base / str(value)
        try:
            with Image.open(path) as image:
                values = np.asarray(image.convert("L"), dtype=np.int64)
        except OSError as err:
            raise DataError(f"cannot read mask {value}: {err}") from None
        mask = torch.from_numpy(values)
        mask[mask == 255] = IGNORE_INDEX
        return _nearest(mask, size)

    def transform_target(self, task: Task, target: Tensor, geometry: Geometry) -> Tensor:
        if geometry.hflip:
            target = target.flip(-1)
        if geometry.crop is not None:
            top, left, h, w = geometry.crop
            target = target[top : top + h, left : left + w]
        return _nearest(target, geometry.size)

    def predict(self, output: Tensor) -> Tensor:
        return output.argmax(1)

    def label_mask(self, target: Tensor) -> Tensor:
        return (target != IGNORE_INDEX).reshape(target.shape[0], -1).any(1)

    def label_count(self, target: Tensor) -> int:
        return int((target != IGNORE_INDEX).sum())

    def loss(self, fn: Any, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        pixels = target != IGNORE_INDEX
        if not bool(pixels.any()):
            return output.sum() * 0.0
        return fn(output, target.clamp_min(0))[pixels].mean()

    def evaluate(self, metrics: Any, predictions: np.ndarray, targets: np.ndarray) -> dict:
        keep = targets != IGNORE_INDEX
        return {m.name: m(targets[keep], predictions[keep]) for m in metrics}

    def truth(self, target: Tensor, scale: Any) -> np.ndarray:
        return target.numpy()

    def prediction(self, output: Tensor, scale: Any) -> np.ndarray:
        return self.predict(output).numpy()

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        return {task.name: [p.astype(np.uint8) for p in prediction]}


def _nearest(mask: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(mask.shape) == tuple(size):
        return mask
    out = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")
    return out[0, 0].long()


class BoxesKind(TaskKind):
    """A variable number of boxes [x1, y1, x2, y2] per image, read from JSON text in the
    original image's pixels; padding rows are -1, an unlabelled image NaN."""

    losses = standard_losses("mse")
    metrics: ClassVar[Mapping[str, Metric]] = {"mse": Metric("mse", lambda y, p: 0.0, False)}
    reads_files = True
    dense = True
    squeeze = False

    def out_features(self, task: Task) -> int:
        return 4

    def read_target(
        self, task: Task, value: Any, base: Path, fit: TargetFit, size: tuple[int, int]
    ) -> Tensor:
        try:
            boxes = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError(f"boxes are not valid JSON ({err})") from None
        return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)

    def rescale_target(
        self, task: Task, target: Tensor, original_size: tuple[int, int], size: tuple[int, int]
    ) -> Tensor:
        (h0, w0), (h, w) = original_size, size
        if bool((target[:, 2] > w0).any() or (target[:, 3] > h0).any()):
            raise DataError(f"a box lies outside its image ({w0} × {h0})")
        return target * torch.tensor([w / w0, h / h0, w / w0, h / h0])

    def pad_rows(self, task: Task, rows: Sequence[Tensor]) -> Tensor:
        most = max([1, *(len(r) for r in rows)])
        padded = []
        for r in rows:
            if bool(torch.isnan(r).any()):
                padded.append(torch.full((most, 4), math.nan))
            else:
                padded.append(torch.cat([r, torch.full((most - len(r), 4), -1.0)]))
        return torch.stack(padded)

    def missing_target(self, task: Task, like: Tensor) -> Tensor:
        return torch.full((max(1, like.shape[0]), 4), math.nan)

    def transform_target(self, task: Task, target: Tensor, geometry: Geometry) -> Tensor:
        if geometry.crop is not None:
            raise NotImplementedError("the test boxes only flip")
        if not geometry.hflip:
            return target
        width = geometry.size[1]
        return torch.stack([width - target[:, 2], target[:, 1], width - target[:, 0],
                            target[:, 3]], 1)  # fmt: skip

    def predict(self, output: Tensor) -> Tensor:
        return output

    def label_mask(self, target: Tensor) -> Tensor:
        return ~torch.isnan(target).reshape(target.shape[0], -1).any(1)

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        return {task.name: [[round(float(v), 3) for v in row] for row in prediction]}


@pytest.fixture
def image_kinds(monkeypatch):
    """The test kinds registered as `mask` and `boxes` for one test."""
    monkeypatch.setitem(KINDS, "mask", MaskKind())
    monkeypatch.setitem(KINDS, "boxes", BoxesKind())
