"""Train / validation / test splits of row positions, reproducible by seed or read from a file."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from polytask.tasks._columns import DataError, DataWarning


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
    n_test, n_val = _sizes(n, val_fraction, test_fraction)
    split = Split(
        train=np.sort(order[n_test + n_val :]),
        val=np.sort(order[n_test : n_test + n_val]),
        test=np.sort(order[:n_test]),
    )
    empty = _empty_parts(split, val_fraction, test_fraction)
    if empty:
        raise DataError(
            f"{n} rows with val_fraction {val_fraction} and test_fraction {test_fraction} leave "
            f"the {' and '.join(empty)} split{'s' * (len(empty) > 1)} without rows: give "
            f"{_rows_needed(n, val_fraction, test_fraction)}, or change the split fractions"
        )
    return split


def split_within(
    groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
    train: np.ndarray | None = None,
) -> Split:  # fmt: skip
    """A random split drawn within each group (each value of `groups`, one per row): every
    group's rows are shuffled and cut by the fractions, so each group with enough rows has
    some in every part (at least one training row each). With `train` (the rows a split file
    trains on) only validation is carved, within each group, from those rows."""
    rng = np.random.default_rng(seed)
    codes = pd.factorize(pd.Series(groups), use_na_sentinel=False)[0]
    if train is None and (test_fraction or val_fraction):
        sizes = np.bincount(codes)
        small = int((sizes < 3).sum())
        if small > len(sizes) / 2:  # e.g. within a column with one row per value
            warnings.warn(
                f"split.within: {small} of its {len(sizes)} groups hold fewer than 3 rows, too "
                "few to have rows in training, validation and test: is it the column whose "
                "values are the tasks (school, patient, store)?",
                DataWarning,
                stacklevel=3,
            )
    rows = np.arange(len(codes)) if train is None else np.asarray(train)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    order = np.argsort(codes[rows], kind="stable")
    bounds = np.flatnonzero(np.diff(codes[rows][order])) + 1
    for members in np.split(rows[order], bounds):
        if not len(members):
            continue
        drawn = rng.permutation(members)
        n = len(drawn)
        n_test = round(n * test_fraction) if train is None else 0
        n_val = round(n * val_fraction)
        while n_test + n_val >= n and (n_test or n_val):  # keep a training row
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        parts["test"].append(drawn[:n_test])
        parts["val"].append(drawn[n_test : n_test + n_val])
        parts["train"].append(drawn[n_test + n_val :])
    joined = {
        k: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64) for k, v in parts.items()
    }
    split = Split(joined["train"], joined["val"], joined["test"])
    empty = _empty_parts(split, val_fraction, test_fraction if train is None else 0.0)
    if empty:  # every group too small for the fraction (rounded to 0 rows in each)
        largest = int(np.bincount(codes[rows]).max()) if len(rows) else 0
        raise DataError(
            f"split.within: groups of at most {largest} rows with val_fraction {val_fraction} "
            f"and test_fraction {test_fraction} leave the {' and '.join(empty)} split"
            f"{'s' * (len(empty) > 1)} without rows (each group's share rounds to 0): give "
            "larger fractions, split by another column, or drop split.within"
        )
    return split


def split_by_group(
    groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> Split:
    """Whole groups to each part (every row of a patient in one part: the question "how well
    for a new patient"): the groups are shuffled and cut by the fractions of their number."""
    values = pd.unique(pd.Series(groups).astype(str))
    order = np.random.default_rng(seed).permutation(len(values))
    n_test, n_val = _sizes(len(values), val_fraction, test_fraction)
    if (
        len(values) - n_test - n_val < 1
        or (test_fraction and not n_test)
        or (val_fraction and not n_val)
    ):
        raise DataError(
            f"{len(values)} groups cannot be split into whole groups with val_fraction "
            f"{val_fraction} and test_fraction {test_fraction}: give more groups or other "
            "fractions"
        )
    part = np.empty(len(values), dtype=object)
    part[order[:n_test]], part[order[n_test : n_test + n_val]] = "test", "val"
    part[order[n_test + n_val :]] = "train"
    of = dict(zip(values, part, strict=True))
    labels = np.array([of[str(g)] for g in groups])
    return Split(*(np.flatnonzero(labels == p) for p in ("train", "val", "test")))


def _sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Rows in the test and validation parts of a random split of `n` rows."""
    return round(n * test_fraction), round(n * val_fraction)


def _rows_needed(n: int, val_fraction: float, test_fraction: float) -> str:
    """ "at least M rows": the fewest rows that leave every requested part some."""
    fractions = [f for f in (val_fraction, test_fraction) if f > 0]
    lower = max([n + 1, *(math.floor(0.5 / f) + 1 for f in fractions)])
    for m in range(lower, lower + 1000):
        n_test, n_val = _sizes(m, val_fraction, test_fraction)
        if m > n_test + n_val and (n_val or not val_fraction) and (n_test or not test_fraction):
            return f"at least {m} rows"
    return "more rows"


def _empty_parts(split: Split, val_fraction: float, test_fraction: float) -> list[str]:
    """The parts that should hold rows but hold none (validation only when asked for)."""
    wanted = {"train": True, "validation": val_fraction > 0, "test": test_fraction > 0}
    sizes = {"train": len(split.train), "validation": len(split.val), "test": len(split.test)}
    return [p for p, want in wanted.items() if want and sizes[p] == 0]


def split_from_file(
    path: str | Path,
    n: int,
    val_fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
    whole: np.ndarray | None = None,
) -> Split:
    """Read `train_idx` / `test_idx` from an .npz file, and its `val_idx` when it has them (as
    `polytask train`'s split.npz); else carve validation rows out of train (within each group
    of `groups`, when given; or whole groups of `whole`, each row's group, so that validation
    asks about new groups as the file's test rows do)."""
    with np.load(path) as f:
        missing = {"train_idx", "test_idx"} - set(f.files)
        if missing:
            raise ValueError(f"split file {path} lacks {sorted(missing)} (it has {f.files})")
        train, test = np.asarray(f["train_idx"]), np.asarray(f["test_idx"])
        given = np.asarray(f["val_idx"]) if "val_idx" in f.files else None
    parts = [("train_idx", train), ("test_idx", test)]
    for name, idx in [*parts, *([("val_idx", given)] if given is not None else [])]:
        if idx.size and idx.dtype.kind not in "iu":
            raise ValueError(
                f"split file {path}: {name} holds {idx.dtype} values; it lists row positions "
                "(integers from 0)"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"split file {path}: {name} has rows outside 0..{n - 1}")
        twice = idx.size - np.unique(idx).size
        if twice:
            first = np.sort(idx)[np.flatnonzero(np.diff(np.sort(idx)) == 0)[0]]
            raise ValueError(
                f"split file {path}: {name} lists {twice} row(s) more than once (e.g. row "
                f"{first}): a row listed twice is trained or scored twice; list each row once"
            )
    if np.intersect1d(train, test).size:
        raise ValueError(f"split file {path}: train_idx and test_idx overlap")
    listed = train.size + test.size + (given.size if given is not None else 0)
    if listed < n:  # a file made for a subset or another order of these rows reads as one too
        warnings.warn(
            f"split file {path} lists {listed} of the data's {n} rows: the other {n - listed} "
            "are in no part (neither trained on nor scored); check the file was made for these "
            "rows in this order",
            DataWarning,
            stacklevel=2,
        )
    if given is not None:
        for name, idx in parts:
            if np.intersect1d(given, idx).size:
                raise ValueError(f"split file {path}: val_idx and {name} overlap")
    if whole is not None:  # split.by: the file's parts must hold whole groups
        named = [*parts, *([("val_idx", given)] if given is not None else [])]
        for i, (first, a) in enumerate(named):
            for second, b in named[i + 1 :]:
                shared = np.intersect1d(whole[a].astype(str), whole[b].astype(str))
                if shared.size:
                    raise DataError(
                        f"split file {path}: {shared.size} group(s) have rows in both {first} "
                        f"and {second} (e.g. {', '.join(map(str, shared[:3]))}), so its parts "
                        "are not whole groups as split.by asks: write a file that holds out "
                        "whole groups, or drop split.by"
                    )
    if given is not None:  # the file's own validation rows (polytask train's split.npz)
        split = Split(np.sort(train), np.sort(given), np.sort(test))
    elif groups is not None:
        carved = split_within(groups, val_fraction, 0.0, seed, train=train)
        split = Split(carved.train, carved.val, np.sort(test))
    elif whole is not None:
        carved = split_by_group(whole[train], val_fraction, 0.0, seed)
        split = Split(np.sort(train[carved.train]), np.sort(train[carved.val]), np.sort(test))
    else:
        order = np.random.default_rng(seed).permutation(train)
        n_val = round(len(train) * val_fraction)
        split = Split(train=np.sort(order[n_val:]), val=np.sort(order[:n_val]), test=np.sort(test))
    empty = _empty_parts(split, val_fraction if given is None else 0.0, 1.0)
    if empty:
        raise DataError(
            f"split file {path}: its {len(train)} train_idx rows and {len(test)} test_idx rows "
            f"with val_fraction {val_fraction} leave the {' and '.join(empty)} split"
            f"{'s' * (len(empty) > 1)} without rows: list more rows in the file, or change "
            "val_fraction"
        )
    return split
