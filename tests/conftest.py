"""Hypothesis profiles: `ci` (the default) draws the same examples on every run, so a test run
fails only where the code changed; `fuzz` (`make fuzz`) draws fresh random ones."""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("fuzz", derandomize=False, database=None, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("POLYTASK_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _automatic_report_where_tested(request, monkeypatch):
    """`train` and `compare` write report.html when they finish (about a second of matplotlib
    each): kept in tests/report and in tests marked `report`, skipped in the other tests, which
    check other behaviour (so the suites stay within their time)."""
    if "report" in request.path.parts or request.node.get_closest_marker("report"):
        return
    import polytask.cli._report

    monkeypatch.setattr(polytask.cli._report, "automatic_report", lambda folder: None)
