"""What a launcher (torchrun) set in the environment: read without loading torch, so that the
command line can say its first line before torch loads."""

from __future__ import annotations

import os


def launched_world_size() -> int:
    """How many processes `torchrun` (or another launcher setting WORLD_SIZE) started."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launched_rank() -> int:
    """This process's rank as the launcher set it (0 outside a distributed launch)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
