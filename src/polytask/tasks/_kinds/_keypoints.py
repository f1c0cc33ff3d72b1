"""Keypoint tasks (pose): a fixed set of K keypoints per instance, with COCO visibility flags,
several instances per image, predicted by a CenterNet multi-pose style head (Zhou et al.,
"Objects as Points", 2019) in plain PyTorch.

Target of one batch: (N, I, K, 3) float [x, y, v] in the model's input pixels; v = 0 not
labelled (or outside the image), 1 occluded, 2 visible; padding instances have v = -1
everywhere; an image not labelled for the task is all NaN.

Head output: ONE tensor (N, 1 + 3K, h, w) at the task's `stride` (input pixels per cell):
channel 0 the instance-centre heatmap logit; channels 1 + 2k and 2 + 2k the offset (x, y) from
the cell's anchor ((j + 0.5) · stride, (i + 0.5) · stride) to keypoint k, in cells (input pixels
/ stride); channel 1 + 2K + k the logit that keypoint k is visible (v = 2) rather than occluded.
An instance's centre is the mean of its labelled keypoints (v > 0); instances with none have no
centre and are left out of the loss and the metrics (COCO ignores them too).

Prediction: (N, k, 1 + K, 3), k = `max_instances` slots per image, by score: row 0 of a slot is
[centre x, centre y, score], rows 1..K are [x, y, visibility probability] of each keypoint, in
input pixels; slots scored under `score_threshold` are all zeros (score 0).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
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
from polytask.tasks._kinds._instances import InstanceKind, coco_precision_mean
from polytask.tasks._losses import ElementLoss, LossSpec
from polytask.tasks._metrics import PYCOCOTOOLS, Metric, Undefined

if TYPE_CHECKING:
    from polytask.models.encoders import Features
    from polytask.tasks._task import Task

DEFAULT_SIGMA = 0.05
"""OKS sigma of every keypoint unless `sigmas` says otherwise (COCO's per-keypoint sigmas run
from 0.025 for the eyes to 0.107 for the hips; 0.05 is a middle, fairly strict, value)."""
PCK_ALPHA = 0.1
"""PCK threshold: a keypoint is correct within this fraction of its instance's larger side."""
HEAD_CHANNELS = 64
"""Channels of the head's hidden 3×3 convolution (CenterNet's DLA heads use 64)."""
FOCAL_ALPHA, FOCAL_BETA = 2.0, 4.0
"""CenterNet's focal loss exponents: on the prediction, and on 1 - the Gaussian target."""
NO_INSTANCE = Undefined("no labelled instance")


@dataclass(frozen=True)
class KeypointSettings:
    """A keypoint task's `kind_params`, checked and with their defaults filled in."""

    num_keypoints: int
    flip_pairs: tuple[tuple[int, int], ...] = ()
    sigmas: tuple[float, ...] = ()
    names: tuple[str, ...] | None = None
    radius: int = 2
    """Radius of the Gaussian splatted around each instance centre, in cells."""
    stride: int = 4
    """Input pixels per cell of the head's output (its feature map is resampled to it)."""
    max_instances: int = 20
    score_threshold: float = 0.1

    @property
    def channels(self) -> int:
        """Channels of the head output: heatmap, 2K offsets, K visibility logits."""
        return 1 + 3 * self.num_keypoints


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def parse_settings(task: Task) -> KeypointSettings:
    """`task`'s kind_params as settings; a value that does not fit is refused, naming it."""
    params = dict(KeypointsKind.params) | dict(task.kind_params or {})
    where = f"task {task.name!r}: keypoints kind_params"
    k = params["num_keypoints"]
    if k is None:
        raise ValueError(f"{where} need num_keypoints, the number of keypoints per instance")
    if not _is_int(k) or k < 1:
        raise ValueError(f"{where} num_keypoints must be an integer >= 1, got {k!r}")
    pairs = _flip_pairs(params["flip_pairs"], int(k), where)
    sigmas = params["sigmas"]
    if _is_number(sigmas):
        sigmas = [sigmas] * k
    if not isinstance(sigmas, Sequence) or isinstance(sigmas, str) or len(sigmas) != k:
        raise ValueError(f"{where} sigmas must be one number or a list of {k}, got {sigmas!r}")
    if not all(_is_number(s) and s > 0 for s in sigmas):
        raise ValueError(f"{where} sigmas must be positive numbers, got {list(sigmas)}")
    names = params["names"]
    if names is not None:
        if isinstance(names, str) or not isinstance(names, Sequence) or len(names) != k:
            raise ValueError(f"{where} names must list {k} keypoint names, got {names!r}")
        if not all(isinstance(n, str) for n in names) or len(set(names)) != k:
            raise ValueError(f"{where} names must be {k} distinct strings, got {list(names)}")
    for key, low in (("radius", 0), ("stride", 1), ("max_instances", 1)):
        if not _is_int(params[key]) or params[key] < low:
            raise ValueError(f"{where} {key} must be an integer >= {low}, got {params[key]!r}")
    threshold = params["score_threshold"]
    if not _is_number(threshold) or not 0 <= threshold < 1:
        raise ValueError(f"{where} score_threshold must be in [0, 1), got {threshold!r}")
    return KeypointSettings(
        num_keypoints=int(k),
        flip_pairs=pairs,
        sigmas=tuple(float(s) for s in sigmas),
        names=tuple(names) if names is not None else None,
        radius=int(params["radius"]),
        stride=int(params["stride"]),
        max_instances=int(params["max_instances"]),
        score_threshold=float(threshold),
    )


