"""Small untrained and trained models for the adaptation tests, on data with known structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from polytask.app import FittedModel, ModelConfig
from polytask.data._tabular import TabularPreprocessor
from polytask.tasks import Task

FEATURES = [f"x{i}" for i in range(6)]


def latent_frame(n: int, tasks: int, seed: int = 0, new: int = 0) -> pd.DataFrame:
    """Rows whose targets are linear in a 3-dim latent z = tanh(x W): tasks t0.. (and new
    tasks n0..) read the same z with their own coefficients; one categorical column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    w = np.random.default_rng(100).normal(size=(len(FEATURES), 3))
    z = np.tanh(x @ w)
    coef = np.concatenate(  # old and new tasks' coefficients drawn apart: the same old tasks
        [
            np.random.default_rng(200).normal(size=(3, tasks)),
            np.random.default_rng(300).normal(size=(3, new)),
        ],
        axis=1,
    )
    y = z @ coef + 0.1 * rng.normal(size=(n, tasks + new))
    df = pd.DataFrame(x, columns=FEATURES)
    df["region"] = rng.choice(["north", "south"], size=n)
    for t in range(tasks):
        df[f"t{t}"] = y[:, t]
    for t in range(new):
        df[f"n{t}"] = y[:, tasks + t]
    df["label"] = np.where(y[:, 0] > 0, "yes", "no")
    return df


def untrained(architecture: str, tasks: list[Task], df: pd.DataFrame, **params) -> FittedModel:
    """A FittedModel with random weights (edits must keep whatever weights there are)."""
    pre = TabularPreprocessor.fit(df, FEATURES, ["region"], tasks)
    resolved = pre.resolve_tasks(tasks)
    spec = ModelConfig(architecture=architecture, params=params)
    return FittedModel(spec.build(pre.feature_names, resolved, seed=0), pre, spec)


@pytest.fixture
def frame() -> pd.DataFrame:
    return latent_frame(200, 3, seed=0, new=1)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[FittedModel, pd.DataFrame]:
    """A hard-sharing model trained on tasks t0..t2 of `latent_frame`, and held-out rows that
    also label the new tasks n0 (regression) and label (binary)."""
    from polytask.app import RunConfig, fit, load_prepared
    from polytask.app._config import DataConfig, FeaturesConfig, SplitConfig
    from polytask.train import TrainConfig

    folder = tmp_path_factory.mktemp("adapt")
    latent_frame(800, 3, seed=0).to_csv(folder / "train.csv", index=False)
    config = RunConfig(
        data=DataConfig(
            path=str(folder / "train.csv"),
            features=FeaturesConfig(numeric=tuple(FEATURES), categorical=("region",)),
            split=SplitConfig(val_fraction=0.1, test_fraction=0.1),
        ),
        tasks=tuple(Task(name=f"t{i}", kind="regression") for i in range(3)),
        model=ModelConfig(hidden=(32, 16)),
        training=TrainConfig(epochs=25, lr=3e-3, batch_size=64, progress=False, patience=None),
    )
    fitted = fit(config, load_prepared(config))
    return fitted, latent_frame(600, 3, seed=1, new=1)
