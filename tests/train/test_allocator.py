"""Retained freed memory: Jacobian steps stop faulting in fresh pages (glibc only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from polytask.train import allocator

# One process per setting, since malloc's settings are process-wide: a K = 8 Jacobian step on
# an MLP whose per-task gradient blocks (8 × 512 × 512 floats) are above glibc's default
# threshold for handing memory back; page faults per step are counted once the heap has settled.
_WORKLOAD = """
import json, resource, sys, torch
from polytask.train.allocator import retain_freed_memory
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
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _faults(setting: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _WORKLOAD, setting], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
@pytest.mark.skipif(not allocator.has_glibc(), reason="the settings are glibc malloc's")
def test_retained_memory_removes_the_page_faults_of_each_step() -> None:
    default, retained = _faults("default"), _faults("retain")
    assert retained["applied"] is True
    assert retained["faults"] <= 50, retained
    assert retained["faults"] < 0.2 * default["faults"], (default, retained)


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
