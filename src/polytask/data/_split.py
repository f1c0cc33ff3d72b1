"""Train / validation / test splits of row positions, reproducible by seed or read from a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Split:
    """Row positions of each part; the three parts are disjoint."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def random_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Shuffle rows with `seed`, then cut off test and validation fractions."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
            "and sum to less than 1"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    return Split(
        train=np.sort(order[n_test + n_val :]),
        val=np.sort(order[n_test : n_test + n_val]),
        test=np.sort(order[:n_test]),
    )


def split_from_file(path: str | Path, n: int, val_fraction: float, seed: int) -> Split:
    """Read `train_idx` / `test_idx` from an .npz file; carve validation rows out of train."""
    with np.load(path) as f:
        missing = {"train_idx", "test_idx"} - set(f.files)
        if missing:
            raise ValueError(f"split file {path} lacks {sorted(missing)} (it has {f.files})")
        train, test = np.asarray(f["train_idx"]), np.asarray(f["test_idx"])
    for name, idx in (("train_idx", train), ("test_idx", test)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"split file {path}: {name} has rows outside 0..{n - 1}")
    if np.intersect1d(train, test).size:
        raise ValueError(f"split file {path}: train_idx and test_idx overlap")
    order = np.random.default_rng(seed).permutation(train)
    n_val = round(len(train) * val_fraction)
    return Split(train=np.sort(order[n_val:]), val=np.sort(order[:n_val]), test=np.sort(test))
