"""Image data: rows are images listed by a manifest (a table with an image path column and one
column per task), decoded with Pillow when a batch needs them, never all held in memory.

`ImageEncoding` is the image counterpart of `TabularPreprocessor`: fitted on the training
rows (input size, channels, per-channel normalisation, each task's `TargetFit`), saved with a
model, and turned into `ImageSource`s for any manifest rows. A task's targets are read by its
kind: image-level labels and values through `fit_target` / `encode_target` on the manifest
table (so regression targets are standardised), per-image files (masks, depth maps, boxes)
through `read_target` (`TaskKind.reads_files`).

Rules a kind's file targets follow here:

- Maps (a kind that keeps the default `pad_rows`, which stacks rows of one shape) are read
  row by row as batches need them.
- Variable-length targets (a kind that overrides `pad_rows`: boxes, keypoint instances) are
  small, so they are read for every row when the source is made (a bad box fails then, not
  in the middle of training) and each batch is padded to the longest row of the whole
  source: a source's rows keep one shape (`target_like`) whichever rows a batch holds.
- A task whose column labels no row of a source is left out of its targets (as a data set
  without a task's labels is), since its row shape cannot be known without one.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polytask.data._augment import Augment, Drawn, row_generator
from polytask.data._source import Batch, DataSource, Selected
from polytask.data._tensors import TaskData
from polytask.tasks._columns import DataError, check_columns, json_scalar, more_rows
from polytask.tasks._kinds import TargetFit, TaskKind
from polytask.tasks._task import Task

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from polytask.models.encoders import InputShape

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""The files `image_folder_frame` lists as images."""

FIT_SAMPLE = 256
"""Training images (and file targets per task) read to measure normalisation and fit targets."""


def variable_length(kind: TaskKind) -> bool:
    """Whether a kind's rows differ in length (it overrides `pad_rows`): such targets are read
    up front and padded to the longest row of their source."""
    return type(kind).pad_rows is not TaskKind.pad_rows


def _missing(cell: Any) -> bool:
    """An empty manifest cell: the row is not labelled for the task."""
    if isinstance(cell, str):
        return not cell.strip()
    return cell is None or bool(pd.isna(cell))


def _where(where: str, label: Any, image: str | None = None) -> str:
    row = f"{where}, row {label}"
    return f"{row} (image {image})" if image is not None else row


