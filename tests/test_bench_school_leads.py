"""School's leads for gp (benchmarks/school_leads.py): the tanh warp's back-mapping inverts its
forward map, a school-year level with no variance is gp itself, and the script runs end to end
on a few schools (skipping, saying why, where the shared School data is absent)."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "school_leads.py"
SCHOOL = ROOT.parent / "shared" / "datasets" / "school" / "school.csv.gz"
sys.path.insert(0, str(SCRIPT.parent))

from school_leads import CellEffect, SchoolYear, TanhWarp  # noqa: E402

from polytask import Task  # noqa: E402
from polytask.models import _gp as gp  # noqa: E402

TASKS = [Task("a", "regression"), Task("b", "regression")]


def _rows(n: int = 120) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
    rng = np.random.default_rng(0)
    year = np.eye(3)[rng.integers(0, 3, n)]
    x = np.hstack([year, rng.normal(size=(n, 2))])
    owner = np.arange(n) % 2
    y = np.exp(0.5 * x[:, 3] + 0.3 * owner + 0.2 * rng.normal(size=n)) + 1.0
    masks = [torch.from_numpy(owner == k) for k in range(2)]
    targets = {
        t.name: torch.from_numpy(np.where(owner == k, y, np.nan)) for k, t in enumerate(TASKS)
    }
    return torch.from_numpy(x), targets, masks


def test_tanh_warp_maps_back_what_it_warped():
    model = TanhWarp(5, TASKS, steps=20)
    x, targets, masks = _rows()
    model.refit(x, targets, masks, torch.ones(2))
    h = model.hyper()
    h = {**h, "ta0": torch.tensor(math.log(0.5)), "tb1": torch.tensor(1.0)}  # bends it more
    y = torch.linspace(1.5, 8.0, 50, dtype=torch.float64)
    z, _, mean, spread = model._targets(h, y)
    model.target_mean, model.target_std = mean, spread
    back = model._mapped_back(h, z[:, None], torch.tensor(0.0, dtype=torch.float64))
    assert torch.allclose(back[:, 0], y, atol=1e-6)


@pytest.mark.parametrize(("kind", "extra"), [(SchoolYear, ("sy_const", "sy_lin")),
                                              (CellEffect, ("cell",))])  # fmt: skip
def test_a_level_without_variance_is_gp(kind, extra):
    x, targets, masks = _rows()
    plain = gp.MultiTaskGP(5, TASKS, steps=15)
    plain.refit(x, targets, masks, torch.ones(2))
    level = kind(5, TASKS, steps=15)
    level.refit(x, targets, masks, torch.ones(2))
    for name in gp.VECTORS + gp.SCALARS:  # gp's fit, and the level switched off
        getattr(level, name).copy_(getattr(plain, name))
    for name in extra:
        getattr(level, name).fill_(-60.0)
    level._solve(
        level.inputs,
        level.owner,
        torch.cat([targets[t.name][m] for t, m in zip(TASKS, masks, strict=True)]),
    )
    new = torch.from_numpy(np.hstack([np.eye(3)[[0, 1, 2, 1]], np.ones((4, 2))]))
    with torch.no_grad():
        a, b = plain(new), level(new)
    assert all(torch.allclose(a[t.name], b[t.name], atol=1e-8) for t in TASKS)


def test_cell_effect_joins_identical_rows_only():
    a = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.001], [1.0, 1.0, 2.0]])
    model = CellEffect(3, TASKS)
    h = {"cell": torch.tensor(math.log(3.0))}
    joined = model._level(h, a, a)
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]) * 3
    assert torch.allclose(joined, expected)


@pytest.mark.slow
@pytest.mark.skipif(not SCHOOL.is_file(), reason=f"the School data set is not at {SCHOOL}")
def test_leads_run_on_a_few_schools(tmp_path):
    out = tmp_path / "leads.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--schools", "6", "--variants", "gp", "tanh warp",
         "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| gp |")
            or line.startswith("| tanh warp |")]  # fmt: skip
    assert len(rows) == 2 and all(0 < float(r[2]) < 100 for r in rows)
    left = float(text.split("test pupils ")[1].split(" a pupil")[0])
    noise = float(text.split("predictive noise ")[1].split(" a pupil")[0])
    assert 0 < left < noise  # the function is known better than one pupil's score
