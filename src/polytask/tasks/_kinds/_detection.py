"""Object detection: a variable number of boxes with classes per image, learnt by an anchor-free
CenterNet head (Zhou et al. 2019, "Objects as Points") in plain PyTorch, scored by COCO mAP.

Target (one tensor per task): (N, B, 5) floats [x1, y1, x2, y2, class] in pixels of the model's
input; padding rows [0, 0, 0, 0, -1]; an image not labelled for the task has every value NaN; an
image with no objects is all padding (labelled, empty).

Head output: ONE tensor (N, C + 4, H/s, W/s) at the task's output stride s (`kind_params`
`stride`, CenterNet's 4), whatever the encoder's (the head resamples the feature map): C
centre-heatmap logits, then the box width and height in output cells (input pixels / s), then
the centre's offset from its cell (x, y, in cells). The loss and the decoding read s from the
task (the kind is bound to it: `for_task`), since the output alone does not tell the input size.

Loss: the CenterNet focal loss (α = 2, β = 4) on class heatmaps with a Gaussian splat at each
box's centre cell (radius from CornerNet's `gaussian_radius`, σ = (2r + 1) / 6), plus the L1
error of the size (weight 0.1) and offset (weight 1) at the centre cells; every term is divided
by the number of boxes in the batch (at least 1). An image without boxes adds only its heatmap's
negative term; unlabelled images are left out.

Predictions: (N, k, 6) [x1, y1, x2, y2, score, class] in input pixels, by decreasing score,
padded with score 0 and class -1: the k = `top_k` (100) strongest heatmap peaks (3×3 max-pool),
boxes from size and offset, class-wise NMS at IoU `nms_iou` (0.5), scores under
`score_threshold` (0.05) dropped.

Reading targets from files (for the image data layer): `read_target` parses a .json file or
JSON text `[{"box": [x1, y1, x2, y2], "label": ...}, ...]` into (B_i, 5) rows in pixels of the
ORIGINAL image; `rescale_target` then checks the boxes lie in the original image and scales
them to the model's input (call it for every row read, resized or not); `transform_target`
moves them with an augmentation; `pad_rows` pads the rows of a batch into (N, B, 5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polytask.tasks._columns import DataError
from polytask.tasks._kinds._base import (
    Geometry,
    MetricAccumulator,
    Scale,
    TargetFit,
)
from polytask.tasks._kinds._boxes import batched_nms, box_area, gaussian_radius
from polytask.tasks._kinds._instances import InstanceKind, coco_precision_mean
from polytask.tasks._losses import ElementLoss, LossSpec
from polytask.tasks._metrics import PYCOCOTOOLS, Metric, Undefined

if TYPE_CHECKING:
    from polytask.models.encoders import Features
    from polytask.tasks._task import Task

HEATMAP_BIAS = -2.19
"""Initial bias of the heatmap logits: sigmoid(-2.19) ≈ 0.1, as in the CenterNet paper."""
BOX_TOLERANCE = 1.0
"""Pixels a box may reach beyond its image before it is refused (and clipped to it)."""
CROP_KEEP = 0.25
"""A box cropped by an augmentation to less than this share of its area is dropped."""
PADDING_ROW = (0.0, 0.0, 0.0, 0.0, -1.0)
"""A target row that is no box: [x1, y1, x2, y2, class -1]."""
NO_DETECTION = (0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
"""A prediction row that is no detection: [x1, y1, x2, y2, score 0, class -1]."""
COCO_KEYS = ("map", "map_50", "map_75")


@dataclass(frozen=True)
class DetectionSettings:
    """A detection task's classes and `kind_params`, checked, with their defaults filled in."""

    num_classes: int
    classes: tuple[str, ...] | None = None
    """The class names (labels in the JSON files), or None: labels are class indices."""
    stride: int = 4
    """Input pixels per cell of the head's output (CenterNet's output stride R = 4)."""
    top_k: int = 100
    """Heatmap peaks decoded per image: the most detections an image's prediction holds."""
    score_threshold: float = 0.05
    """Detections scoring less are dropped."""
    nms_iou: float = 0.5
    """Class-wise NMS removes a box overlapping a stronger one of its class by more than this."""
    head_channels: int = 64
    """Width of the head's hidden 3×3 convolutions."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_settings(task: Task) -> DetectionSettings:
    """`task`'s classes and kind_params as settings; a value that does not fit is refused,
    naming it."""
    params = dict(DetectionKind.params) | dict(task.kind_params or {})
    where = f"task {task.name!r}: detection"
    names = params["classes"]
    if names is not None:
        if not isinstance(names, list) or not names or len({str(n) for n in names}) != len(names):
            raise ValueError(
                f"{where} kind_params classes must be a non-empty list of distinct class "
                f"names, got {names!r}"
            )
        if task.num_classes is not None and task.num_classes != len(names):
            raise ValueError(
                f"{where}: num_classes is {task.num_classes} but kind_params classes names "
                f"{len(names)}"
            )
    count = task.num_classes if task.num_classes is not None else names and len(names)
    if count is None:
        raise ValueError(f"{where} needs num_classes, or class names in kind_params classes")
    if count < 1:
        raise ValueError(f"{where} needs num_classes >= 1, got {count}")
    for key in ("stride", "top_k", "head_channels"):
        if not _is_int(params[key]) or params[key] < 1:
            raise ValueError(f"{where} {key} must be an integer >= 1, got {params[key]!r}")
    for key in ("score_threshold", "nms_iou"):
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise ValueError(f"{where} {key} must be a number in [0, 1), got {value!r}")
    return DetectionSettings(
        num_classes=int(count),
        classes=tuple(str(n) for n in names) if names is not None else None,
        stride=params["stride"],
        top_k=params["top_k"],
        score_threshold=float(params["score_threshold"]),
        nms_iou=float(params["nms_iou"]),
        head_channels=params["head_channels"],
    )


# --- targets and loss -----------------------------------------------------------------------


@dataclass(frozen=True)
class CenterTargets:
    """What a CenterNet head should output for a batch of padded boxes (N, B, 5): the class
    heatmaps (N, C, h, w), and for each box (M of them, in row order) its image, centre cell
    (row, column), size (w, h) and centre offset (x, y), in output cells."""

    heatmap: Tensor
    image: Tensor
    cell_y: Tensor
    cell_x: Tensor
    size: Tensor
    offset: Tensor


def center_targets(
    target: Tensor, num_classes: int, height: int, width: int, stride: int = 4
) -> CenterTargets:
    """Encode padded boxes (input pixels) for an output map of `height` × `width` cells of
    `stride` pixels (all at once: the Gaussians are splatted into their class maps by one
    `scatter_reduce_` max)."""
    target = target.float()
    image, slot = (target[..., 4] >= 0).nonzero(as_tuple=True)  # NaN and padding: not boxes
    rows = target[image, slot]
    classes = rows[:, 4].long()
    if bool((classes >= num_classes).any()):
        raise ValueError(
            f"box class {int(classes.max())} in the targets, but the task has {num_classes} "
            f"classes (0..{num_classes - 1})"
        )
    x1, y1, x2, y2 = (rows[:, :4] / stride).unbind(1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    cell_x = cx.floor().clamp(0, width - 1)
    cell_y = cy.floor().clamp(0, height - 1)
    radius = gaussian_radius(y2 - y1, x2 - x1).floor().clamp_min(0)
    sigma = (2 * radius + 1) / 6
    # exp(-(dx² + dy²) / 2σ²) on the (2r + 1)² window around the centre cell, as a product
    dx = torch.arange(width, device=target.device)[None, :] - cell_x[:, None]
    dy = torch.arange(height, device=target.device)[None, :] - cell_y[:, None]
    two_var = (2 * sigma**2)[:, None]
    gx = torch.exp(-(dx**2) / two_var) * (dx.abs() <= radius[:, None])
    gy = torch.exp(-(dy**2) / two_var) * (dy.abs() <= radius[:, None])
    splats = (gy[:, :, None] * gx[:, None, :]).flatten(1)
    heatmap = target.new_zeros(target.shape[0] * num_classes, height * width)
    which = (image * num_classes + classes)[:, None].expand_as(splats)
    heatmap.scatter_reduce_(0, which, splats, "amax")
    return CenterTargets(
        heatmap.reshape(target.shape[0], num_classes, height, width),
        image,
        cell_y.long(),
        cell_x.long(),
        torch.stack([x2 - x1, y2 - y1], 1),
        torch.stack([cx - cell_x, cy - cell_y], 1),
    )


def focal_terms(logits: Tensor, heatmap: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss summed over every cell (not yet divided by the
    number of objects): −(1 − p)² log p at the centres (heatmap 1), −(1 − Y)⁴ p² log(1 − p)
    elsewhere, p = sigmoid(logit); log p from `logsigmoid`, so no clamping is needed."""
    p = torch.sigmoid(logits)
    centre = heatmap == 1
    positive = F.logsigmoid(logits) * (1 - p) ** 2
    negative = F.logsigmoid(-logits) * p**2 * (1 - heatmap) ** 4
    return -torch.where(centre, positive, negative).sum()


