"""The served computation as one module: raw feature columns in, every task's prediction out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from polytask.data._tabular import TabularPreprocessor
from polytask.models._base import MultiTaskNet
from polytask.tasks._task import Task


class ServingGraph(nn.Module):
    """`forward(features)` → one tensor per task, in `tasks` order: the encoding of the raw
    feature columns (`TabularPreprocessor.raw_features`: numbers with NaN for missing, category
    indices with -1), the model, and each kind's `served` output (probabilities, values in
    original units). Plain tensor ops, so that tracing and export keep the preprocessing inside
    the graph; only the category names → indices lookup stays outside it."""

    def __init__(
        self, model: MultiTaskNet, preprocessor: TabularPreprocessor, tasks: Sequence[Task]
    ) -> None:
        super().__init__()
        self.model = model
        self.preprocessor = preprocessor
        self.tasks = tuple(tasks)
        self.scales = [preprocessor.target_fit(t).scale for t in self.tasks]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def forward(self, features: Tensor) -> tuple[Tensor, ...]:
        return self.outputs(self.preprocessor.encode_raw(features))

    def outputs(self, encoded: Tensor) -> tuple[Tensor, ...]:
        """Every task's served output from the model's encoded inputs."""
        raw = self.model(encoded)
        return tuple(
            t.kind_spec.served(raw[t.name], scale)
            for t, scale in zip(self.tasks, self.scales, strict=True)
        )

    def example_input(self, rows: int = 2) -> Tensor:
        """Features of `rows` rows at the training means and first categories (for tracing)."""
        typical = self.preprocessor.typical_numeric()
        numeric = torch.tensor(typical, dtype=torch.float32).expand(rows, -1)
        categorical = torch.zeros(rows, len(self.preprocessor.categorical))
        return torch.cat([numeric, categorical], dim=1).contiguous()
