"""Argument checking for the public Python API: a wrong type gets pydantic's message naming the
argument, instead of an AttributeError deep inside torch."""

from __future__ import annotations

from pydantic import ConfigDict, validate_call

API_CONFIG = ConfigDict(arbitrary_types_allowed=True)

checked = validate_call(config=API_CONFIG)
"""Decorator: validate a public function's (or `__init__`'s) arguments against its hints."""