def image_folder_frame(root: str | Path) -> pd.DataFrame:
    """A manifest for a folder of class folders (`root/cat/1.png`, `root/dog/2.jpg`, ...):
    columns `image` (paths relative to `root`) and `label` (the class folder's name), sorted by
    path."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} not found (or not a folder)")
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.iterdir()):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                rows.append((f"{folder.name}/{file.name}", folder.name))
    if not rows:
        raise DataError(
            f"image folder {root} holds no class folders with images ({', '.join(IMAGE_SUFFIXES)})"
            ": put each class's images in a folder named after the class"
        )
    return pd.DataFrame(rows, columns=["image", "label"])


ORIENTATION = 0x0112
"""The EXIF tag saying how a stored image is turned to be seen upright (1: as stored)."""


def _high_depth(mode: str) -> bool:
    """Grey modes read as numbers (16-bit, 32-bit integer and float), not through 8 bits."""
    return mode == "F" or mode.startswith("I")


def _upright(image: PILImage) -> PILImage:
    """`image` turned as its EXIF orientation says (a phone photo is stored sideways)."""
    from PIL import ImageOps

    if image.getexif().get(ORIENTATION, 1) == 1:  # as stored (exif_transpose would copy it)
        return image
    return ImageOps.exif_transpose(image) or image


def _grey_values(image: PILImage) -> np.ndarray:
    """A 16-bit, 32-bit integer or float grey image as float32 (H, W) in [0, 1]: integers over
    65535 (Pillow opens a 16-bit PNG as I;16 or, in older versions, as I); floats as they are.
    Values outside those ranges are refused: scaling them by a guess would go unnoticed."""
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F":
        if low < -0.01 or high > 1.01:
            raise DataError(
                f"a float image with values from {low:g} to {high:g}: float images are read as "
                "intensities in [0, 1]; rescale it (e.g. divide by 255, or window and scale a "
                "CT's units) or save it as 8- or 16-bit"
            )
        values = values.clip(0.0, 1.0)
    else:
        if low < 0 or high > 65535:
            raise DataError(
                f"a 32-bit integer image with values from {low:g} to {high:g}: integer images "
                "are read as 16-bit (0 to 65535); save it as 16-bit, or as float in [0, 1]"
            )
        values = values / 65535.0
    return values.astype(np.float32)


def _to_unit(image: PILImage, channels: int, size: tuple[int, int]) -> np.ndarray:
    """A Pillow image as float32 (height, width, channels) in [0, 1] at `size`: 8-bit modes
    converted to L or RGB (palette and alpha resolved) and then resized; 16-bit, 32-bit and
    float grey images read as numbers, then resized (a grey image copied to each channel)."""
    from PIL import Image

    box = (size[1], size[0])
    if not _high_depth(image.mode):
        converted = image.convert("L" if channels == 1 else "RGB")
        if converted.size != box:
            converted = converted.resize(box, Image.Resampling.BILINEAR)
        values = np.asarray(converted, dtype=np.float32) / 255.0
        return values[..., None] if channels == 1 else values
    grey = _grey_values(image)
    if grey.shape != size:
        grey = np.asarray(
            Image.fromarray(grey, mode="F").resize(box, Image.Resampling.BILINEAR),
            dtype=np.float32,
        ).clip(0.0, 1.0)
    return np.repeat(grey[..., None], channels, axis=2)


def decode_image(
    path: str | Path, channels: int, size: tuple[int, int]
) -> tuple[Tensor, tuple[int, int]]:
    """The image at `path`, turned upright by its EXIF orientation, as (channels, height,
    width) floats in [0, 1] resized to `size` (bilinear), and its upright (height, width). An
    unreadable file raises DataError."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            opened.load()
            image = _upright(opened)
            original = (image.height, image.width)
            values = _to_unit(image, channels, (int(size[0]), int(size[1])))
    except FileNotFoundError:
        raise DataError("image file not found") from None
    except (OSError, ValueError) as err:  # Pillow's UnidentifiedImageError is an OSError
        raise DataError(f"cannot read the image: {err}") from None
    return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1))), original


def _image_size(path: str) -> tuple[int, int]:
    """(height, width) of the image at `path` upright (its EXIF orientation), from its header."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            turned = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn
            return (image.width, image.height) if turned else (image.height, image.width)
    except FileNotFoundError:
        raise DataError("image file not found") from None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the image: {err}") from None


def _image_paths(
    frame: pd.DataFrame,
    column: str,
    base: Path,
    where: str,
    labels: Sequence[Any],
    verify: bool = True,
) -> tuple[list[str], list[str]]:
    """Each row's image path (relative ones under `base`) and its cell as written; an empty
    cell, a file that does not exist or one that is not a whole image (`_unreadable`) is
    refused, naming the first such row and the others' files."""
    check_columns(frame, [column], "image path column (data.images.image_column)", where)
    paths: list[str] = []
    names: list[str] = []
    bad: list[tuple[Any, str | None, str]] = []
    for label, cell in zip(labels, frame[column].tolist(), strict=True):
        name = "" if _missing(cell) else str(cell).strip()
        path = base / name
        if not name:
            bad.append((label, None, f"no image path in column {column!r}"))
        elif not path.is_file():
            shown = "" if Path(name).is_absolute() else f" ({path})"
            bad.append((label, name, f"image file not found{shown}"))
        elif verify and (problem := _unreadable(path)):
            bad.append((label, name, problem))
        paths.append(str(path))
        names.append(name)
    if bad:
        label, image, what = bad[0]
        others = [f"row {row} ({name})" if name else f"row {row}" for row, name, _ in bad[1:6]]
        listed = ", ".join(others) + (", ..." if len(bad) > 6 else "")
        more = more_rows(len(bad) - 1, f"with no image or a bad one: {listed}")
        raise DataError(f"{_where(where, label, image)}: {what}{more}")
    return paths, names