def centernet_loss(
    output: Tensor,
    target: Tensor,
    stride: int = 4,
    size_weight: float = 0.1,
    offset_weight: float = 1.0,
) -> Tensor:
    """The CenterNet loss of a batch of labelled images: head outputs (N, C + 4, h, w) at
    `stride`, padded boxes (N, B, 5) in input pixels. Focal heatmap loss + `size_weight` × L1
    of the box sizes (in cells) +
    `offset_weight` × L1 of the centre offsets (each L1 a mean over the two coordinates, as in
    CenterNet's code), all divided by the number of boxes (at least 1)."""
    output = output.float()
    num_classes = output.shape[1] - 4
    with torch.no_grad():
        goal = center_targets(target, num_classes, output.shape[2], output.shape[3], stride)
    objects = max(len(goal.image), 1)
    focal = focal_terms(output[:, :num_classes], goal.heatmap)
    at_centres = output[goal.image, num_classes:, goal.cell_y, goal.cell_x]  # (M, 4)
    size = (at_centres[:, :2] - goal.size).abs().sum() / 2
    offset = (at_centres[:, 2:] - goal.offset).abs().sum() / 2
    return (focal + size_weight * size + offset_weight * offset) / objects


# --- decoding ---------------------------------------------------------------------------------


def decode_detections(
    output: Tensor,
    stride: int = 4,
    top_k: int = 100,
    iou: float = 0.5,
    min_score: float = 0.05,
) -> Tensor:
    """Head outputs (N, C + 4, h, w) at `stride` → detections (N, top_k, 6) [x1, y1, x2, y2,
    score, class] in input pixels, by decreasing score, padded with score 0 and class -1: the
    `top_k`
    strongest heatmap peaks (cells that are the maximum of their 3×3 neighbourhood) scoring at
    least `min_score`, boxes from their size and offset, then class-wise NMS at `iou`."""
    output = output.float()
    n, channels, height, width = output.shape
    num_classes = channels - 4
    heat = torch.sigmoid(output[:, :num_classes])
    peaks = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
    scores = (heat * peaks).flatten(1)
    k = min(top_k, scores.shape[1])
    score, index = scores.topk(k, dim=1)
    classes = index // (height * width)
    cell = index % (height * width)
    regressed = output[:, num_classes:].flatten(2)
    at = regressed.gather(2, cell[:, None, :].expand(-1, 4, -1))  # (n, 4, k)
    half_w = at[:, 0].clamp_min(0) * stride / 2
    half_h = at[:, 1].clamp_min(0) * stride / 2
    cx = ((cell % width) + at[:, 2]) * stride
    cy = (torch.div(cell, width, rounding_mode="floor") + at[:, 3]) * stride
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1)
    order, keep = batched_nms(boxes, score, classes, score >= min_score, iou)
    rows = torch.cat([boxes, score[..., None], classes[..., None].float()], -1)
    rows = rows.gather(1, order[..., None].expand(-1, -1, 6))
    rows = torch.where(keep[..., None], rows, rows.new_tensor(NO_DETECTION))
    first = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices  # kept ones first
    rows = rows.gather(1, first[..., None].expand(-1, -1, 6))
    if k < top_k:
        rows = torch.cat([rows, rows.new_tensor(NO_DETECTION).expand(n, top_k - k, 6)], 1)
    return rows


