"""Files the package reads and writes: a clear message for a path that is not a readable file,
and atomic writes that leave no partial file behind and name the path when the disk is full."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
"""errno values of a full disk or an exhausted quota."""
TORCH_WRITE_FAILED = ("inline_container", "PytorchStreamWriter", "file write failed")
"""What torch.save's RuntimeError says when the file it writes cannot grow (e.g. a full disk)."""


class DiskFullError(OSError):
    """A file could not be written: its disk is full or over quota. The message names the
    file and, where known, the space it needs and the space left; `errno` is ENOSPC and
    `filename` the file."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.errno, self.filename = errno.ENOSPC, str(path)

    def __str__(self) -> str:
        return str(self.args[0])


def not_a_file(path: Path) -> str | None:
    """Why `path` cannot be read as a file ("does not exist", "is a directory", ...), or None."""
    if path.is_file():
        return None
    if path.is_dir():
        return "is a directory"
    if path.exists():
        return "is not a regular file (a device, pipe or socket)"
    if path.is_symlink():
        return "is a broken symbolic link"
    return "does not exist"


def require_file(
    path: str | Path, what: str, error: type[Exception] = ValueError, hint: str = ""
) -> Path:
    """`path` if it is a regular file; else `error("WHAT PATH does not exist" / "is a
    directory" / ...)`, with `hint` appended (e.g. which file in that directory to give)."""
    path = Path(path)
    problem = not_a_file(path)
    if problem is not None:
        raise error(f"{what} {path} {problem}{hint}")
    return path


def size_text(n: float) -> str:
    """Bytes for a reader: '812 B', '40.1 kB', '3.2 MB', '1.5 GB'."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def is_no_space(err: BaseException) -> bool:
    """Whether `err` is a write that failed for lack of space (OSError ENOSPC / EDQUOT, or
    torch.save's RuntimeError from its stream writer)."""
    if isinstance(err, OSError):
        return err.errno in NO_SPACE
    return isinstance(err, RuntimeError) and any(s in str(err) for s in TORCH_WRITE_FAILED)


def disk_full(path: Path, needed: int | None = None, atomic: bool = True) -> DiskFullError:
    """The error for `path` not fitting on its disk, with the space needed and left; `atomic`:
    it was written with `write_atomic`, so an earlier file of that name is intact."""
    try:
        free: int | None = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    space = [f"it needs about {size_text(needed)}"] if needed is not None else []
    space += [f"{size_text(free)} free there"] if free is not None else []
    where = f" ({'; '.join(space)})" if space else ""
    kept = "; nothing was written there (an earlier file of that name is kept)" if atomic else ""
    return DiskFullError(
        f"cannot write {path}: no space left on its disk or quota{where}{kept}. Free some space, "
        "or write elsewhere",
        path,
    )


def write_atomic(
    path: str | Path, write: Callable[[Path], object], needed: int | None = None
) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path`: `path` is
    either the old file or the whole new one, never a partial one (a device or pipe, e.g.
    /dev/stdout, is written in place). A full disk (see
    `is_no_space`) raises `DiskFullError` naming `path` (and `needed` bytes, if given)."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        return _write_in_place(path, write, needed)  # a device or pipe: never replace it
    if path.is_symlink():
        path = path.resolve()  # replace the file the link points to, not the link
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it (mkstemp: owner only)
        write(Path(tmp))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if is_no_space(err):
            raise disk_full(path, needed) from err
        if isinstance(err, OSError) and _is_temporary(err.filename, path):
            raise OSError(err.errno, err.strerror, str(path)) from err  # the file meant
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write_in_place(path: Path, write: Callable[[Path], object], needed: int | None) -> Path:
    """`write(path)` straight into a device or pipe (e.g. /dev/stdout), which a rename would
    replace by a regular file."""
    try:
        write(path)
    except (OSError, RuntimeError) as err:
        if is_no_space(err):
            raise disk_full(path, needed, atomic=False) from err
        raise
    return path


def _is_temporary(name: object, path: Path) -> bool:
    """Whether `name` is one of `write_atomic`'s temporary files for `path`."""
    if not isinstance(name, str):
        return False
    return Path(name).parent == path.parent and Path(name).name.startswith(f".{path.name}.")


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """`path` replaced by `data` atomically (see `write_atomic`)."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data), len(data))


def strict_json(value: Any) -> Any:
    """`value` with every NaN or infinite float as None, so that `json.dumps` writes strict
    JSON (null), which every JSON reader takes (a bare NaN is Python's extension)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """`value` as strict JSON (NaN and infinities as null, see `strict_json`)."""
    return json.dumps(strict_json(value), indent=indent, allow_nan=False)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`path` replaced by `text` (UTF-8) atomically (see `write_atomic`)."""
    return write_bytes_atomic(path, text.encode())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
