"""Retained freed memory: Jacobian steps stop faulting in fresh pages (glibc only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from polytask.train import _allocator as allocator

# One process per setting, since malloc's settings are process-wide: a K = 8 Jacobian step on
# an MLP whose per-task gradient blocks (8 × 512 × 512 floats) are above glibc's default
# threshold for handing memory back; the median step's page faults are counted once the heap
# has settled (a step now and then faults in pages for reasons of its own).
_WORKLOAD = """
import json, resource, sys, torch
from polytask.train._allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
torch.manual_seed(0)
torch.set_num_threads(1)
trunk = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512))
heads = torch.nn.ModuleList(torch.nn.Linear(512, 1) for _ in range(8))
x, y = torch.randn(128, 64), torch.randn(128, 8)
from polytask import backward, make_balancer
balancer = make_balancer("upgrad")
balancer.setup([f"t{i}" for i in range(8)])
def step():
    trunk.zero_grad(set_to_none=True)
    z = trunk(x)
    losses = torch.stack([((h(z).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])
    backward(losses, list(trunk.parameters()), balancer)
for _ in range(20):  # the heap settles into its largest layout
    step()
per_step = []
for _ in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    per_step.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": sorted(per_step)[len(per_step) // 2]}))
"""


def _faults(setting: str, env: dict[str, str] | None = None) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _WORKLOAD, setting],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
@pytest.mark.skipif(not allocator.has_glibc(), reason="the settings are glibc malloc's")
def test_retained_memory_removes_the_page_faults_of_each_step() -> None:
    # glibc's own threshold moves with what was freed, so its default run faults on some runs
    # and not on others; the control holds its starting threshold (128 KiB) fixed, which shows
    # the workload does reach for fresh pages each step unless freed memory is kept.
    control = _faults("default", {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)})
    assert control["faults"] > 1000, control
    for _ in range(2):
        retained = _faults("retain")
        assert retained["applied"] is True
        assert retained["faults"] <= 16, (control, retained)


def test_other_mallocs_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "has_glibc", lambda: False)
    assert allocator.retain_freed_memory() is False
    assert allocator.retained_memory_env() == {}


@pytest.mark.skipif(not allocator.has_glibc(), reason="the settings are glibc malloc's")
def test_environment_names_the_same_settings() -> None:
    env = allocator.retained_memory_env()
    assert env == {
        "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
        "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
        "MALLOC_TOP_PAD_": str(64 << 20),
    }