def _flip_pairs(value: Any, k: int, where: str) -> tuple[tuple[int, int], ...]:
    """`flip_pairs` as (i, j) pairs of distinct keypoints in range, each keypoint in one pair."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{where} flip_pairs must be a list of [i, j] pairs, got {value!r}")
    pairs: list[tuple[int, int]] = []
    seen: dict[int, list[int]] = {}
    for pair in value:
        ok = isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2
        if not ok or not all(_is_int(i) for i in pair):
            raise ValueError(f"{where} flip_pairs: {pair!r} is not a pair [i, j] of integers")
        i, j = int(pair[0]), int(pair[1])
        for point in (i, j):
            if not 0 <= point < k:
                raise ValueError(
                    f"{where} flip_pairs: pair [{i}, {j}] names keypoint {point}, but "
                    f"num_keypoints is {k} (keypoints 0..{k - 1})"
                )
        if i == j:
            raise ValueError(f"{where} flip_pairs: pair [{i}, {j}] pairs a keypoint with itself")
        for point in (i, j):
            if point in seen:
                raise ValueError(
                    f"{where} flip_pairs: keypoint {point} is in two pairs ({seen[point]} and "
                    f"{[i, j]}); each keypoint has at most one mirror image"
                )
            seen[point] = [i, j]
        pairs.append((i, j))
    return tuple(pairs)


class KeypointHead(nn.Module):
    """CenterNet multi-pose head: the feature map resampled from the encoder's stride to the
    task's (bilinear up, average pooling down), a 3×3 conv + ReLU, and a 1×1 conv to the
    1 + 3K output channels; the heatmap bias starts at the logit of 0.1 (CenterNet's prior)."""

    def __init__(self, channels: int, in_stride: int, out_stride: int, outputs: int) -> None:
        super().__init__()
        self.in_stride, self.out_stride = in_stride, out_stride
        last = nn.Conv2d(HEAD_CHANNELS, outputs, 1)
        with torch.no_grad():
            last.bias[0] = math.log(0.1 / 0.9)  # type: ignore[index]
        self.body = nn.Sequential(nn.Conv2d(channels, HEAD_CHANNELS, 3, padding=1), nn.ReLU(), last)

    def forward(self, x: Tensor) -> Tensor:
        if self.in_stride > self.out_stride and self.in_stride % self.out_stride == 0:
            x = F.interpolate(x, scale_factor=self.in_stride // self.out_stride, mode="bilinear")
        elif self.out_stride > self.in_stride and self.out_stride % self.in_stride == 0:
            x = F.avg_pool2d(x, self.out_stride // self.in_stride, ceil_mode=True)
        elif self.in_stride != self.out_stride:
            scale = self.in_stride / self.out_stride
            size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
            x = F.interpolate(x, size=size, mode="bilinear")
        out: Tensor = self.body(x)
        return out


@dataclass(frozen=True)
class Instances:
    """The labelled instances of a batch, as the loss places them on the head's grid."""

    image: Tensor
    """(M,) the batch row of each instance."""
    row: Tensor
    col: Tensor
    """(M,) the cell of its centre."""
    offsets: Tensor
    """(M, K, 2) from the cell's anchor to each keypoint, in cells (0 where not labelled)."""
    labelled: Tensor
    """(M, K) bool: v > 0."""
    visible: Tensor
    """(M, K) float: 1 where v = 2, 0 elsewhere."""


def instance_centres(target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For targets (N, I, K, 3): which instances count (an unpadded, labelled instance with a
    labelled keypoint) as an (N, I) bool, each one's centre (N, I, 2), the mean of its labelled
    keypoints (0 where it does not count), and the labelled keypoints (N, I, K) bool."""
    labelled = target[..., 2] > 0  # False for NaN (unlabelled images) and padding (-1)
    count = labelled.sum(-1)
    xy = torch.where(labelled.unsqueeze(-1), target[..., :2], torch.zeros_like(target[..., :2]))
    centre = xy.sum(-2) / count.clamp(min=1).unsqueeze(-1)
    return count > 0, centre, labelled


def place_instances(target: Tensor, stride: int, height: int, width: int) -> Instances:
    """The instances of targets (N, I, K, 3) on an output grid of `height` × `width` cells at
    `stride`: each centre's cell (clamped into the grid) and the offsets to its keypoints."""
    counts, centre, labelled = instance_centres(target)
    image, slot = torch.nonzero(counts, as_tuple=True)
    c = centre[image, slot]
    col = (c[:, 0] / stride).floor().long().clamp(0, width - 1)
    row = (c[:, 1] / stride).floor().long().clamp(0, height - 1)
    anchor = torch.stack([(col + 0.5) * stride, (row + 0.5) * stride], -1).to(target.dtype)
    points = labelled[image, slot]
    offsets = (target[image, slot, :, :2] - anchor.unsqueeze(1)) / stride
    offsets = torch.where(points.unsqueeze(-1), offsets, torch.zeros_like(offsets))
    visible = (target[image, slot, :, 2] == 2).to(target.dtype)
    return Instances(image, row, col, offsets, points, visible)


def gaussian_heatmap(
    instances: Instances, batch: int, height: int, width: int, radius: int
) -> Tensor:
    """(batch, height, width) CenterNet target: a Gaussian of sigma (2·radius + 1) / 6 cells,
    cut at `radius` cells, peaking at 1 on each instance's centre cell; the max where two
    overlap."""
    device = instances.row.device
    heat = torch.zeros(batch, height, width, device=device)
    if not len(instances.image):
        return heat
    sigma = (2 * radius + 1) / 6
    dy = torch.arange(height, device=device).view(1, -1, 1) - instances.row.view(-1, 1, 1)
    dx = torch.arange(width, device=device).view(1, 1, -1) - instances.col.view(-1, 1, 1)
    g = torch.exp(-(dx**2 + dy**2).float() / (2 * sigma**2))
    g = torch.where((dx.abs() <= radius) & (dy.abs() <= radius), g, torch.zeros_like(g))
    index = instances.image.view(-1, 1).expand(-1, height * width)
    return heat.view(batch, -1).scatter_reduce_(0, index, g.flatten(1), "amax").view_as(heat)


def keypoint_loss(
    output: Tensor,
    target: Tensor,
    settings: KeypointSettings,
    offset_weight: float = 1.0,
    visibility_weight: float = 1.0,
) -> Tensor:
    """CenterNet multi-pose loss of labelled images, normalised by their M instances:
    (focal loss on the centre heatmap + offset_weight · Σ L1 + visibility_weight · Σ BCE) /
    max(M, 1), where an instance's L1 is the mean over its labelled keypoints of |Δx| + |Δy|
    (in cells) and its BCE the mean of visible (v = 2) vs occluded (v = 1) there. The focal
    loss (α = 2, β = 4) sums −(1 − p)^α log p over centre cells and
    −p^α (1 − y)^β log(1 − p) over the others; images without instances give only the
    latter."""
    n, _, h, w = output.shape
    k = settings.num_keypoints
    inst = place_instances(target, settings.stride, h, w)
    heat = gaussian_heatmap(inst, n, h, w, settings.radius).to(output.dtype)
    logits = output[:, 0]
    centre = torch.zeros_like(logits, dtype=torch.bool)
    centre[inst.image, inst.row, inst.col] = True
    p = torch.sigmoid(logits)
    positive = (1 - p) ** FOCAL_ALPHA * F.logsigmoid(logits)
    negative = p**FOCAL_ALPHA * (1 - heat) ** FOCAL_BETA * F.logsigmoid(-logits)
    total = -torch.where(centre, positive, negative).sum()
    m = len(inst.image)
    if m:
        at = output[inst.image, :, inst.row, inst.col]  # (M, 1 + 3K)
        offsets = at[:, 1 : 1 + 2 * k].reshape(m, k, 2)
        points = inst.labelled.to(output.dtype)
        per_point = (offsets - inst.offsets.to(output.dtype)).abs().sum(-1)
        l1 = (per_point * points).sum(1) / points.sum(1)
        bce = F.binary_cross_entropy_with_logits(
            at[:, 1 + 2 * k :], inst.visible.to(output.dtype), reduction="none"
        )
        total = (
            total
            + offset_weight * l1.sum()
            + visibility_weight * ((bce * points).sum(1) / points.sum(1)).sum()
        )
    return total / max(m, 1)


def decode_output(output: Tensor, settings: KeypointSettings) -> Tensor:
    """Head output (N, 1 + 3K, h, w) → instances (N, k, 1 + K, 3): the `max_instances`
    highest 3×3 local maxima of the centre heatmap; see the module docstring for the layout."""
    n, _, h, w = output.shape
    k, s, slots = settings.num_keypoints, settings.stride, settings.max_instances
    heat = torch.sigmoid(output[:, 0:1])
    peaks = torch.where(heat == F.max_pool2d(heat, 3, stride=1, padding=1), heat, 0.0)
    take = min(slots, h * w)
    scores, index = peaks.flatten(1).topk(take, dim=1)
    row, col = index // w, index % w
    anchor = torch.stack([(col + 0.5) * s, (row + 0.5) * s], -1).to(output.dtype)
    at = output.flatten(2).gather(2, index.unsqueeze(1).expand(-1, output.shape[1], -1))
    at = at.transpose(1, 2)  # (N, take, 1 + 3K)
    points = anchor.unsqueeze(2) + at[..., 1 : 1 + 2 * k].reshape(n, take, k, 2) * s
    visibility = torch.sigmoid(at[..., 1 + 2 * k :]).unsqueeze(-1)
    keypoints = torch.cat([points, visibility], -1)
    centre = torch.cat([anchor, scores.unsqueeze(-1)], -1).unsqueeze(2)
    found = torch.cat([centre, keypoints], 2)
    found = torch.where((scores >= settings.score_threshold).view(n, take, 1, 1), found, 0.0)
    if take < slots:
        found = F.pad(found, (0, 0, 0, 0, 0, slots - take))
    return found


def _extent(points: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, width, height) of points (P, 2), each side at least 1 pixel."""
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    return float(x0), float(y0), max(float(x1 - x0), 1.0), max(float(y1 - y0), 1.0)


def _pck_counts(gt: np.ndarray, found: np.ndarray) -> tuple[int, int]:
    """(correct, labelled) keypoints of one image: GT instances (G, K, 3) matched greedily to
    its predicted instances (P, 1 + K, 3) by centre distance, nearest pair first."""
    labelled = gt[..., 2] > 0
    total = int(labelled.sum())
    if not len(gt) or not len(found):
        return 0, total
    centres = np.stack([gt[g, labelled[g], :2].mean(0) for g in range(len(gt))])
    distance = np.linalg.norm(centres[:, None] - found[None, :, 0, :2], axis=-1)
    used_gt, used_found, correct = set(), set(), 0
    for flat in np.argsort(distance, axis=None, kind="stable"):
        g, p = divmod(int(flat), distance.shape[1])
        if g in used_gt or p in used_found:
            continue
        used_gt.add(g)
        used_found.add(p)
        _, _, width, height = _extent(gt[g, labelled[g], :2])
        error = np.linalg.norm(found[p, 1:, :2] - gt[g, :, :2], axis=-1)
        correct += int((labelled[g] & (error <= PCK_ALPHA * max(width, height))).sum())
    return correct, total


def oks_ap(
    images: Sequence[tuple[np.ndarray, np.ndarray]], sigmas: Sequence[float], max_dets: int
) -> float:
    """COCO keypoint AP (OKS 0.50:0.95, all areas) by pycocotools' COCOeval, over images given
    as (GT instances (G, K, 3), predicted instances (P, 1 + K, 3)). A GT instance's area is
    that of its labelled keypoints' extent (each side at least 1 pixel)."""
    from pycocotools.coco import COCO  # type: ignore[import-untyped]
    from pycocotools.cocoeval import COCOeval  # type: ignore[import-untyped]

    gts: list[dict[str, Any]] = []
    dts: list[dict[str, Any]] = []
    for image, (gt, found) in enumerate(images):
        for inst in gt:
            labelled = inst[:, 2] > 0
            x0, y0, width, height = _extent(inst[labelled, :2])
            gts.append(
                {
                    "id": len(gts) + 1,
                    "image_id": image,
                    "category_id": 1,
                    "iscrowd": 0,
                    "keypoints": inst.reshape(-1).tolist(),
                    "num_keypoints": int(labelled.sum()),
                    "area": width * height,
                    "bbox": [x0, y0, width, height],
                }
            )
        for inst in found:
            x0, y0, width, height = _extent(inst[1:, :2])
            dts.append(
                {
                    "id": len(dts) + 1,
                    "image_id": image,
                    "category_id": 1,
                    "keypoints": inst[1:].reshape(-1).tolist(),
                    "score": float(inst[0, 2]),
                    "area": width * height,
                    "bbox": [x0, y0, width, height],
                }
            )
    if not dts:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print their progress
        sets = []
        for annotations in (gts, dts):
            coco = COCO()
            coco.dataset = {
                "images": [{"id": i} for i in range(len(images))],
                "categories": [{"id": 1, "name": "instance"}],
                "annotations": annotations,
            }
            coco.createIndex()
            sets.append(coco)
        evaluation = COCOeval(sets[0], sets[1], iouType="keypoints")
        evaluation.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=float)
        evaluation.params.maxDets = [max_dets]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, 0, 0, -1]  # OKS, recall, class, all areas
    return coco_precision_mean(precision, NO_INSTANCE)


class KeypointAccumulator(MetricAccumulator):
    """`oks_ap` and `pck` of a keypoint task over batches: per labelled image, its GT instances
    and its (at most `max_instances`) predicted ones are kept for COCOeval, and PCK's counts
    are summed; the head outputs themselves are not kept. `names`: the metrics to report
    (a custom metric is `Undefined`: it would need every prediction at once)."""

    def __init__(
        self, settings: KeypointSettings, names: Sequence[str] = ("oks_ap", "pck")
    ) -> None:
        self.settings, self.names = settings, tuple(names)
        self.images: list[tuple[np.ndarray, np.ndarray]] = []
        self.correct = self.counted = 0
        self.finite = True

    def update(self, output: Tensor, target: Tensor) -> None:
        keep = label_mask(target)
        self.finite = self.finite and bool(torch.isfinite(output[keep]).all())
        self.update_found(decode_output(output[keep], self.settings), target[keep])

    def update_found(self, found: Tensor, target: Tensor) -> None:
        """One batch of decoded predictions (N, k, 1 + K, 3) and targets of labelled images."""
        counts, _, _ = instance_centres(target)
        for n in range(target.shape[0]):
            gt = target[n][counts[n]].double().numpy()
            mine = found[n][found[n, :, 0, 2] > 0].double().numpy()
            self.images.append((gt, mine))
            correct, labelled = _pck_counts(gt, mine)
            self.correct += correct
            self.counted += labelled

    def compute(self) -> dict[str, float]:
        values: dict[str, float] = {"oks_ap": NO_INSTANCE, "pck": NO_INSTANCE}
        if not self.finite:  # a diverged model: its NaN keypoints would score 0
            values = dict.fromkeys(values, Undefined("predictions not finite"))
        elif self.counted:
            s = self.settings
            values["oks_ap"] = oks_ap(self.images, s.sigmas, s.max_instances)
            values["pck"] = self.correct / self.counted
        custom = Undefined("custom metrics are not computed for keypoints tasks")
        return {name: values.get(name, custom) for name in self.names}


def label_mask(target: Tensor) -> Tensor:
    """One bool per image: labelled unless every element is NaN."""
    nan = torch.isnan(target).reshape(target.shape[0], -1)
    if not nan.shape[1]:
        return torch.ones(target.shape[0], dtype=torch.bool, device=target.device)
    return ~nan.all(1)


def _metric(name: str) -> Metric:
    """A built-in metric as a function of (targets, predictions) arrays, with the default
    sigmas (a task's own accumulator uses its `sigmas`)."""

    def fn(y: np.ndarray, p: np.ndarray) -> float:
        k = y.shape[2]
        settings = KeypointSettings(k, sigmas=(DEFAULT_SIGMA,) * k, max_instances=p.shape[1])
        acc = KeypointAccumulator(settings, (name,))
        acc.update_found(torch.as_tensor(p), torch.as_tensor(y))
        return acc.compute()[name]

    return Metric(name, fn, True, PYCOCOTOOLS if name == "oks_ap" else None)


class KeypointsKind(InstanceKind):
    """Pose: K keypoints per instance, several instances per image (see the module docstring
    for the target, head output and prediction layouts). `kind_params`: `num_keypoints`
    (required), `flip_pairs` ([i, j] left/right pairs swapped by a horizontal flip), `sigmas`
    (OKS sigmas, one number or one per keypoint; 0.05), `names`, `radius` (of the centre
    Gaussian, in cells; 2), `stride` (input pixels per output cell; 4), `max_instances` (20)
    and `score_threshold` (0.1). Loss parameters: `offset_weight`, `visibility_weight` (1)."""

    losses: ClassVar[Mapping[str, LossSpec]] = {
        "centernet": LossSpec(keypoint_loss, ("offset_weight", "visibility_weight"))
    }
    metrics: ClassVar[Mapping[str, Metric]] = {"oks_ap": _metric("oks_ap"), "pck": _metric("pck")}
    params: ClassVar[Mapping[str, Any]] = {
        "num_keypoints": None,
        "flip_pairs": (),
        "sigmas": DEFAULT_SIGMA,
        "names": None,
        "radius": 2,
        "stride": 4,
        "max_instances": 20,
        "score_threshold": 0.1,
    }
    served_meaning = (
        "instances by score, shape (batch, max_instances, 1 + keypoints, 3): row 0 [centre x, "
        "centre y, score], then [x, y, visibility probability] per keypoint, in input pixels; "
        "empty slots are zeros"
    )

    label = "keypoints"

    def settings(self, task: Task) -> KeypointSettings:
        return parse_settings(task)

    def out_features(self, task: Task) -> int:
        return parse_settings(task).channels

    def expected_output(self, task: Task) -> str:
        s = parse_settings(task)
        return f"(N, {s.channels}, h, w) for targets (N, instances, {s.num_keypoints}, 3)"

    def build_head(self, task: Task, features: Features) -> nn.Module:
        """A CenterNet multi-pose head (`KeypointHead`) at the task's `stride`; refuses an
        encoder that gives one vector per image."""
        if not features.spatial:
            raise ValueError(
                f"task {task.name!r} (keypoints) predicts from a feature map, but its encoder "
                f"gives one vector of {features.channels} values per image; use an encoder "
                "that keeps the spatial layout: cnn, resnet_fpn, vit or timm"
            )
        s = parse_settings(task)
        return KeypointHead(features.channels, features.stride, s.stride, s.channels)

    def check_output(self, task: Task, output: Tensor, target: Tensor) -> None:
        s = parse_settings(task)
        fits = (
            output.ndim == 4
            and target.ndim == 4
            and output.shape[:2] == (target.shape[0], s.channels)
            and target.shape[2:] == (s.num_keypoints, 3)
        )
        if not fits:
            raise ValueError(
                f"task {task.name!r} (keypoints): its head gives outputs of shape "
                f"{tuple(output.shape)} for targets of shape {tuple(target.shape)}; a "
                f"keypoints head with {s.num_keypoints} keypoints gives "
                f"{self.expected_output(task)}"
            )

    def make_loss(
        self, name: str, params: Mapping[str, float], label_smoothing: float = 0.0
    ) -> ElementLoss:
        """The CenterNet loss with the bound task's settings and loss parameters."""
        return functools.partial(self.losses[name].fn, settings=self.bound, **params)

    def element_mask(self, target: Tensor) -> Tensor:
        """Which keypoints are labelled: v > 0 (N, I, K)."""
        return target[..., 2] > 0

    def label_mask(self, target: Tensor) -> Tensor:
        """One bool per image: labelled unless all NaN (an image without instances is)."""
        return label_mask(target)

    def label_count(self, target: Tensor) -> int:
        """The loss is a sum over the labelled images divided by their instances: those."""
        keep = label_mask(target)
        if not bool(keep.any()):
            return 0
        return int(instance_centres(target[keep])[0].sum())

    def loss_denominator(self, count: Tensor, labelled: Tensor) -> Tensor:
        """At least 1 where an image is labelled: an image without instances has a loss, its
        heatmap's negative term."""
        return torch.where(labelled, count.clamp(min=1), 0.0)

    def loss(self, fn: ElementLoss, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """`fn` (the CenterNet loss, already normalised) on the labelled images."""
        if not bool(mask.any()):
            return output.sum() * 0.0
        return fn(output[mask], target[mask]).mean()

    def predict(self, output: Tensor) -> Tensor:
        return decode_output(output, self.bound)

    def truth(self, target: Tensor, scale: Scale | None) -> np.ndarray:
        return target.float().numpy()

    def accumulator(
        self, task: Task, scale: Scale | None, fit: TargetFit | None = None
    ) -> MetricAccumulator:
        names = [m.name for m in task.metric_objects()]
        return KeypointAccumulator(parse_settings(task), names)

    def evaluate(
        self, metrics: Sequence[Metric], predictions: np.ndarray, targets: np.ndarray
    ) -> dict[str, float]:
        """The metrics of decoded predictions (N, k, 1 + K, 3) against targets, labelled images
        only."""
        if self.task is None:
            return super().evaluate(metrics, predictions, targets)
        acc = KeypointAccumulator(self.bound, [m.name for m in metrics])
        target = torch.as_tensor(targets)
        keep = label_mask(target)
        acc.update_found(torch.as_tensor(predictions)[keep], target[keep])
        values = acc.compute()
        return {m.name: values[m.name] for m in metrics}

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """No labelled image, or no instance with a labelled keypoint in them."""
        keep = label_mask(target)
        if bool(keep.any()) and not bool(instance_centres(target[keep])[0].any()):
            return "no labelled instance, so its metrics are undefined"
        return super().degenerate(task, target, fit)

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        """Column `<task>`: per image a list of instances {score, center: [x, y], keypoints:
        [[x, y, visibility probability], ...]} in input pixels, best first."""
        images = []
        for found in prediction:
            images.append([
                {
                    "score": float(inst[0, 2]),
                    "center": [float(inst[0, 0]), float(inst[0, 1])],
                    "keypoints": inst[1:].astype(float).tolist(),
                }
                for inst in found
                if inst[0, 2] > 0
            ])  # fmt: skip
        return {task.name: images}

    def read_target(
        self, task: Task, value: Any, base: Path, fit: TargetFit, size: tuple[int, int]
    ) -> Tensor:
        """One image's instances (I, K, 3) [x, y, v] from a .json path (relative to `base`) or
        the JSON text `[{"keypoints": [[x, y, v], ...]}, ...]`, in the ORIGINAL image's pixels
        (`size` is not used: the data layer then calls `rescale_target` with the image's
        original size, which also refuses points outside it); `[]`: no instance; an empty
        cell: unlabelled (NaN)."""
        s = parse_settings(task)
        where = f"task {task.name!r}"
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            return torch.full((1, s.num_keypoints, 3), float("nan"))
        if isinstance(value, Path) or (
            isinstance(value, str) and not value.lstrip().startswith(("[", "{"))
        ):
            path = base / value
            try:
                text = path.read_text()
            except OSError as err:
                reason = f"{where}: cannot read keypoints file {str(path)!r} ({err})"
                raise DataError(reason) from None
            where = f"{where}: keypoints file {value!r}"
        else:
            text, where = value, f"{where}: keypoints"
        try:
            data = json.loads(text) if isinstance(text, str) else text
        except json.JSONDecodeError as err:
            raise DataError(f"{where} is not valid JSON ({err})") from None
        return torch.tensor(_instances(data, s, where), dtype=torch.float32).reshape(
            -1, s.num_keypoints, 3
        )

    def rescale_target(
        self, task: Task, target: Tensor, original_size: tuple[int, int], size: tuple[int, int]
    ) -> Tensor:
        """Instances read in pixels of the original image (`original_size`, H0 × W0) in those
        of the model's input `size` (H × W): x · W / W0, y · H / H0. The data layer calls it
        after `read_target`; a labelled point outside the original image is a `DataError`
        naming the instance and the point."""
        if bool(torch.isnan(target).all()) and target.numel():
            return target
        h0, w0 = original_size
        labelled = target[..., 2] > 0
        outside = labelled & (
            (target[..., 0] < 0) | (target[..., 0] > w0) | (target[..., 1] < 0)
            | (target[..., 1] > h0)
        )  # fmt: skip
        if bool(outside.any()):
            i, k = (int(v) for v in torch.nonzero(outside)[0])
            x, y = (float(v) for v in target[i, k, :2])
            raise DataError(
                f"task {task.name!r}: instance {i}, keypoint {self._name(task, k)} at "
                f"({x:g}, {y:g}) lies outside the {w0}×{h0} image (labelled points must lie "
                "within it; mark points outside it v = 0)"
            )
        h, w = size
        out = target.clone()
        out[..., 0] *= w / w0
        out[..., 1] *= h / h0
        return out

    @staticmethod
    def _name(task: Task, k: int) -> str:
        names = parse_settings(task).names
        return f"{k} ({names[k]!r})" if names else str(k)

    def pad_rows(self, task: Task, rows: Sequence[Tensor]) -> Tensor:
        """Images' instances (I_i, K, 3) as one batch (N, I, K, 3), I = the most instances of
        an image (at least 1, so that an unlabelled image, all NaN, stays apart from one
        without instances): labelled rows padded with instances [0, 0, -1], unlabelled ones
        NaN throughout. The data layer calls it to collate a batch."""
        k = parse_settings(task).num_keypoints
        most = max([1, *(int(r.shape[0]) for r in rows)])
        out = []
        for r in rows:
            if r.numel() and bool(torch.isnan(r).all()):
                out.append(torch.full((most, k, 3), float("nan"), dtype=r.dtype))
                continue
            pad = torch.zeros(most - r.shape[0], k, 3, dtype=r.dtype)
            pad[..., 2] = -1
            out.append(torch.cat([r, pad]))
        return torch.stack(out)

    def missing_target(self, task: Task, like: Tensor) -> Tensor:
        """An unlabelled image: NaN, with at least one instance (see `pad_rows`)."""
        k = parse_settings(task).num_keypoints
        return torch.full((max(1, like.shape[0]), k, 3), float("nan"), dtype=like.dtype)

    def transform_target(self, task: Task, target: Tensor, geometry: Geometry) -> Tensor:
        """One image's instances (I, K, 3) after a horizontal flip (labelled x' = W − x, then
        each flip pair's entries swap: left becomes right) and a crop (points shift; those
        outside it get v = 0), scaled to `geometry.size`."""
        if target.numel() and bool(torch.isnan(target).all()):
            return target
        out = target.clone()
        height, width = geometry.source_size or geometry.size
        labelled = out[..., 2] > 0
        if geometry.hflip:
            out[..., 0] = torch.where(labelled, width - out[..., 0], out[..., 0])
            for i, j in parse_settings(task).flip_pairs:
                out[:, [i, j]] = out[:, [j, i]]
        if geometry.crop is not None:
            top, left, height, width = geometry.crop
            out[..., 0] -= left
            out[..., 1] -= top
            x, y = out[..., 0], out[..., 1]
            outside = (out[..., 2] > 0) & ((x < 0) | (x > width) | (y < 0) | (y > height))
            out[..., 2] = torch.where(outside, torch.zeros_like(out[..., 2]), out[..., 2])
        size_h, size_w = geometry.size
        padding = out[..., 2] < 0
        out[..., 0] = torch.where(padding, out[..., 0], out[..., 0] * size_w / width)
        out[..., 1] = torch.where(padding, out[..., 1], out[..., 1] * size_h / height)
        return out


def _instances(data: Any, s: KeypointSettings, where: str) -> list[list[list[float]]]:
    """Parsed JSON instances checked: a list of {"keypoints": K triples [x, y, v]}, v in
    {0, 1, 2}, finite coordinates; a `DataError` names the instance and the point."""
    k = s.num_keypoints
    if not isinstance(data, list):
        raise DataError(
            f'{where} must be a list of instances like [{{"keypoints": [[x, y, v], ...]}}], '
            f"got {type(data).__name__}"
        )
    out = []
    for i, inst in enumerate(data):
        points = inst.get("keypoints") if isinstance(inst, dict) else None
        if not isinstance(points, list) or len(points) != k:
            got = len(points) if isinstance(points, list) else "none"
            raise DataError(
                f'{where}: instance {i} must hold "keypoints": a list of {k} [x, y, v] '
                f"triples (got {got})"
            )
        rows = []
        for p, point in enumerate(points):
            name = f"{p} ({s.names[p]!r})" if s.names else str(p)
            ok = isinstance(point, list) and len(point) == 3
            if not ok or not all(_is_number(v) and math.isfinite(v) for v in point):
                raise DataError(
                    f"{where}: instance {i}, keypoint {name} must be [x, y, v] with finite "
                    f"numbers, got {point!r}"
                )
            x, y, v = point
            if v not in (0, 1, 2):
                raise DataError(
                    f"{where}: instance {i}, keypoint {name} has visibility {v!r}; use 0 (not "
                    "labelled), 1 (occluded) or 2 (visible)"
                )
            if v > 0 and (x < 0 or y < 0):
                raise DataError(
                    f"{where}: instance {i}, keypoint {name} at ({x:g}, {y:g}) lies outside "
                    "the image (labelled points must lie within it; mark it v = 0)"
                )
            rows.append([float(x), float(y), float(v)])
        out.append(rows)
    return out
