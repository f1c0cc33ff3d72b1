"""A small trained model (three task kinds) shared by the serving tests."""

from pathlib import Path

import pytest

from polytask.app import FittedModel, fit, load_prepared
from polytask.cli._config_io import parse_config
from polytask.data import make_customers

FEATURES = {"numeric": ["usage_0", "usage_1", "usage_2", "age"], "categorical": ["region"]}
TASKS = [
    {"name": "churn", "kind": "binary"},
    {"name": "ltv", "kind": "regression"},
    {"name": "plan", "kind": "multiclass"},
]


def train(
    folder: Path,
    architecture: str = "hard_sharing",
    tasks: list[dict] | None = None,
    training: dict | None = None,
    features: dict | None = None,
    **model: object,
) -> FittedModel:
    """A model trained for two epochs on generated customers (data.csv in `folder`)."""
    data = folder / "data.csv"
    if not data.exists():
        make_customers(300, missing={"plan": 0.3}, seed=0).to_csv(data, index=False)
    config = parse_config(
        {
            "data": {"path": str(data), "features": features or FEATURES, "split": {"seed": 0}},
            "tasks": tasks or TASKS,
            "model": {"architecture": architecture, **model},
            "training": {"epochs": 2, "batch_size": 64, "progress": False, **(training or {})},
            "output_dir": str(folder / "run"),
        }
    )
    return fit(config, load_prepared(config), run_dir=folder / "run")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[FittedModel, Path]:
    """(the fitted model, its model.pt)."""
    folder = tmp_path_factory.mktemp("served")
    fitted = train(folder, hidden=[16])
    path = fitted.save(folder / "run" / "model.pt")
    return fitted, path


@pytest.fixture(scope="session")
def rows():
    """New rows (with labels) the model has not seen, some values missing."""
    df = make_customers(40, seed=7)
    df.loc[3, "usage_1"] = float("nan")
    df.loc[5, "region"] = None
    return df