def check_images(frame: pd.DataFrame, column: str, base: str | Path, where: str) -> None:
    """Refuse a manifest with rows whose image is missing or not a whole image, naming the
    first and the next five of all its rows (before the split, which checks each part)."""
    _image_paths(frame, column, Path(base), where, [json_scalar(v) for v in frame.index])


def _unreadable(path: Path) -> str | None:
    """Why the file at `path` is not a whole image, or None: Pillow's check of its structure
    (a tenth of a decode; a PNG or GIF cut off is found), and a JPEG not ending in its end
    marker decoded in full, so that bad files stop a run before it trains, not at its test."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            jpeg = image.format == "JPEG"
            image.verify()
        if jpeg:
            with path.open("rb") as file:
                file.seek(max(0, path.stat().st_size - 2))
                ended = file.read(2) == b"\xff\xd9"
            if not ended:
                with Image.open(path) as image:
                    image.load()
    except (OSError, ValueError, SyntaxError) as err:  # Pillow raises all three
        return f"cannot read the image: {err or type(err).__name__}"
    return None


def _looks_like_path(cell: Any) -> bool:
    return isinstance(cell, str) and not cell.lstrip().startswith(("[", "{"))


@dataclass(frozen=True)
class ImageEncoding:
    """How images and targets are encoded, fitted on the training rows (`fit`) and saved with
    a model (`to_dict` / `from_dict`): images resized to `size` (height, width) with `channels`
    (1: grey, 3: RGB), scaled to [0, 1] and normalised per channel by `mean` / `std`; each
    task's `TargetFit` (classes, standardisation scale) in `fits`."""

    size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fits: Mapping[str, TargetFit]
    image_column: str = "image"

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image size must be [height, width] of positive sizes, got {size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.channels:
                raise ValueError(
                    f"{name} must give one value per channel ({self.channels}), got {list(values)}"
                )
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {list(self.std)}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        base: str | Path | None,
        tasks: Sequence[Task],
        size: tuple[int, int],
        channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        image_column: str = "image",
        where: str | None = None,
        sample: int = FIT_SAMPLE,
        verify: bool = True,
    ) -> ImageEncoding:
        """Learn the encoding from the training rows `frame` (image paths relative to
        `base`): `mean` / `std` measured on up to `sample` of its images unless given, and
        each task's targets fitted by its kind (image-level tasks on the table, file targets
        on up to `sample` of them read as they are)."""
        where = where or "the manifest"
        base = Path(base) if base is not None else Path()
        labels = [json_scalar(v) for v in frame.index]
        paths, names = _image_paths(frame, image_column, base, where, labels, verify)
        picked = np.random.default_rng(0)
        chosen = np.sort(picked.choice(len(paths), min(len(paths), sample), replace=False))
        size = (int(size[0]), int(size[1]))
        if mean is None or std is None:
            measured = _measure(paths, names, chosen, labels, channels, size, where)
            mean = mean if mean is not None else measured[0]
            std = std if std is not None else measured[1]
        fits: dict[str, TargetFit] = {}
        for task in tasks:
            kind = task.kind_spec
            if kind.derives_targets:
                continue
            check_columns(frame, task.target_columns, f"task {task.name!r}: target columns",
                           where)  # fmt: skip
            if not kind.reads_files:
                try:
                    fits[task.name] = task.fit_target(frame)
                except DataError as err:
                    raise DataError(f"{where}: {err}") from None
                continue
            cells = frame[task.target_columns[0]].tolist()
            present = [i for i, cell in enumerate(cells) if not _missing(cell)]
            if not present:
                raise DataError(
                    f"{where}: task {task.name!r} has no label in the training rows: its column "
                    f"{task.target_columns[0]!r} is empty in all of them"
                )
            rows = sorted(picked.choice(present, min(len(present), sample), replace=False))
            raw = [
                _read_target(
                    task, cells[i], base, TargetFit(), size, paths[i], where, labels[i], names[i]
                )
                for i in rows
            ]
            fits[task.name] = kind.fit_files(task, raw)
        return cls(size, channels, tuple(mean), tuple(std), fits, image_column)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One image as the model takes it: (channels, height, width)."""
        return (self.channels, *self.size)

    @property
    def model_input(self) -> InputShape:
        """What an architecture builder is given for these inputs (`InputShape((C, H, W))`)."""
        from polytask.models.encoders import InputShape

        return InputShape(self.input_shape)

    def target_fit(self, task: Task) -> TargetFit:
        """What fitting learned about `task`'s targets, and the size of one input row."""
        fit = self.fits.get(task.name, TargetFit())
        return dataclasses.replace(fit, inputs=math.prod(self.input_shape))

    def resolve_tasks(self, tasks: Sequence[Task]) -> list[Task]:
        """Fill in what the training data settle (e.g. multiclass `num_classes`)."""
        return [t.kind_spec.resolve(t, self.target_fit(t)) for t in tasks]

    def normalise(self, images: Tensor) -> Tensor:
        """Images (N, C, H, W) in [0, 1] → the model's input: (x - mean) / std per channel."""
        mean = torch.tensor(self.mean, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype).view(1, -1, 1, 1)
        return (images - mean) / std

    def source(
        self,
        frame: pd.DataFrame,
        base: str | Path | None,
        tasks: Sequence[Task] = (),
        augment: Augment | None = None,
        seed: int = 0,
        where: str | None = None,
        verify: bool = True,
    ) -> ImageSource:
        """The rows of manifest `frame` (image paths relative to `base`) with `tasks`' targets
        (none: inputs only, e.g. to predict), augmented by `augment` (training only) with
        draws seeded by `seed`; `where` names the manifest in error messages. `verify`: check
        each file is a whole image (False: `check_images` did, for the whole manifest)."""
        return ImageSource(self, frame, base, tasks, augment, seed, where, verify)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: saved in a model's checkpoint (`kind: images` tells it from a tabular
        encoding)."""
        fits = {}
        for name, fit in self.fits.items():
            values = {f.name: getattr(fit, f.name) for f in dataclasses.fields(fit)}
            kept = {k: v for k, v in values.items() if v is not None and k != "inputs"}
            fits[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in kept.items()}
        return {
            "kind": "images",
            "size": list(self.size),
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "image_column": self.image_column,
            "targets": fits,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageEncoding:
        fits = {}
        for name, values in d["targets"].items():
            values = dict(values)
            if values.get("scale") is not None:
                values["scale"] = (float(values["scale"][0]), float(values["scale"][1]))
            fits[name] = TargetFit(**values)
        return cls(
            size=(int(d["size"][0]), int(d["size"][1])),
            channels=int(d["channels"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            fits=fits,
            image_column=d.get("image_column", "image"),
        )


def _measure(
    paths: Sequence[str],
    names: Sequence[str],
    chosen: np.ndarray,
    labels: Sequence[Any],
    channels: int,
    size: tuple[int, int],
    where: str,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the pixels of the `chosen` images, decoded
    as the model sees them (resized, in [0, 1]); a constant channel gets std 1."""
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for i in chosen.tolist():
        image = _decode(paths[i], channels, size, where, labels[i], names[i])[0].double()
        total += image.mean(dim=(1, 2))
        squares += (image**2).mean(dim=(1, 2))
    mean = total / len(chosen)
    std = (squares / len(chosen) - mean**2).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


