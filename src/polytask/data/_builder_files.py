"""Writing the files of an image data folder (PNG images, the manifest CSV) for the example
builders; Pillow is imported on first use so that `polytask.data` does not need it."""

from __future__ import annotations

import csv
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Cell = str | int | float | None


def _pil_image() -> Any:
    """Pillow's Image module, or an ImportError that says how to get it."""
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as e:  # pragma: no cover - Pillow is installed wherever images are used
        raise ImportError("writing images needs Pillow: pip install pillow") from e


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a uint8 array as a PNG: (H, W) grayscale ("L") or (H, W, 3) RGB."""
    if array.dtype != np.uint8:
        raise TypeError(f"save_png takes uint8 arrays, got {array.dtype}")
    mode = "L" if array.ndim == 2 else "RGB"
    _pil_image().fromarray(array, mode=mode).save(path, format="PNG")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image of floats in [0, 1] as uint8 (clipped, rounded)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def resize_gray(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 grayscale image resized to size × size (bilinear)."""
    pil = _pil_image()
    return np.asarray(pil.fromarray(image, mode="L").resize((size, size), pil.BILINEAR))


def prepare_folder(root: str | Path, subfolders: Sequence[str]) -> Path:
    """Create `root` and its subfolders (kept if they exist; files in them are overwritten)."""
    out = Path(root)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    for name in subfolders:
        (out / name).mkdir(parents=True, exist_ok=True)
    return out


def stem_width(n: int) -> int:
    """Digits in the zero-padded file names of n rows (at least 5)."""
    return max(5, len(str(max(n - 1, 0))))


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
    """A CSV with `header`; None is written as an empty cell (a missing label)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])


def check_count(name: str, value: int, least: int) -> None:
    """Refuse a count argument below `least`."""
    if value < least:
        raise ValueError(f"{name} must be at least {least}, got {value}")
