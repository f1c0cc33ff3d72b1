"""What the per-pixel kinds (segmentation, dense_regression, normals) share: `DenseKind`, their
base class (pixel masks and losses, heads that keep the spatial layout, shape checks, reading
maps from files, moving them with an augmentation, metrics accumulated as sums), and the
resizing helpers."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polytask.tasks._columns import DataError
from polytask.tasks._kinds._base import (
    IGNORE_INDEX,
    Geometry,
    MetricAccumulator,
    Scale,
    TargetFit,
    TaskKind,
)
from polytask.tasks._losses import ElementLoss
from polytask.tasks._metrics import Metric, Undefined

if TYPE_CHECKING:
    from polytask.models.encoders import Features
    from polytask.tasks._task import Task

Size = tuple[int, int]
"""(height, width) in pixels."""

MAP_SUFFIXES = (".png", ".npy")


# --- resizing and moving maps ---------------------------------------------------------------


def resize_nearest(t: Tensor, size: Size) -> Tensor:
    """A map (..., H, W) at `size` by nearest neighbour on pixel centres (as Pillow's NEAREST):
    class indices and the ignore value stay exactly what they were."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    lead = t.shape[:-2]
    flat = t.reshape(1, -1, *t.shape[-2:]).float()  # class indices < 2^24: exact in float32
    out = F.interpolate(flat, size=size, mode="nearest-exact")
    return out.reshape(*lead, *size).to(t.dtype)


def resize_valid(t: Tensor, size: Size) -> Tensor:
    """A float map (..., H, W) with NaN at missing pixels at `size`, bilinear (antialiased when
    shrinking) over the present pixels only: each output pixel is the weighted mean of the
    present inputs under it, and missing (NaN) where they hold under half of its weight."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    lead = t.shape[:-2]
    flat = t.reshape(1, -1, *t.shape[-2:])
    present = ~torch.isnan(flat)
    resize = functools.partial(
        F.interpolate, size=size, mode="bilinear", align_corners=False, antialias=True
    )
    total = resize(torch.where(present, flat, 0.0))
    weight = resize(present.to(flat.dtype))
    out = torch.where(weight >= 0.5, total / weight.clamp_min(1e-6), float("nan"))
    return out.reshape(*lead, *size)


def transform_map(
    target: Tensor, geometry: Geometry, resize: Callable[[Tensor, Size], Tensor]
) -> Tensor:
    """A map (..., H, W) moved with its image: flipped left-right, then cropped (the crop is in
    pixels of the image before it, `geometry.source_size`, scaled to the map's own size), then
    resized to `geometry.size` by `resize`."""
    out = target.flip(-1) if geometry.hflip else target
    if geometry.crop is not None:
        height, width = out.shape[-2:]
        src_h, src_w = geometry.source_size or geometry.size
        fy, fx = height / src_h, width / src_w
        top, left, h, w = geometry.crop
        y0, x0 = min(max(round(top * fy), 0), height - 1), min(max(round(left * fx), 0), width - 1)
        y1, x1 = min(y0 + max(round(h * fy), 1), height), min(x0 + max(round(w * fx), 1), width)
        out = out[..., y0:y1, x0:x1]
    return resize(out, geometry.size)


# --- reading maps from files ----------------------------------------------------------------


def is_empty(value: Any) -> bool:
    """A manifest cell that names no file: None, NaN or blank text (the row is unlabelled)."""
    if value is None:
        return True
    if isinstance(value, float):
        return bool(np.isnan(value))
    return isinstance(value, str) and not value.strip()


def load_map(task: Task, value: Any, base: Path) -> tuple[Path, np.ndarray, str | None]:
    """The file a manifest cell names (relative to `base`): its path, its array, and its PNG
    mode (None for .npy); a cell that is no path or a file that cannot be read is a DataError
    naming it."""
    if not isinstance(value, str | Path):
        raise DataError(
            f"task {task.name!r}: {value!r} is not a path to a {' or '.join(MAP_SUFFIXES)} file"
        )
    path = Path(base) / str(value).strip()
    suffix = path.suffix.lower()
    if suffix not in MAP_SUFFIXES:
        raise DataError(
            f"task {task.name!r}: {path} is not a {' or '.join(MAP_SUFFIXES)} file ({task.kind} "
            "targets are read from those)"
        )
    if not path.is_file():
        raise DataError(f"task {task.name!r}: file {path} does not exist")
    try:
        if suffix == ".npy":
            return path, np.load(path, allow_pickle=False), None
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            return path, np.asarray(image), image.mode
    except (OSError, ValueError, SyntaxError) as err:  # Pillow: OSError / SyntaxError
        raise DataError(f"task {task.name!r}: cannot read {path}: {err}") from err


def refuse_shape(task: Task, path: Path, array: np.ndarray, expected: str) -> None:
    """A DataError naming the file whose array has the wrong number of dimensions."""
    raise DataError(
        f"task {task.name!r}: {path} holds an array of shape {array.shape}; a {task.kind} "
        f"target is {expected}"
    )


# --- metrics accumulated as sums ------------------------------------------------------------


class PixelStats(ABC):
    """Sufficient statistics of a dense task's metrics, added batch by batch (predictions and
    truths as the kind's `prediction` / `truth` give them), so that the metrics over a set equal
    those over the batches concatenated without holding them."""

    count: int = 0
    """Labelled pixels seen."""

    @abstractmethod
    def add(self, prediction: Tensor, truth: Tensor) -> None:
        """One batch's predictions and truths (in original units)."""

    @abstractmethod
    def values(self) -> dict[str, float]:
        """Every metric of the kind by name (called with `count` > 0)."""


def pixel_metrics(stats: PixelStats, names: Sequence[str], finite: bool) -> dict[str, float]:
    """The metrics `names` from `stats`; undefined, with the reason, when no labelled pixel was
    seen or a prediction was not finite (a diverged model)."""
    if not finite:
        return {n: Undefined("predictions not finite") for n in names}
    if not stats.count:
        return {n: Undefined("no labelled pixels") for n in names}
    values = stats.values()
    return {n: values[n] for n in names}


def _stats_metric(
    make: Callable[[np.ndarray, np.ndarray], PixelStats], name: str, y: np.ndarray, p: np.ndarray
) -> float:
    stats = make(y, p)
    return pixel_metrics(stats, [name], True)[name]


def stats_metric(
    name: str, make: Callable[[np.ndarray, np.ndarray], PixelStats], higher_is_better: bool
) -> Metric:
    """A metric of whole arrays (truths, predictions) read from the same statistics that
    evaluation accumulates: `make` builds them from the arrays."""
    return Metric(name, functools.partial(_stats_metric, make, name), higher_is_better)


class PixelAccumulator(MetricAccumulator):
    """Feeds each batch's predictions and truths (original units) to a task's `PixelStats`."""

    def __init__(self, task: Task, scale: Scale | None, stats: PixelStats) -> None:
        self.task, self.scale, self.stats = task, scale, stats
        self.finite = True

    def update(self, output: Tensor, target: Tensor) -> None:
        kind = self.task.kind_spec
        output = kind.shape_output(output)
        if not bool(torch.isfinite(output).all()):
            self.finite = False
            return
        prediction = torch.as_tensor(kind.prediction(output, self.scale))
        self.stats.add(prediction, torch.as_tensor(kind.truth(target, self.scale)))

    def compute(self) -> dict[str, float]:
        names = [m.name for m in self.task.metric_objects()]
        return pixel_metrics(self.stats, names, self.finite)


# --- the base class -------------------------------------------------------------------------


def pixel_mean(fn: ElementLoss, output: Tensor, target: Tensor, pixels: Tensor) -> Tensor:
    """Mean of the per-pixel losses `fn(output, target)` (shaped like `pixels`) over the pixels
    `pixels` keeps, the whole batch as one pool; 0, still in the graph, when none is. Missing
    targets are replaced by 0 before `fn` sees them, so that no NaN reaches the gradient."""
    if not bool(pixels.any()):
        return output.sum() * 0.0
    if target.is_floating_point():
        safe = target.nan_to_num(0.0)
    else:
        safe = target.masked_fill(target == IGNORE_INDEX, 0)
    return fn(output, safe)[pixels].mean()


class DenseKind(TaskKind):
    """A kind that predicts a map per image: targets (N, H, W) or (N, C, H, W) read from files,
    masked per pixel (a row is labelled when any of its pixels is), a conv head upsampled to the
    input resolution, and metrics accumulated as sums over batches."""

    reads_files = True
    dense = True
    squeeze = False

    float_target: ClassVar[bool] = True
    """The encoded target is float (NaN missing), not class indices (−100 missing)."""

    @abstractmethod
    def pixel_stats(self, task: Task) -> PixelStats:
        """Fresh, empty statistics of the task's metrics."""

    @abstractmethod
    def read_map(
        self,
        task: Task,
        path: Path,
        array: np.ndarray,
        mode: str | None,
        fit: TargetFit,
        size: Size,
    ) -> Tensor:
        """One row's encoded target from the array read from `path` (`mode`: its PNG mode,
        None for .npy), at `size`."""

    @abstractmethod
    def target_shape(self, size: Size) -> tuple[int, ...]:
        """One row's encoded target shape at `size`."""

    @abstractmethod
    def output_shapes(self, task: Task, target: Tensor) -> list[tuple[int, ...]]:
        """The head output shapes that fit `target` (a batch), the preferred one first."""

    def head_bias(self, task: Task) -> float | None:
        """The initial bias of the head's last layer (None: PyTorch's default init)."""
        return None

    def validate(self, task: Task) -> None:
        """Refuse custom metric objects (dense metrics are accumulated as sums over batches)
        and more than one target column (the column names each row's file)."""
        custom = [m for m in task.metrics or () if not isinstance(m, str)]
        if custom:
            raise ValueError(
                f"task {task.name!r}: {task.kind} metrics are accumulated over batches by the "
                f"kind; choose among {', '.join(self.metrics)} (a custom Metric is not supported)"
            )
        if len(self.target_columns(task)) != 1:
            raise ValueError(
                f"task {task.name!r}: a {task.kind} task reads one column (a file per row), "
                f"not {list(self.target_columns(task))}"
            )

    def build_head(self, task: Task, features: Features) -> nn.Module:
        """On a feature map: conv 3×3 → BatchNorm → ReLU → conv 1×1 to the task's channels (or
        the task's own head factory), then bilinear upsampling by the feature stride, so the
        output has the input's resolution. A vector has no pixels: refused."""
        if not features.spatial:
            raise ValueError(
                f"task {task.name!r} ({task.kind}) predicts per pixel: use an encoder that keeps "
                "the spatial layout (cnn, resnet_fpn, vit)"
            )
        size, stride = features.size, features.stride
        if size is not None and any(side % stride for side in size):
            fits = " × ".join(str(max(stride, round(side / stride) * stride)) for side in size)
            raise ValueError(
                f"task {task.name!r} ({task.kind}) predicts per pixel, and the encoder's "
                f"feature map has one cell per {stride} pixels, so its {stride}× upsampled "
                f"output cannot match the {' × '.join(map(str, size))} input: read the images "
                f"at a size that is a multiple of {stride} (e.g. {fits})"
            )
        channels, out = features.channels, self.out_features(task)
        if task.head is not None:
            body = task.head(channels, out)
        else:
            hidden = min(64, channels)
            last = nn.Conv2d(hidden, out, 1)
            body = nn.Sequential(
                nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(),
                last,
            )
            bias = self.head_bias(task)
            if bias is not None and last.bias is not None:
                nn.init.constant_(last.bias, bias)
        if features.stride == 1:
            return body
        upsample = nn.Upsample(scale_factor=features.stride, mode="bilinear", align_corners=False)
        return nn.Sequential(body, upsample)

    def check_output(self, task: Task, output: Tensor, target: Tensor) -> None:
        """Refuse a head output of another shape than the target's map needs, naming both."""
        shapes = self.output_shapes(task, target)
        if tuple(output.shape) in shapes:
            return
        wanted = " or ".join(str(s) for s in shapes)
        raise ValueError(
            f"task {task.name!r} ({task.kind}): its head gives outputs of shape "
            f"{tuple(output.shape)} for targets of shape {tuple(target.shape)}; a {task.kind} "
            f"head must give {wanted} here ({self.expected_output(task)} per pixel)"
        )

    def label_mask(self, target: Tensor) -> Tensor:
        """One entry per row: does any pixel of the row hold a label."""
        pixels = self.element_mask(target)
        return pixels.reshape(pixels.shape[0], -1).any(dim=1)

    def label_count(self, target: Tensor) -> int:
        """The labelled pixels: the loss is their mean."""
        return int(self.element_mask(target).sum())

    def loss(self, fn: ElementLoss, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Mean of `fn` over the labelled pixels of the rows `mask` keeps (a row mask, or a
        pixel mask), all the batch's pixels as one pool: an image with some unlabelled pixels
        still trains on the others."""
        pixels = self.element_mask(target)
        rows = mask.reshape(mask.shape[0], *[1] * (pixels.ndim - 1)) if mask.ndim == 1 else mask
        return pixel_mean(fn, self.shape_output(output), target, pixels & rows)

    def accumulator(
        self, task: Task, scale: Scale | None, fit: TargetFit | None = None
    ) -> MetricAccumulator:
        return PixelAccumulator(task, scale, self.pixel_stats(task))

    def read_target(
        self, task: Task, value: Any, base: Path, fit: TargetFit, size: tuple[int, int]
    ) -> Tensor:
        """The map a manifest cell names (a path relative to `base`), at `size`; an empty cell
        is an unlabelled row (every pixel missing)."""
        if is_empty(value):
            dtype = torch.float32 if self.float_target else torch.long
            return self.missing_target(task, torch.empty(self.target_shape(size), dtype=dtype))
        path, array, mode = load_map(task, value, base)
        own = (int(array.shape[-2]), int(array.shape[-1])) if array.ndim >= 2 else size
        return self.read_map(task, path, array, mode, fit, own)

    def rescale_target(self, task: Task, target: Tensor, original_size: Size, size: Size) -> Tensor:
        """The map read at its file's size, refused unless that is its image's size (a mask
        of another image, or one saved at another scale, would label the wrong pixels), then
        resized to the model's input `size`."""
        if tuple(target.shape[-2:]) != tuple(original_size):
            if not bool(self.element_mask(target).any()):  # an unlabelled row
                return self.missing_target(task, target.new_empty(self.target_shape(size)))
            (h, w), (image_h, image_w) = target.shape[-2:], original_size
            turned = (
                " (an image with an EXIF orientation is read upright: draw its map on the "
                "upright image, as a viewer shows it)"
                if (h, w) == (image_w, image_h)
                else ""
            )
            raise DataError(
                f"its map is {w}×{h} pixels (width × height) but its image is "
                f"{image_w}×{image_h}: a mask or map must have its image's size{turned}"
            )
        resize = resize_valid if self.float_target else resize_nearest
        return resize(target, size)

    def transform_target(self, task: Task, target: Tensor, geometry: Geometry) -> Tensor:
        """The map flipped, cropped and resized with its image."""
        resize = resize_valid if self.float_target else resize_nearest
        return transform_map(target, geometry, resize)

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        """One map per row (a list of float32 arrays): `predict` writes them to files."""
        return {task.name: list(prediction.astype(np.float32))}