# --- metrics ---------------------------------------------------------------------------------


def coco_map(
    truths: Sequence[np.ndarray], detections: Sequence[np.ndarray], max_dets: int
) -> dict[str, float]:
    """COCO box mAP (pycocotools' COCOeval) over images: each image's true boxes (B_i, 5) and
    detections (D_i, 6) in pixels. `map` averages IoU 0.5:0.95, `map_50` and `map_75` are at
    one IoU; an image without true boxes counts (its detections are false positives)."""
    if not truths:
        return dict.fromkeys(COCO_KEYS, Undefined("no labelled rows"))
    if not any(len(t) for t in truths):
        return dict.fromkeys(COCO_KEYS, Undefined("no true boxes in the labelled images"))
    if not any(len(d) for d in detections):
        return dict.fromkeys(COCO_KEYS, 0.0)  # every true box missed
    try:
        from pycocotools.coco import COCO  # type: ignore[import-untyped]
        from pycocotools.cocoeval import COCOeval  # type: ignore[import-untyped]
    except ImportError as err:  # pragma: no cover - installed where detection is used
        raise ImportError(
            "detection mAP needs pycocotools: pip install 'polytask[vision]'"
        ) from err

    def xywh(row: np.ndarray) -> list[float]:
        x1, y1, x2, y2 = (float(v) for v in row[:4])
        return [x1, y1, x2 - x1, y2 - y1]

    annotations: list[dict[str, Any]] = []
    for i, rows in enumerate(truths):
        for row in rows:
            x, y, w, h = xywh(row)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(row[4]) + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    results: list[dict[str, Any]] = [
        {"image_id": i + 1, "category_id": int(r[5]) + 1, "bbox": xywh(r), "score": float(r[4])}
        for i, rows in enumerate(detections)
        for r in rows
    ]
    classes = {int(a["category_id"]) for a in (*annotations, *results)}
    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print their progress
        truth = COCO()
        truth.dataset = {
            "images": [{"id": i + 1} for i in range(len(truths))],
            "annotations": annotations,
            "categories": [{"id": c} for c in sorted(classes)],
        }
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.params.maxDets = [max_dets]
        evaluation.evaluate()
        evaluation.accumulate()
    # read at max_dets: COCOeval's summary takes its AP at 100 detections, -1 for another top_k
    precision = evaluation.eval["precision"][..., 0, -1]  # IoU, recall, class; all areas
    at = evaluation.params.iouThrs
    parts = (precision, precision[np.isclose(at, 0.5)], precision[np.isclose(at, 0.75)])
    none = Undefined("no true boxes")
    return {k: coco_precision_mean(part, none) for k, part in zip(COCO_KEYS, parts, strict=True)}


