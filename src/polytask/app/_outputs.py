"""Writing a predictions table whose cells may hold a whole prediction per image (a mask, a
list of boxes): those go to files beside the CSV, and the CSV cell names the file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polytask._files import write_bytes_atomic


def file_columns(frame: pd.DataFrame) -> list[str]:
    """The columns whose cells hold an array, a list or a mapping per row (what a CSV cell
    cannot hold): masks and maps, boxes, keypoints."""
    return [
        str(c)
        for c in frame.columns
        if frame[c].dtype == object
        and any(isinstance(v, np.ndarray | list | tuple | dict) for v in frame[c])
    ]


def json_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame` with the lists and mappings in `columns` written as JSON text (a CSV cell per
    row: the tags of a sentence, a list of predictions), other cells as they are."""
    if not columns:
        return frame
    out = frame.copy()
    for column in columns:
        out[column] = [
            json.dumps(_jsonable(v)) if isinstance(v, np.ndarray | list | tuple | dict) else v
            for v in frame[column]
        ]
    return out


def files_folder(path: str | Path) -> Path:
    """Where the files of the predictions CSV `path` go: `<path without suffix>_files`."""
    path = Path(path)
    return path.with_name(path.stem + "_files")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _write_array(folder: Path, row: int, value: np.ndarray) -> str:
    """One row's array: a PNG for a map of small whole numbers (8 bits up to 255, 16 bits up
    to 65535), else .npy; the file's name."""
    from PIL import Image

    whole = value.dtype.kind in "iub" or (
        value.dtype.kind == "f" and bool(np.isfinite(value).all()) and bool((value % 1 == 0).all())
    )
    if value.ndim == 2 and whole and value.size and value.min() >= 0 and value.max() <= 65535:
        name = f"{row}.png"
        if value.max() <= 255:
            Image.fromarray(value.astype(np.uint8), "L").save(folder / name)
        else:
            Image.fromarray(value.astype(np.uint16)).save(folder / name)
        return name
    name = f"{row}.npy"
    np.save(folder / name, value, allow_pickle=False)
    return name


def write_predictions(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` as CSV at `path`. A column of per-image arrays (masks, maps) becomes
    one file per row, `<path>_files/<column>/<row>.png` (or .npy for other than small whole
    numbers); a column of lists or mappings (boxes, keypoints) becomes one JSON file,
    `<path>_files/<column>.json`, holding {row: value}; the CSV cell gives the file's path
    relative to the CSV's folder (`...json#/<row>` for the row's entry). Rows are numbered from
    0 in the table's order. All or nothing: the files are written in a staging folder, and the
    CSV is replaced last, so a failure leaves the earlier output as it was."""
    path = Path(path)
    columns = file_columns(frame)
    if not columns:
        return write_bytes_atomic(path, frame.to_csv(index=False).encode())
    folder = files_folder(path)
    if folder.exists() and not folder.is_dir():
        raise OSError(f"{folder} is a file: the predictions' files go in a folder of that name")
    path.parent.mkdir(parents=True, exist_ok=True)  # as for a table's CSV alone
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=path.parent))
    moved = False
    try:
        files, out = staging / "files", frame.copy()
        for column in columns:
            cells = []
            values = list(frame[column])
            arrays = all(isinstance(v, np.ndarray) for v in values)
            if arrays:
                (files / column).mkdir(parents=True)
                for row, value in enumerate(values):
                    name = _write_array(files / column, row, value)
                    cells.append(f"{folder.name}/{column}/{name}")
            else:
                files.mkdir(exist_ok=True)
                entries = {str(row): _jsonable(v) for row, v in enumerate(values)}
                (files / f"{column}.json").write_text(json.dumps(entries))
                cells = [f"{folder.name}/{column}.json#/{row}" for row in range(len(values))]
            out[column] = cells
        table = staging / "predictions.csv"
        table.write_bytes(out.to_csv(index=False).encode())
        if folder.exists():
            folder.rename(staging / "earlier")
        files.rename(folder)
        moved = True
        os.replace(table, path)
    except BaseException:
        if moved:
            shutil.rmtree(folder, ignore_errors=True)
        if (staging / "earlier").exists() and not folder.exists():
            (staging / "earlier").rename(folder)  # the earlier output stays as it was
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
