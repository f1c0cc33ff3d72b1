"""Segmentation: a class per pixel, read from mask files; unlabelled pixels are −100."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassJaccardIndex

from polytask.tasks._columns import DataError
from polytask.tasks._kinds._base import IGNORE_INDEX, Scale, TargetFit
from polytask.tasks._kinds._dense import (
    DenseKind,
    PixelStats,
    Size,
    refuse_shape,
    resize_nearest,
    stats_metric,
)
from polytask.tasks._losses import standard_losses
from polytask.tasks._metrics import Metric

if TYPE_CHECKING:
    from polytask.tasks._task import Task

PNG_IGNORE = 255
"""A mask pixel of this value is not labelled (the PNG convention of VOC and Cityscapes)."""


class SegmentationStats(PixelStats):
    """The confusion matrix of pixel classes (torchmetrics' `MulticlassJaccardIndex` state):
    mIoU is the mean IoU over the classes present in the truths or predictions, pixel accuracy
    the share of labelled pixels predicted right."""

    def __init__(self, num_classes: int) -> None:
        self.jaccard = MulticlassJaccardIndex(
            num_classes, average="macro", ignore_index=IGNORE_INDEX, validate_args=False
        )
        self.count = 0

    @classmethod
    def of(cls, truth: np.ndarray, prediction: np.ndarray) -> SegmentationStats:
        """Statistics of whole arrays; the classes are those the arrays hold."""
        stats = cls(max(int(truth.max(initial=0)), int(prediction.max(initial=0)), 1) + 1)
        stats.add(torch.as_tensor(prediction), torch.as_tensor(truth))
        return stats

    def add(self, prediction: Tensor, truth: Tensor) -> None:
        self.count += int((truth != IGNORE_INDEX).sum())
        self.jaccard.update(prediction.long(), truth.long())

    def values(self) -> dict[str, float]:
        confusion = self.jaccard.confmat
        return {
            "miou": float(self.jaccard.compute()),
            "pixel_accuracy": float(confusion.diagonal().sum() / confusion.sum()),
        }


class SegmentationKind(DenseKind):
    """A class per pixel among `num_classes` (required: the classes are indices 0..C−1 in mask
    files). Targets (N, H, W) long, −100 where a pixel is not labelled (255 in a PNG mask); the
    head gives (N, C, H, W) logits; the loss is the cross entropy averaged over the labelled
    pixels of the batch; metrics mIoU and pixel accuracy from a confusion matrix accumulated
    over batches. Predictions are class maps (N, H, W)."""

    served_meaning = "probability of each class at each pixel, shape (batch, classes, H, W)"

    losses = standard_losses("cross_entropy")
    metrics: ClassVar[Mapping[str, Metric]] = {
        "miou": stats_metric("miou", SegmentationStats.of, True),
        "pixel_accuracy": stats_metric("pixel_accuracy", SegmentationStats.of, True),
    }
    float_target = False

    def validate(self, task: Task) -> None:
        super().validate(task)
        if task.num_classes is None or task.num_classes < 2:
            got = "" if task.num_classes is None else f" (got {task.num_classes})"
            raise ValueError(
                f"task {task.name!r}: a segmentation task needs num_classes >= 2{got}: its "
                "masks hold class indices 0..num_classes-1 (255 = not labelled)"
            )

    def out_features(self, task: Task) -> int:
        return int(task.num_classes or 0)

    def expected_output(self, task: Task) -> str:
        return f"{task.num_classes} logits, one per class,"

    def output_shapes(self, task: Task, target: Tensor) -> list[tuple[int, ...]]:
        n, h, w = target.shape
        return [(n, self.out_features(task), h, w)]

    def target_shape(self, size: Size) -> tuple[int, ...]:
        return size

    def pixel_stats(self, task: Task) -> PixelStats:
        return SegmentationStats(self.out_features(task))

    def predict(self, output: Tensor) -> Tensor:
        return torch.softmax(output, dim=1)

    def prediction(self, output: Tensor, scale: Scale | None) -> np.ndarray:
        """The class map (N, H, W): the most likely class at each pixel."""
        return output.argmax(dim=1).numpy()

    def truth(self, target: Tensor, scale: Scale | None) -> np.ndarray:
        """Class indices as they are (−100: not labelled)."""
        return target.numpy()

    def fit_target(self, task: Task, df: pd.DataFrame) -> TargetFit:
        """The classes 0..num_classes−1 (masks hold indices, not names)."""
        return TargetFit(classes=list(range(self.out_features(task))))

    def fit_files(self, task: Task, targets: Sequence[Tensor]) -> TargetFit:
        """The classes 0..num_classes−1, as `fit_target`."""
        return self.fit_target(task, pd.DataFrame())

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """Every labelled pixel of the same class: nothing to tell apart."""
        labelled = target[target != IGNORE_INDEX]
        if not len(labelled) or bool((labelled != labelled[0]).any()):
            return super().degenerate(task, target, fit)
        return f"every labelled pixel is class {int(labelled[0])} (one of {task.num_classes})"

    def read_map(
        self,
        task: Task,
        path: Path,
        array: np.ndarray,
        mode: str | None,
        fit: TargetFit,
        size: Size,
    ) -> Tensor:
        """A PNG of class indices (mode L or P; 255 = not labelled; or a 1-bit PNG of classes 0
        and 1, as Pillow saves a bool mask) or a .npy of integers
        (255 or −100 = not labelled; −100 only with more than 255 classes, where 255 is a
        class), resized by nearest neighbour."""
        if mode is not None and mode not in ("L", "P", "1"):
            raise DataError(
                f"task {task.name!r}: {path} is a PNG of mode {mode}; a segmentation mask is a "
                "single-channel PNG of class indices (mode L or P, or 1 for classes 0 and 1)"
            )
        if array.ndim != 2:
            refuse_shape(task, path, array, "(H, W) class indices")
        if array.dtype.kind not in "iub":
            raise DataError(
                f"task {task.name!r}: {path} holds {array.dtype} values; a segmentation mask "
                "holds integer class indices"
            )
        labels = array.astype(np.int64)
        classes = self.out_features(task)
        png_ignore = mode is not None or classes <= PNG_IGNORE  # with 256+ classes, 255 is one
        labels[((labels == PNG_IGNORE) & png_ignore) | (labels == IGNORE_INDEX)] = IGNORE_INDEX
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= classes))
        if bad.any():
            found = sorted(set(labels[bad].tolist()))[:5]
            raise DataError(
                f"task {task.name!r}: {path} holds class indices {found} outside 0..{classes - 1} "
                f"(num_classes is {classes}; 255 marks unlabelled pixels)"
            )
        return resize_nearest(torch.from_numpy(labels), size)

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        """One class map per row, uint8 (a PNG's pixels) when the classes fit."""
        dtype = np.uint8 if self.out_features(task) <= PNG_IGNORE else np.int32
        return {task.name: [p.astype(dtype) for p in prediction]}
