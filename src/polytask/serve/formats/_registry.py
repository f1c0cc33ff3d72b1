"""Export formats by name. Adding one: its file (an `ExportFormat`) and one line here."""

from __future__ import annotations

from polytask._params import lookup
from polytask.serve.formats._base import ExportFormat
from polytask.serve.formats._exported_program import ExportedProgramFormat
from polytask.serve.formats._onnx import OnnxFormat
from polytask.serve.formats._torchscript import TorchScriptFormat

FORMATS: dict[str, type[ExportFormat]] = {
    "onnx": OnnxFormat,
    "torchscript": TorchScriptFormat,
    "exported-program": ExportedProgramFormat,
}


def get_format(name: str) -> ExportFormat:
    """The format called `name`; an unknown name is refused with the known ones."""
    return lookup("export format", name, FORMATS)()
