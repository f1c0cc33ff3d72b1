"""Command line interface: `polytask demo | train | compare | analyze | predict`."""

from polytask.cli._main import main

__all__ = ["main"]
