"""Hypothesis profiles: `ci` (the default) draws the same examples on every run, so a test run
fails only where the code changed; `fuzz` (`make fuzz`) draws fresh random ones."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("fuzz", derandomize=False, database=None, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("POLYTASK_HYPOTHESIS_PROFILE", "ci"))
