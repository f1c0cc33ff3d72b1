"""Export formats (ONNX, TorchScript, torch.export), one file each, found by name."""

from polytask.serve.formats._base import ExportFormat, FormatUnavailable, Runner
from polytask.serve.formats._registry import FORMATS, get_format

__all__ = ["FORMATS", "ExportFormat", "FormatUnavailable", "Runner", "get_format"]
