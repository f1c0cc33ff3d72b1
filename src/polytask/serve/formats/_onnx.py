"""ONNX through `torch.onnx.export` (the torch.export-based exporter); run with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from polytask.serve._graph import ServingGraph
from polytask.serve.formats._base import ExportFormat, Runner

INPUT = "features"
"""The graph input's name (the manifest's `graph_input.name`)."""


class OnnxFormat(ExportFormat):
    """One `.onnx` file with named inputs (`features`) and outputs (one per task), the batch
    dimension dynamic. Int8: onnxruntime's dynamic quantisation of the weights."""

    name = "onnx"
    suffix = "model.onnx"
    needs = ("onnx", "onnxruntime", "onnxscript")
    extra = "onnx"
    quantizable = True

    def write(self, graph: ServingGraph, path: Path) -> None:
        if INPUT in graph.output_names:
            raise ValueError(
                f"task {INPUT!r} has the name of the ONNX graph's input, and an ONNX graph's "
                "names must differ: rename the task (a config's tasks[].name) and retrain, "
                "leave it out (--tasks), or export to torchscript or exported-program"
            )
        batch = torch.export.Dim("batch", min=1)
        with _quiet_exporter():
            torch.onnx.export(
                graph.eval(),
                (graph.example_input(),),
                str(path),
                input_names=[INPUT],
                output_names=graph.output_names,
                dynamic_shapes=({0: batch},),
                dynamo=True,
                external_data=False,
                verbose=False,
            )

    def load(self, path: Path) -> Runner:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]

        def run(features: np.ndarray) -> list[np.ndarray]:
            x = np.ascontiguousarray(features, np.float32)
            return [np.asarray(o) for o in session.run(names, {INPUT: x})]

        return run

    def quantize(self, graph: ServingGraph, source: Path, path: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _quiet_exporter():
            quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8)


@contextlib.contextmanager
def _quiet_exporter():  # type: ignore[no-untyped-def]
    """The exporter prints its steps and warns about its internals: not the user's concern."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "root")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
