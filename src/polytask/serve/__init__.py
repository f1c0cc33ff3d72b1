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

_SERVER = ("ServeOptions", "app_from_environment", "create_app")


def __getattr__(name: str) -> object:
    """The server's names import FastAPI, so they load on first use (the `serve` extra)."""
    if name in _SERVER:
        from polytask.serve import _server

        return getattr(_server, name)
    raise AttributeError(f"module 'polytask.serve' has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "ExportError",
    "ExportFormat",
    "ExportResult",
    "ExportedModel",
    "FormatUnavailable",
    "ServeOptions",
    "ServingGraph",
    "app_from_environment",
    "create_app",
    "export_model",
    "load_exported",
]
