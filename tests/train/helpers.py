"""Shared pieces for training tests: a run folder locked by another process."""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from polytask.train import RunLock


def _hold(run_dir: str, locked: Any, release: Any) -> None:
    with RunLock(run_dir):
        locked.set()
        release.wait(timeout=300)


@contextlib.contextmanager
def locked_by_another_process(run_dir: str | Path) -> Iterator[int]:
    """`RunLock(run_dir)` held by a second process until the block ends; yields its pid. The
    process is forked from this one (it only takes the lock), not started afresh: a fresh
    interpreter spends seconds importing polytask (torch, scikit-learn) on a loaded machine."""
    context = multiprocessing.get_context("fork")
    locked, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(str(run_dir), locked, release), daemon=True)
    holder.start()
    try:
        assert locked.wait(timeout=120), "the other process did not take the lock"
        assert holder.pid is not None
        yield holder.pid
    finally:
        release.set()
        holder.join(timeout=60)
    assert holder.exitcode == 0, holder.exitcode