def image_rows(
    targets: np.ndarray, predictions: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Padded truths (N, B, 5) and predictions (N, k, 6) → each image's boxes and detections
    without their padding rows."""
    truths = [t[t[:, 4] >= 0] for t in targets]
    found = [p[p[:, 5] >= 0] for p in predictions]
    return truths, found


def _coco_metric(key: str, targets: np.ndarray, predictions: np.ndarray) -> float:
    truths, found = image_rows(targets, predictions)
    return coco_map(truths, found, predictions.shape[1])[key]


def detection_map(y: np.ndarray, p: np.ndarray) -> float:
    """COCO mAP averaged over IoU 0.5:0.95 (padded truths `y`, detections `p`)."""
    return _coco_metric("map", y, p)


def detection_map_50(y: np.ndarray, p: np.ndarray) -> float:
    """COCO AP at IoU 0.5 (PASCAL VOC's criterion), averaged over classes."""
    return _coco_metric("map_50", y, p)


def detection_map_75(y: np.ndarray, p: np.ndarray) -> float:
    """COCO AP at IoU 0.75, averaged over classes."""
    return _coco_metric("map_75", y, p)


def integer_label(label: Any) -> int | None:
    """A label that spells a whole number (3, 3.0, "3") as that int; None for others."""
    if isinstance(label, bool):
        return None
    if isinstance(label, int):
        return label
    if isinstance(label, float) and label.is_integer():
        return int(label)
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        return int(label)
    return None


def pad_stack(rows: Sequence[np.ndarray], width: int, least: int) -> np.ndarray:
    """Per-image boxes (n_i, 5) or detections (n_i, 6) → one (N, max n_i (at least `least`),
    width) array padded with `PADDING_ROW` or `NO_DETECTION` rows."""
    b = max([least, *(len(r) for r in rows)])
    pad = np.array(PADDING_ROW if width == 5 else NO_DETECTION, dtype=np.float32)
    out = np.tile(pad, (len(rows), b, 1))
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def detection_metrics(
    metrics: Sequence[Metric], truths: Sequence[np.ndarray], found: Sequence[np.ndarray], k: int
) -> dict[str, float]:
    """Each metric of `metrics` over the labelled images' boxes and detections: the built-in
    COCO ones from one COCOeval run, others on the padded arrays."""
    builtin = DetectionKind.metrics
    ours = [m for m in metrics if builtin.get(m.name) is m]
    values: dict[str, float] = {}
    if ours:
        coco = coco_map(truths, found, k)
        values |= {m.name: coco[m.name] for m in ours}
    for m in metrics:
        if m.name not in values:
            values[m.name] = m(pad_stack(truths, 5, 1), pad_stack(found, 6, k))
    return values


class DetectionAccumulator(MetricAccumulator):
    """A detection task's metrics over batches: keeps each labelled image's true boxes and its
    decoded detections (at most `top_k`), never the head outputs, and runs COCOeval once."""

    def __init__(self, task: Task) -> None:
        self.task, self.kind = task, task.kind_spec
        self.truths: list[np.ndarray] = []
        self.found: list[np.ndarray] = []
        self.finite = True

    def update(self, output: Tensor, target: Tensor) -> None:
        labelled = self.kind.label_mask(target)
        if not bool(labelled.any()):
            return
        self.finite = self.finite and bool(torch.isfinite(output[labelled]).all())
        detections = self.kind.predict(output[labelled]).numpy()
        truths, found = image_rows(target[labelled].numpy(), detections)
        self.truths += truths
        self.found += found

    def compute(self) -> dict[str, float]:
        metrics = self.task.metric_objects()
        if not self.truths:
            return {m.name: Undefined("no labelled rows") for m in metrics}
        if not self.finite:  # a diverged model: its NaN boxes would score 0, not undefined
            return {m.name: Undefined("predictions not finite") for m in metrics}
        top_k = parse_settings(self.task).top_k
        return detection_metrics(metrics, self.truths, self.found, top_k)


# --- the head ---------------------------------------------------------------------------------


class CenterNetHead(nn.Module):
    """CenterNet's head on a feature map of stride `in_stride`: the map is resampled to
    `out_stride` (bilinear up, area down), then three branches of 3×3 conv + ReLU + 1×1 conv
    give the class heatmap logits (bias −2.19), box size and centre offset, concatenated:
    (N, C + 4, H/out_stride, W/out_stride)."""

    def __init__(
        self, channels: int, num_classes: int, in_stride: int, out_stride: int, hidden: int = 64
    ) -> None:
        super().__init__()
        self.scale = in_stride / out_stride

        def branch(out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, out, 1)
            )

        self.heatmap, self.size, self.offset = branch(num_classes), branch(2), branch(2)
        logits = self.heatmap[-1]
        assert isinstance(logits, nn.Conv2d) and logits.bias is not None
        nn.init.constant_(logits.bias, HEATMAP_BIAS)

    def forward(self, x: Tensor) -> Tensor:
        if self.scale > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        elif self.scale < 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="area")
        return torch.cat([self.heatmap(x), self.size(x), self.offset(x)], 1)


