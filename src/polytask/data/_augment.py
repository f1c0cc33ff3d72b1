"""Image augmentations for training sources: a horizontal flip, a random resized crop and a
colour jitter, drawn per row from a generator of its own so that any process draws the same.

The geometric part is described by a `Geometry` (polytask.tasks), which each task kind applies
to its targets (`TaskKind.transform_target`): a mask flips with its image, boxes move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as checked_dataclass
from torch import Tensor

from polytask.tasks._kinds._base import Geometry

_LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601 weights of R, G, B in the grey level the contrast jitter scales around."""


@checked_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Augment:
    """Which augmentations a training source draws for each image (all off by default):
    `hflip`, the probability of a horizontal flip; `crop_scale`, the range of the area
    fraction a random crop keeps (resized back to the input size), with its aspect ratio in
    `crop_ratio`; `brightness` / `contrast`, the largest relative change of each (a factor
    drawn from [1 - b, 1 + b])."""

    hflip: float = 0.0
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"augment.hflip is a probability in [0, 1], got {self.hflip}")
        if self.crop_scale is not None:
            low, high = self.crop_scale
            if not 0 < low <= high <= 1:
                raise ValueError(
                    f"augment.crop_scale must be [low, high] with 0 < low <= high <= 1 (the "
                    f"fraction of the image's area a crop keeps), got {list(self.crop_scale)}"
                )
        low, high = self.crop_ratio
        if not 0 < low <= high:
            raise ValueError(
                f"augment.crop_ratio must be [low, high] with 0 < low <= high, got "
                f"{list(self.crop_ratio)}"
            )
        for name in ("brightness", "contrast"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"augment.{name} must be in [0, 1), got {value}")

    @property
    def active(self) -> bool:
        """Whether anything is drawn at all."""
        return bool(self.hflip or self.crop_scale or self.brightness or self.contrast)

    def draw(self, generator: torch.Generator, size: tuple[int, int]) -> Drawn:
        """One image's augmentation at input `size` (height, width). The same numbers are
        drawn in the same order whatever is switched on, so that turning one augmentation on
        leaves the others' draws unchanged."""
        u = torch.rand(7, generator=generator, dtype=torch.float64).tolist()
        flip = u[0] < self.hflip
        crop = None
        if self.crop_scale is not None:
            crop = _crop(size, self.crop_scale, self.crop_ratio, u[1:5])
        brightness = 1 + self.brightness * (2 * u[5] - 1)
        contrast = 1 + self.contrast * (2 * u[6] - 1)
        geometry = Geometry(size=size, hflip=flip, crop=crop, source_size=size)
        return Drawn(geometry, brightness, contrast)


def _crop(
    size: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    u: list[float],
) -> tuple[int, int, int, int] | None:
    """(top, left, height, width) of a crop keeping an area fraction in `scale` with a width /
    height ratio in `ratio` (log-uniform), the ratio moved to the nearest at which that area
    fits in the image (clipping a side instead kept less area than drawn, and cropped even at
    scale 1); None when it is the whole."""
    height, width = size
    area = (scale[0] + (scale[1] - scale[0]) * u[0]) * height * width
    aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    aspect = min(max(aspect, area / height**2), width**2 / area)
    w = min(width, max(1, round(math.sqrt(area * aspect))))
    h = min(height, max(1, round(math.sqrt(area / aspect))))
    if (h, w) == (height, width):
        return None
    top = min(height - h, int(u[2] * (height - h + 1)))
    left = min(width - w, int(u[3] * (width - w + 1)))
    return top, left, h, w


@dataclass(frozen=True)
class Drawn:
    """One image's drawn augmentation: its geometry (applied to the image and, by each kind,
    to the targets) and its colour factors (the image only)."""

    geometry: Geometry
    brightness: float = 1.0
    contrast: float = 1.0

    def apply(self, image: Tensor) -> Tensor:
        """`image` (C, H, W, values in [0, 1]) augmented: flipped, cropped and resized back
        (bilinear), then brightness and contrast scaled, clipped to [0, 1]."""
        image = apply_geometry(image, self.geometry)
        if self.brightness != 1.0:
            image = image * self.brightness
        if self.contrast != 1.0:
            grey = _grey(image).mean()
            image = (image - grey) * self.contrast + grey
        return image.clamp(0.0, 1.0)


def apply_geometry(image: Tensor, geometry: Geometry) -> Tensor:
    """`image` (C, H, W) under `geometry`: flipped left-right, then the crop resized (bilinear)
    to `geometry.size`."""
    if geometry.hflip:
        image = image.flip(-1)
    if geometry.crop is not None:
        top, left, h, w = geometry.crop
        image = image[:, top : top + h, left : left + w]
    if tuple(image.shape[-2:]) != tuple(geometry.size):
        image = F.interpolate(
            image[None], size=geometry.size, mode="bilinear", align_corners=False
        )[0]
    return image


def _grey(image: Tensor) -> Tensor:
    """The grey level of each pixel, (H, W)."""
    if image.shape[0] != 3:
        return image.mean(0)
    weights = torch.tensor(_LUMA, dtype=image.dtype).view(3, 1, 1)
    return (image * weights).sum(0)


def row_generator(seed: int, row: int, key: int) -> torch.Generator:
    """The generator one row's augmentation is drawn from: seeded by the source's `seed`, the
    row, and the epoch's `key`, mixed (NumPy's SeedSequence) so that neighbouring rows and
    epochs draw unrelated numbers."""
    mixed = np.random.SeedSequence([seed % 2**63, row, key]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed))
