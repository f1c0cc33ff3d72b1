"""A run folder belongs to one run: an OS lock while a process trains into it, and a refusal to
start a fresh run over the checkpoints of another (whose higher step numbers would survive
pruning and be resumed later instead of the new run's)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from polytask._audience import for_user

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no fcntl
    fcntl = None  # type: ignore[assignment]  # no OS lock there; the stale-run check still holds

LOCK_NAME = ".polytask.lock"


class RunFolderError(RuntimeError):
    """The run folder is in use by another process, or holds another run's checkpoints."""


class RunLock:
    """Exclusive use of `run_dir` by this process while training (`with RunLock(path): ...`).

    Re-entrant within one process: the CLI holds it for a whole command and the Trainer's `fit`
    inside it takes it again without blocking. The lock is released when the process dies, so a
    killed run never leaves the folder locked. A run that wrote nothing (refused before its
    first file) leaves no lock file, nor the folder when the lock made it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self._nested = False
        self._made_folder = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        self._made_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _HELD_HERE:
            self._nested = True
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderError(
                f"{self.path.parent} is in use by another training process (pid {owner}): wait "
                "for it to finish, or train into another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        _HELD_HERE.add(key)

    def release(self) -> None:
        if self._nested:
            self._nested = False
            return
        if self._fd is not None:
            _HELD_HERE.discard(str(self.path.resolve()))
            folder = self.path.parent
            if [p.name for p in folder.iterdir()] == [LOCK_NAME]:  # nothing written: no trace
                self.path.unlink()  # still holding the lock, so no other run is inside
                if self._made_folder:
                    folder.rmdir()
            os.close(self._fd)  # closing the descriptor releases the OS lock
            self._fd = None


_HELD_HERE: set[str] = set()
"""Lock files this process holds (OS locks are per open file, so a second `flock` from the same
process on a new descriptor would refuse its own lock)."""


def check_fresh(checkpoints: Path) -> None:
    """Refuse to start a fresh run where another run left checkpoints."""
    earlier = sorted(checkpoints.glob("step-*.pt"))
    if earlier:
        how = for_user(
            "continue it (Trainer.resume(run_dir) before fit), delete its checkpoints, or train "
            "into another folder",
            "--resume continues it, --overwrite replaces it, or train into another folder (--out)",
        )
        raise RunFolderError(
            f"{checkpoints.parent} already holds checkpoints of an earlier run (newest: "
            f"{earlier[-1].name}): {how}"
        )
