"""`torch.export` ExportedProgram: a `.pt2` file for torch's runtimes (AOTInductor, ExecuTorch)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from polytask.serve._graph import ServingGraph
from polytask.serve.formats._base import ExportFormat, Runner


class ExportedProgramFormat(ExportFormat):
    """`torch.export.export` of the serving graph with a dynamic batch dimension, saved with
    `torch.export.save`; loading it runs no Python code from the file."""

    name = "exported-program"
    suffix = "model.pt2"

    def write(self, graph: ServingGraph, path: Path) -> None:
        batch = torch.export.Dim("batch", min=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                graph.eval(), (graph.example_input(),), dynamic_shapes=({0: batch},)
            )
        torch.export.save(program, str(path))

    def load(self, path: Path) -> Runner:
        module = torch.export.load(str(path)).module()

        def run(features: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                outputs = module(torch.from_numpy(np.ascontiguousarray(features, np.float32)))
            return [o.numpy() for o in outputs]

        return run
