"""Hypothesis profiles: `ci` (the default) draws the same examples on every run, so a test run
fails only where the code changed; `fuzz` (`make fuzz`) draws fresh random ones.

One torch thread for the whole session, and for the processes tests start (they inherit the
environment): the tests' tensors are small, and on a loaded machine a second OpenMP thread only
spins (measured on two loaded cores: models, balancers and gradients' fast tests 766 s with the
default two threads, 166 s with one). An OMP_NUM_THREADS already set is kept for subprocesses."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import random

import numpy as np
import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)

settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("fuzz", derandomize=False, database=None, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("POLYTASK_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _same_random_state_in_every_test():
    """Each test starts from the same global random state, so its outcome does not hang on which
    tests ran before it in its pytest-xdist worker (the order differs from run to run)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_busy_machine_advice(monkeypatch):
    """The CLI's line about a busy machine depends on the load of the machine the tests run on:
    off (in subprocesses too), but in the test that sets it."""
    monkeypatch.setenv("POLYTASK_BUSY_HINT", "0")


@pytest.fixture(autouse=True)
def _automatic_report_where_tested(request, monkeypatch):
    """`train` and `compare` write report.html when they finish (about a second of matplotlib
    each): kept in tests/report and in tests marked `report`, skipped in the other tests, which
    check other behaviour (so the suites stay within their time)."""
    if "report" in request.path.parts or request.node.get_closest_marker("report"):
        return
    import polytask.cli._report

    monkeypatch.setattr(polytask.cli._report, "automatic_report", lambda folder: None)
