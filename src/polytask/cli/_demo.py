"""The demo: built-in customer data, one multi-task model against single-task baselines."""

from __future__ import annotations

from polytask.app import DataConfig, ModelConfig, RunConfig
from polytask.data._synthetic import customer_tasks
from polytask.train._config import TrainConfig


def demo_config(n: int = 4000, epochs: int = 20, output_dir: str = "runs/demo") -> RunConfig:
    """Churn is fully labelled, lifetime value half, plan choice only for 1 in 12 customers:
    the scarce tasks can borrow what the shared trunk learns from the others."""
    return RunConfig(
        data=DataConfig(
            builtin="customers",
            options={"n": n, "relatedness": 0.8, "missing": {"ltv": 0.5, "plan": 0.92}, "seed": 0},
        ),
        tasks=tuple(customer_tasks()),
        model=ModelConfig(params={"hidden": (64, 64), "dropout": 0.1}),
        training=TrainConfig(epochs=epochs, batch_size=128, lr=2e-3, weight_decay=1e-4),
        output_dir=output_dir,
    )