def _decode(
    path: str, channels: int, size: tuple[int, int], where: str, label: Any, name: str
) -> tuple[Tensor, tuple[int, int]]:
    try:
        return decode_image(path, channels, size)
    except DataError as err:
        raise DataError(f"{_where(where, label, name)}: {err}") from None


def _read_target(
    task: Task,
    cell: Any,
    base: Path,
    fit: TargetFit,
    size: tuple[int, int],
    image: str,
    where: str,
    label: Any,
    name: str,
    original: tuple[int, int] | None = None,
) -> Tensor:
    """One row's target read by its kind and rescaled from the image's original size to
    `size`; a bad cell is refused naming the manifest, row and task."""
    kind = task.kind_spec
    try:
        target = kind.read_target(task, cell, base, fit, size)
        if original is None:
            original = _image_size(image)
        return kind.rescale_target(task, target, original, size)
    except DataError as err:
        said = str(err).startswith(f"task {task.name!r}")  # the kind named the task already
        what = "" if said else f", task {task.name!r}"
        raise DataError(f"{_where(where, label, name)}{what}: {err}") from None


class ImageSource(DataSource):
    """Rows of a manifest: images decoded (Pillow), resized and normalised when `rows` reads
    them, with each task's targets (see the module docs for how each kind's are read).

    With `augment`, each row is augmented by draws from its own generator, seeded by
    (`seed`, row, the epoch's key): the same in every process, so data workers give the same
    batches as the main process. `order` draws each epoch's key from the sampler's generator
    with its order and adds key × len(source) to the row numbers, so the key reaches `rows`
    wherever it runs, and a resumed run (whose sampler redraws the order from the generator
    state saved before it) augments exactly as the uninterrupted one. Row numbers below
    len(source) (e.g. read by `chunks`) draw with key 0."""

    def __init__(
        self,
        encoding: ImageEncoding,
        frame: pd.DataFrame,
        base: str | Path | None,
        tasks: Sequence[Task] = (),
        augment: Augment | None = None,
        seed: int = 0,
        where: str | None = None,
        verify: bool = True,
    ) -> None:
        self.encoding = encoding
        self.where = where or "the manifest"
        self.base = Path(base) if base is not None else Path()
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.labels = [json_scalar(v) for v in frame.index]
        self.paths, self.names = _image_paths(
            frame, encoding.image_column, self.base, self.where, self.labels, verify
        )
        self.tasks: dict[str, Task] = {}
        self.held: dict[str, Tensor] = {}
        """Image-level targets, encoded for every row up front."""
        self.listed: dict[str, list[Tensor | None]] = {}
        """Variable-length targets, read for every row up front (None: not labelled)."""
        self.streamed: dict[str, list[Any]] = {}
        """The cells of targets read per row when a batch needs them (None: not labelled)."""
        self.like: dict[str, Tensor] = {}
        """One encoded row per file-read task: the shape of a missing row, and for
        variable-length targets the longest row (what every batch is padded to)."""
        for task in tasks:
            if not task.kind_spec.derives_targets:
                self._add_task(task, frame)
        self.target_scale = {
            name: scale
            for name, task in self.tasks.items()
            if (scale := encoding.target_fit(task).scale) is not None
        }

    def _add_task(self, task: Task, frame: pd.DataFrame) -> None:
        kind, fit = task.kind_spec, self.encoding.target_fit(task)
        check_columns(frame, task.target_columns, f"task {task.name!r}: target columns",
                       self.where)  # fmt: skip
        if not kind.reads_files:
            try:
                self.held[task.name] = task.encode_target(frame, fit)
            except DataError as err:
                raise DataError(f"{self.where}: {err}") from None
            self.tasks[task.name] = task
            return
        cells: list[Any] = [
            None if _missing(c) else c for c in frame[task.target_columns[0]].tolist()
        ]
        present = [i for i, c in enumerate(cells) if c is not None]
        if not present:
            return  # no row labels it: no row shape to give (see the module docs)
        if variable_length(kind):
            rows: list[Tensor | None] = [
                None if c is None else self._read(task, c, i, None) for i, c in enumerate(cells)
            ]
            self.listed[task.name] = rows
            self.like[task.name] = max(
                (r for r in rows if r is not None), key=lambda r: r.shape[0] if r.ndim else 0
            )
        else:
            for i in present:  # a missing file fails now, not at the step that reads it
                cell = cells[i]
                if _looks_like_path(cell) and not (self.base / str(cell).strip()).is_file():
                    raise DataError(
                        f"{_where(self.where, self.labels[i], self.names[i])}, task "
                        f"{task.name!r}: target file {cell} not found "
                        f"({self.base / str(cell).strip()})"
                    )
            self.streamed[task.name] = cells
            self.like[task.name] = self._read(task, cells[present[0]], present[0], None)
        self.tasks[task.name] = task

    def _read(self, task: Task, cell: Any, row: int, original: tuple[int, int] | None) -> Tensor:
        """Row `row`'s target for `task` from its manifest `cell`, at the input size."""
        return _read_target(
            task, cell, self.base, self.encoding.target_fit(task), self.encoding.size,
            self.paths[row], self.where, self.labels[row], self.names[row], original,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.encoding.input_shape

    @property
    def target_like(self) -> Mapping[str, Tensor]:
        like = {name: held[:0] for name, held in self.held.items()}
        for name, row in self.like.items():
            task = self.tasks[name]
            like[name] = task.kind_spec.pad_rows(task, [row])[:0]
        return {name: like[name] for name in self.tasks}

    def labelled_rows(self, task: str) -> int:
        """How many rows label `task` (0 for a task the source has no targets for)."""
        if task in self.held:
            return int(self.tasks[task].mask(self.held[task]).sum())
        cells = self.listed.get(task) or self.streamed.get(task) or []
        return sum(c is not None for c in cells)

    def known_targets(self) -> dict[str, Tensor]:
        """The targets held in memory (image-level and variable-length ones, padded), for
        checks over a whole split; targets read from files per row are not among them."""
        known = dict(self.held)
        for name, rows in self.listed.items():
            known[name] = self._batch(name, [self._or_missing(name, r) for r in rows])
        return known

    def _or_missing(self, name: str, target: Tensor | None) -> Tensor:
        if target is not None:
            return target
        task = self.tasks[name]
        return task.kind_spec.missing_target(task, self.like[name])

    def _batch(self, name: str, rows: list[Tensor]) -> Tensor:
        task = self.tasks[name]
        kind = task.kind_spec
        if name in self.held:
            return torch.stack(rows)
        if name in self.listed:  # padded to the source's longest row, then that row dropped
            return kind.pad_rows(task, [*rows, self.like[name]])[:-1]
        return kind.pad_rows(task, rows)

    def image(self, row: int) -> tuple[Tensor, tuple[int, int]]:
        """Row `row`'s image (C, H, W) in [0, 1] at the input size, and its original size."""
        return _decode(self.paths[row], self.encoding.channels, self.encoding.size, self.where,
                       self.labels[row], self.names[row])  # fmt: skip

    def rows(self, index: Tensor) -> Batch:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if len(index) == 0:
            shape = (0, *self.input_shape)
            return Batch(torch.zeros(shape), {t: v.clone() for t, v in self.target_like.items()})
        n = len(self)
        rows, keys = (index % n).tolist(), (index // n).tolist()
        images, drawn = [], []
        for row, key in zip(rows, keys, strict=True):
            image, original = self.image(row)
            draw: Drawn | None = None
            if self.augment is not None:
                draw = self.augment.draw(row_generator(self.seed, row, key), self.encoding.size)
                image = draw.apply(image)
            images.append(image)
            drawn.append((draw, original))
        x = self.encoding.normalise(torch.stack(images))
        targets = {}
        for name, task in self.tasks.items():
            if name in self.held and self.augment is None:
                targets[name] = self.held[name][torch.tensor(rows)]
                continue
            kind, per_row = task.kind_spec, []
            for row, (draw, original) in zip(rows, drawn, strict=True):
                target = self._target(name, row, original)
                if target is None:
                    target = kind.missing_target(task, self.like[name])
                elif draw is not None:
                    target = kind.transform_target(task, target, draw.geometry)
                per_row.append(target)
            targets[name] = self._batch(name, per_row)
        return Batch(x, targets)

    def _target(self, name: str, row: int, original: tuple[int, int]) -> Tensor | None:
        """Row `row`'s target for task `name` as read (None: not labelled)."""
        if name in self.held:
            return self.held[name][row]
        if name in self.listed:
            return self.listed[name][row]
        cell = self.streamed[name][row]
        return None if cell is None else self._read(self.tasks[name], cell, row, original)

    def order(self, generator: torch.Generator) -> Tensor | None:
        """One epoch's shuffled rows; with augmentation, each offset by the epoch's key drawn
        from `generator` right after the order (see the class docs)."""
        order = torch.randperm(len(self), generator=generator)
        if self.augment is None:
            return order
        key = int(torch.randint(1, 2**31 - 1, (1,), generator=generator))
        return order + key * len(self)

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Mini-batches in order, or shuffled by `generator` (as `TaskData.batches`: the
        validation stream of balancers that learn on validation data)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.rows(order[start : start + batch_size])

    def select(self, tasks: Sequence[str], every_row: Sequence[str] = ()) -> DataSource:
        """The same rows reading only `tasks`' targets (no file of another task is read)."""
        kept = copy.copy(self)
        kept.tasks = {n: t for n, t in self.tasks.items() if n in tasks}
        for attribute in ("held", "listed", "streamed", "like"):
            setattr(kept, attribute, {n: v for n, v in getattr(self, attribute).items()
                                      if n in kept.tasks})  # fmt: skip
        kept.target_scale = {n: s for n, s in self.target_scale.items() if n in kept.tasks}
        return Selected(kept, tasks, every_row)


def arrays_source(
    x: np.ndarray | Tensor,
    targets: Mapping[str, np.ndarray | Tensor],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    target_scale: Mapping[str, tuple[float, float]] | None = None,
) -> TaskData:
    """In-memory images as a `TaskData`: `x` of shape (N, C, H, W), or (N, H, W) for grey
    images (a channel axis is added); uint8 and uint16 values are scaled to [0, 1] as an image
    file's pixels are, floats kept as they are, other types refused; with `mean` and `std` (one
    per channel) the images are normalised as an `ImageEncoding` does. `targets` are taken as
    encoded (class indices, -100 missing; floats, NaN missing), as for `TaskData`.
    `target_scale` {task: (mean, std)} says that those regression targets are already
    standardised, (y - mean) / std, so that metrics come back in the original units: it scales
    nothing itself. Standardise raw regression targets of a large range (their loss would
    outweigh the other tasks') and give their mean and std here."""
    array = np.asarray(x) if isinstance(x, np.ndarray) else None
    dtype = str(array.dtype if array is not None else x.dtype).removeprefix("torch.")
    full = {"uint8": 255.0, "uint16": 65535.0}.get(dtype)  # as an image file's pixels
    if full is None and not (dtype.startswith("float") or dtype.startswith("bfloat")):
        raise ValueError(
            f"images of type {dtype}: give uint8 (0–255) or uint16 (0–65535) pixels, scaled to "
            "[0, 1] as an image file's are, or floats, kept as they are (e.g. "
            "x.astype(np.uint8) for integers 0–255)"
        )
    if array is not None and dtype == "uint16":  # torch's uint16 does little arithmetic
        array = array.astype(np.int32)
    images = torch.as_tensor(array) if array is not None else torch.as_tensor(x)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(
            f"images must be (N, C, H, W) or (N, H, W), got shape {tuple(images.shape)}"
        )
    images = images.float() / full if full is not None else images.float()
    finite = torch.isfinite(images).flatten(1).all(1)
    if not bool(finite.all()):  # training would diverge, its message pointing elsewhere
        rows = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(
            f"images hold NaN or infinite values in {len(rows)} rows (first {rows[:5]}): "
            "fill or drop them before training"
        )
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (one per channel), or neither")
    if mean is not None and std is not None:
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(
                f"mean and std must give one value per channel ({channels}), std positive; "
                f"got {list(mean)} and {list(std)}"
            )
        m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        images = (images - m) / s
    encoded = {name: torch.as_tensor(np.asarray(v) if isinstance(v, np.ndarray) else v)
               for name, v in targets.items()}  # fmt: skip
    return TaskData(images, encoded, dict(target_scale or {}))
