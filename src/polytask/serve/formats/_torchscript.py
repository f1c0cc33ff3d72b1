"""TorchScript by tracing: one `.ts` file, loadable from C++ (libtorch) or `torch.jit.load`."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import cast

import numpy as np
import torch

from polytask.serve._graph import ServingGraph
from polytask.serve.formats._base import ExportFormat, Runner


class TorchScriptFormat(ExportFormat):
    """`torch.jit.trace` of the serving graph (scripting would need every architecture written
    in TorchScript's subset; the graph has no data-dependent control flow, so a trace is exact).
    Int8: `torch.ao` dynamic quantisation of the linear layers before tracing. PyTorch marks
    TorchScript deprecated (2.10+): prefer onnx or exported-program for new deployments."""

    name = "torchscript"
    suffix = "model.ts"
    quantizable = True

    def write(self, graph: ServingGraph, path: Path) -> None:
        traced = _trace(graph)
        traced.save(str(path))

    def load(self, path: Path) -> Runner:
        with warnings.catch_warnings():  # PyTorch deprecates TorchScript; said in the docs
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        module.eval()

        def run(features: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                outputs = module(torch.from_numpy(np.ascontiguousarray(features, np.float32)))
            return [o.numpy() for o in outputs]

        return run

    def quantize(self, graph: ServingGraph, source: Path, path: Path) -> None:
        with warnings.catch_warnings():  # torch.ao's eager quantisation warns of its move
            warnings.simplefilter("ignore")
            quantized = torch.ao.quantization.quantize_dynamic(
                graph, {torch.nn.Linear}, dtype=torch.qint8
            )
        _trace(cast(ServingGraph, quantized)).save(str(path))  # a quantised copy of `graph`


def _trace(graph: ServingGraph) -> torch.jit.ScriptModule:
    example = graph.example_input()
    graph = copy.deepcopy(graph)  # the caller's model keeps its trainable parameters
    for p in graph.parameters():  # outputs without autograd: `.numpy()` works on them as loaded
        p.requires_grad_(False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(graph.eval(), (example,), check_trace=False)
    return traced