# --- the kind ---------------------------------------------------------------------------------


class DetectionKind(InstanceKind):
    """Boxes with classes per image (see the module's docstring for the formats): `num_classes`
    or class names in `kind_params["classes"]`; `kind_params` `stride` (input pixels per cell
    of the head's output, 4), `top_k` (heatmap peaks decoded per image, 100),
    `score_threshold` (0.05), `nms_iou` (0.5) and `head_channels` (the head's width, 64).
    Loss parameters: `size_weight` (0.1) and `offset_weight` (1)."""

    losses: ClassVar[Mapping[str, LossSpec]] = {
        "centernet": LossSpec(centernet_loss, ("size_weight", "offset_weight"))
    }
    metrics: ClassVar[Mapping[str, Metric]] = {
        "map": Metric("map", detection_map, True, PYCOCOTOOLS),
        "map_50": Metric("map_50", detection_map_50, True, PYCOCOTOOLS),
        "map_75": Metric("map_75", detection_map_75, True, PYCOCOTOOLS),
    }
    params: ClassVar[Mapping[str, Any]] = {
        "classes": None,
        "stride": 4,
        "top_k": 100,
        "score_threshold": 0.05,
        "nms_iou": 0.5,
        "head_channels": 64,
    }
    served_meaning = (
        "detections per image, shape (batch, top_k, 6): x1, y1, x2, y2 in input pixels, "
        "score, class index; padding rows have score 0 and class -1"
    )

    label = "detection"

    def settings(self, task: Task) -> DetectionSettings:
        return parse_settings(task)

    def out_features(self, task: Task) -> int:
        return parse_settings(task).num_classes + 4

    def resolve(self, task: Task, fit: TargetFit) -> Task:
        """`num_classes` from the class names, when the task sets only those."""
        if task.num_classes is not None:
            return task
        return dataclasses.replace(task, num_classes=parse_settings(task).num_classes)

    def build_head(self, task: Task, features: Features) -> nn.Module:
        """A CenterNet head at the task's `stride`; refuses an encoder that gives vectors."""
        if not features.spatial:
            raise ValueError(
                f"task {task.name!r}: a detection head needs a feature map, but the encoder "
                f"gives one vector of {features.channels} values per image; use an encoder "
                "that keeps the spatial layout (cnn, resnet_fpn, vit or timm)"
            )
        s = parse_settings(task)
        return CenterNetHead(
            features.channels, s.num_classes, features.stride, s.stride, s.head_channels
        )

    def check_output(self, task: Task, output: Tensor, target: Tensor) -> None:
        channels = parse_settings(task).num_classes + 4
        fits = (
            output.ndim == 4
            and output.shape[1] == channels
            and target.ndim == 3
            and target.shape[2] == 5
            and output.shape[0] == target.shape[0]
        )
        if not fits:
            raise ValueError(
                f"task {task.name!r} (detection): its head gives outputs of shape "
                f"{tuple(output.shape)} for targets of shape {tuple(target.shape)}; a "
                f"detection head gives {self.expected_output(task)}"
            )

    def expected_output(self, task: Task) -> str:
        s = parse_settings(task)
        return (
            f"(N, {s.num_classes + 4}, H/{s.stride}, W/{s.stride}) ({s.num_classes} class "
            "heatmaps, box size and centre offset) for targets (N, B, 5)"
        )

    def make_loss(
        self, name: str, params: Mapping[str, float], label_smoothing: float = 0.0
    ) -> ElementLoss:
        """The CenterNet loss at the bound task's stride, with its loss parameters."""
        return functools.partial(self.losses[name].fn, stride=self.bound.stride, **params)

    def label_mask(self, target: Tensor) -> Tensor:
        """One bool per image: labelled unless its rows are NaN."""
        return ~torch.isnan(target.flatten(1)).any(1)

    def label_count(self, target: Tensor) -> int:
        """The loss is a sum over the labelled images divided by their boxes: the boxes."""
        labelled = target[self.label_mask(target)]
        return int((labelled[..., 4] >= 0).sum())

    def loss_denominator(self, count: Tensor, labelled: Tensor) -> Tensor:
        """At least 1 where an image is labelled: a box-less image's loss is its heatmap's
        negative term."""
        return torch.where(labelled, count.clamp(min=1), 0.0)

    def accumulator(
        self, task: Task, scale: Scale | None, fit: TargetFit | None = None
    ) -> MetricAccumulator:
        return DetectionAccumulator(task)

    def predict(self, output: Tensor) -> Tensor:
        s = self.bound
        return decode_detections(output, s.stride, s.top_k, s.nms_iou, s.score_threshold)

    def prediction(self, output: Tensor, scale: Scale | None) -> np.ndarray:
        return self.predict(output).numpy()

    def truth(self, target: Tensor, scale: Scale | None) -> np.ndarray:
        return target.float().numpy()

    def evaluate(
        self, metrics: Sequence[Metric], predictions: np.ndarray, targets: np.ndarray
    ) -> dict[str, float]:
        """The metrics on the labelled images (COCOeval run once for the built-in ones)."""
        keep = self.label_mask(torch.as_tensor(targets)).numpy()
        if not keep.any():
            return {m.name: Undefined("no labelled rows") for m in metrics}
        truths, found = image_rows(targets[keep], predictions[keep])
        return detection_metrics(metrics, truths, found, predictions.shape[1])

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        labelled = target[self.label_mask(target)]
        if len(labelled) and not bool((labelled[..., 4] >= 0).any()):
            return "no boxes in any labelled image, so there is nothing to detect"
        return super().degenerate(task, target, fit)

    def encode_target(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> Tensor:
        raise TypeError(
            f"task {task.name!r}: detection targets are read per image from JSON boxes "
            "(read_target), not encoded from a column of values"
        )

    # --- targets read from files ---------------------------------------------------------------

    def read_target(
        self, task: Task, value: Any, base: Path, fit: TargetFit, size: tuple[int, int]
    ) -> Tensor:
        """The boxes of a manifest cell, (B_i, 5) [x1, y1, x2, y2, class index] in pixels of
        the ORIGINAL image (`rescale_target` brings them to `size`): the cell is a .json path
        (relative to `base`) or JSON text `[{"box": [x1, y1, x2, y2], "label": ...}, ...]`;
        `[]` is an image without objects, an empty cell an unlabelled image. A list of such
        dicts (already parsed) is read the same way."""
        if is_empty_cell(value):
            return self.missing_target(task, torch.zeros(1, 5))
        if isinstance(value, list):  # boxes given as Python objects rather than JSON text
            entries: Any = value
            where = f"task {task.name!r}: the boxes"
        else:
            text, where = self._json_text(task, value, base)
            try:
                entries = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{where} is not valid JSON ({err})") from None
        if not isinstance(entries, list):
            raise DataError(
                f'{where} must hold a list of {{"box": [x1, y1, x2, y2], "label": ...}} '
                f"objects, not a {type(entries).__name__}"
            )
        rows = [self._box_row(task, entry, i, where) for i, entry in enumerate(entries)]
        return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)

    def _json_text(self, task: Task, value: Any, base: Path) -> tuple[str, str]:
        """The JSON of a cell and how to name it in errors: the cell itself, or its file."""
        text = str(value).strip()
        if text.startswith(("[", "{")):
            return text, f"task {task.name!r}: the boxes {text[:60]!r}"
        path = Path(base) / text
        try:
            return path.read_text(), f"task {task.name!r}: boxes file {path}"
        except OSError as err:
            raise DataError(
                f"task {task.name!r}: cannot read boxes file {path} ({err.strerror})"
            ) from None

    def _box_row(self, task: Task, entry: Any, i: int, where: str) -> list[float]:
        """One JSON entry as [x1, y1, x2, y2, class index], or a DataError naming the entry."""
        if not isinstance(entry, dict) or "box" not in entry or "label" not in entry:
            raise DataError(
                f'{where}, entry {i}: expected {{"box": [...], "label": ...}}, got {entry!r}'
            )
        box = entry["box"]
        numbers = isinstance(box, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box
        )
        if not numbers or len(box) != 4:
            raise DataError(
                f"{where}, entry {i}: box must be 4 finite numbers [x1, y1, x2, y2], got {box!r}"
            )
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 <= x1 or y2 <= y1:
            axis = "x2 <= x1" if x2 <= x1 else "y2 <= y1"
            raise DataError(f"{where}, entry {i}: box {box} is empty ({axis})")
        return [x1, y1, x2, y2, float(self._class_index(task, entry["label"], i, where))]

    def _class_index(self, task: Task, label: Any, i: int, where: str) -> int:
        """A JSON label as a class index: its place among the class names, or the index it
        spells when the task names none."""
        settings = parse_settings(task)
        names = list(settings.classes) if settings.classes is not None else None
        if names is not None:
            if str(label) not in names:
                raise DataError(
                    f"{where}, entry {i}: unknown label {label!r}; the task's labels are {names}"
                )
            return names.index(str(label))
        count = settings.num_classes
        index = integer_label(label)
        if index is None or not 0 <= index < count:
            raise DataError(
                f"{where}, entry {i}: unknown label {label!r}; the task names no classes, so "
                f"labels are class indices 0..{count - 1} (or set kind_params classes)"
            )
        return index

    def missing_target(self, task: Task, like: Tensor) -> Tensor:
        """An unlabelled image: NaN rows (one at least, so that it differs from `[]`)."""
        rows = like.shape[0] if like.ndim == 2 and like.shape[0] else 1
        return torch.full((rows, 5), math.nan)

    def rescale_target(
        self, task: Task, target: Tensor, original_size: tuple[int, int], size: tuple[int, int]
    ) -> Tensor:
        """Boxes read in the original image's pixels → in those of the model's input `size`
        (x by W / W0, y by H / H0). A box reaching more than 1 pixel beyond the original image
        is refused, naming the box (its entry in the JSON list); within that, it is clipped."""
        if is_unlabelled(target):
            return target
        height, width = original_size
        boxes, classes = target[:, :4], target[:, 4:]
        real = classes[:, 0] >= 0
        bound = boxes.new_tensor([width, height, width, height])
        outside = real & ((boxes < -BOX_TOLERANCE) | (boxes > bound + BOX_TOLERANCE)).any(1)
        if bool(outside.any()):
            i = int(outside.nonzero()[0])
            box = [round(float(v), 2) for v in boxes[i]]
            raise DataError(
                f"task {task.name!r}: box {i} {box} lies outside its image ({width} × {height} "
                f"pixels, width × height) by more than {BOX_TOLERANCE:g} pixel"
            )
        boxes = torch.minimum(boxes.clamp_min(0), bound)
        factor = boxes.new_tensor([size[1] / width, size[0] / height] * 2)
        return torch.cat([torch.where(real[:, None], boxes * factor, boxes), classes], 1)

    def pad_rows(self, task: Task, rows: Sequence[Tensor]) -> Tensor:
        """Images' boxes (B_i, 5) as one (N, B, 5) batch, B the most boxes (at least 1):
        padded with [0, 0, 0, 0, -1]; an unlabelled image (NaN rows) becomes B NaN rows.
        Rows already padded may be padded again (the images of two batches of different B)."""
        most = max([1, *(len(r) for r in rows)])
        if not rows:
            return torch.zeros(0, most, 5)
        padding = rows[0].new_tensor(PADDING_ROW, dtype=torch.float32)
        out = [
            padding.new_full((most, 5), math.nan)
            if is_unlabelled(r)
            else torch.cat([r.float().reshape(-1, 5), padding.expand(most - len(r), 5)])
            for r in rows
        ]
        return torch.stack(out)

    def transform_target(self, task: Task, target: Tensor, geometry: Geometry) -> Tensor:
        """One image's boxes after its augmentation: a flip mirrors them (x1' = W − x2,
        x2' = W − x1); a crop shifts them, clips them to the crop and drops (to padding) those
        left with less than 25% of their area; then they are scaled to `geometry.size`."""
        if is_unlabelled(target):
            return target
        height, width = geometry.source_size or geometry.size  # the frame the boxes are in
        x1, y1, x2, y2, classes = target.float().unbind(1)
        if geometry.hflip:
            x1, x2 = width - x2, width - x1
        boxes = torch.stack([x1, y1, x2, y2], 1)
        kept = classes >= 0
        if geometry.crop is not None:
            top, left, height, width = geometry.crop  # the crop becomes the frame
            area = box_area(boxes)
            boxes = boxes - boxes.new_tensor([left, top, left, top])
            boxes = torch.minimum(boxes.clamp_min(0), boxes.new_tensor([width, height] * 2))
            kept &= box_area(boxes) >= CROP_KEEP * area
        factor = boxes.new_tensor([geometry.size[1] / width, geometry.size[0] / height] * 2)
        rows = torch.cat([boxes * factor, classes[:, None]], 1)
        return torch.where(kept[:, None], rows, rows.new_tensor(PADDING_ROW))

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        """Column `<task>`: per image, a list of {"box": [x1, y1, x2, y2], "score", "label"}
        in input pixels (label: the class name, or its index when the task names none),
        strongest first."""
        names = parse_settings(task).classes
        images = []
        for rows in prediction:
            images.append(
                [
                    {
                        "box": [float(v) for v in row[:4]],
                        "score": float(row[4]),
                        "label": names[int(row[5])] if names else int(row[5]),
                    }
                    for row in rows
                    if row[5] >= 0
                ]
            )
        return {task.name: images}


def is_empty_cell(value: Any) -> bool:
    """Whether a manifest cell holds nothing (None, NaN, pandas' NA, blank text)."""
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | Path):
        return False
    return value is None or bool(pd.isna(value))


def is_unlabelled(target: Tensor) -> bool:
    """Whether one image's boxes mark it unlabelled for the task (NaN rows)."""
    return bool(target.numel()) and bool(torch.isnan(target).any())
