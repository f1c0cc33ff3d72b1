"""One tiny real run shared by the report tests: `polytask train` on 400 synthetic customers,
with conflict and affinity measured (a few seconds)."""

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from polytask.cli._main import main
from polytask.data import make_customers

CONFIG = {
    "data": {
        "path": "data.csv",
        "features": {"numeric": ["usage_0", "usage_1", "age"], "categorical": ["region"]},
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
    },
    "tasks": [
        {"name": "churn", "kind": "binary"},
        {"name": "ltv", "kind": "regression"},
        {"name": "plan", "kind": "multiclass"},
    ],
    "model": {"hidden": [16]},
    "balancer": {"name": "dwa"},
    "training": {"epochs": 3, "batch_size": 64, "progress": False, "affinity_every": 2},
    "output_dir": "run",
}


def write_project(folder: Path) -> Path:
    """data.csv and config.yaml in `folder`; returns the config's path."""
    make_customers(400, missing={"plan": 0.3}, seed=0).to_csv(folder / "data.csv", index=False)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The run folder of one `polytask train` (which wrote its report), and what it printed."""
    folder = tmp_path_factory.mktemp("report_project")
    config = write_project(folder)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["-q", "train", str(config)]) == 0
    return folder / "run", out.getvalue()
