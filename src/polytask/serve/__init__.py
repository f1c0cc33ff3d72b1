"""Serving one model for every task: export to ONNX / TorchScript / torch.export with a
manifest, run an export from Python, and an HTTP server (`create_app`, needs the `serve` extra)."""

from polytask.serve._export import (
    ExportedModel,
    ExportError,
    ExportResult,
    export_model,
    load_exported,
)
from polytask.serve._graph import ServingGraph
from polytask.serve.formats import FORMATS, ExportFormat, FormatUnavailable

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportFormat",
    "ExportResult",
    "ExportedModel",
    "FormatUnavailable",
    "ServingGraph",
    "export_model",
    "load_exported",
]
