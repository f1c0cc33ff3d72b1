"""Export a trained model to a file format other runtimes load, with a manifest beside it, and
run an exported model from Python with the same predictions table as `FittedModel.predict`."""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from polytask._audience import for_user
from polytask._files import json_text
from polytask._version import __version__
from polytask.app._encoding import tabular_encoding
from polytask.app._fitted import FittedModel, check_id_columns, choose_tasks, prediction_frame
from polytask.data._tabular import DataError, TabularPreprocessor
from polytask.serve._graph import ServingGraph
from polytask.serve._schema import input_schema, output_schema
from polytask.serve.formats import ExportFormat, Runner, get_format
from polytask.tasks._task import Task

MANIFEST = "manifest.json"
TOLERANCE = 1e-4
"""Largest difference allowed between an export's outputs and the Python model's, relative to
1 + |output| (float32 arithmetic reordered by the exporter stays far below it)."""
CHECK_ROWS = 256


class ExportError(ValueError):
    """An export that cannot be made or does not reproduce the model (the message says why)."""


@dataclass(frozen=True)
class ExportResult:
    """What `export_model` wrote and measured."""

    folder: Path
    files: list[Path]
    max_difference: float
    """Largest |export − Python model| / (1 + |Python model|) over every output on the check
    rows (what is held to `TOLERANCE`)."""
    quantization: dict[str, Any] | None = None
    """With `quantize`: the int8 file, its largest output change and, given labelled rows,
    each task's metrics before and after."""
    manifest: dict[str, Any] = field(default_factory=dict)


def export_model(
    fitted: FittedModel,
    folder: str | Path,
    format: str = "onnx",
    *,
    tasks: Sequence[str] | None = None,
    quantize: bool = False,
    data: pd.DataFrame | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write `fitted` (its `tasks`, all by default) as `format` into `folder`: the graph, with
    the feature encoding inside it, and `manifest.json` (tasks, kinds, classes, input schema,
    how to read each output). The export is run and compared with the Python model on `data`'s
    rows (or rows drawn from the training statistics) before it is kept; `quantize` adds an int8
    copy whose accuracy change is measured on `data`."""
    fmt = get_format(format)
    fmt.check_available()
    if quantize and not fmt.quantizable:
        raise ExportError(
            f"export format {format!r} has no int8 quantisation; use onnx or torchscript"
        )
    chosen = choose_tasks(fitted.tasks, tasks)
    out = Path(folder)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(
            f"{out} already holds files: choose an empty folder, or "
            + for_user("pass overwrite=True", "pass --overwrite")
            + " to replace an earlier export there"
        )
    model = copy.deepcopy(fitted.model).cpu().eval()
    pre = tabular_encoding(fitted.preprocessor, "export")
    coarse = _warn_float32_inputs(pre)
    graph = ServingGraph(model, pre, chosen).eval()
    wide = _check_rows(pre, data)
    rows = wide.astype(np.float32)
    expected = _python_outputs(graph, rows)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=_parent(out)) as tmp:
        staged = Path(tmp)
        fmt.write(graph, staged / fmt.suffix)
        got = fmt.load(staged / fmt.suffix)(rows)
        difference = _largest_difference(got, expected, relative=True)
        if not difference <= TOLERANCE:
            raise ExportError(
                f"the {format} export's outputs differ from the model's by {difference:.3g} "
                f"relative to 1 + |output| (more than {TOLERANCE:g}); export to another format, "
                "or report this model"
            )
        if not coarse:  # else said already, column by column
            _warn_input_rounding(graph, wide, got)
        quantization = None
        if quantize:
            quantization = _quantize(fmt, graph, staged, fitted, chosen, rows, expected, data)
        manifest = _manifest(fitted, chosen, fmt, difference, quantization)
        (staged / MANIFEST).write_text(json_text(manifest, indent=1))
        out.mkdir(parents=True, exist_ok=True)
        _remove_earlier_export(out)
        files = []
        for item in sorted(staged.iterdir()):
            target = out / item.name
            item.replace(target)
            files.append(target)
    return ExportResult(out, files, difference, quantization, manifest)


EXPORT_BLANK = (
    "are blank: an exported graph holds the model's own tasks only (predict a new group with "
    "the model itself: polytask predict MODEL.pt, or FittedModel.predict, which use its "
    "shared part where it has one)"
)

PRECISION = 1e-3
"""The largest float32 rounding of a numeric input, in training standard deviations, that an
export takes without a warning."""


def _warn_float32_inputs(pre: TabularPreprocessor) -> bool:
    """Warn of numeric features that a float32 graph input holds too coarsely to be encoded as
    the model (in float64) encodes them: a large offset with a small spread (a sensor's
    baseline 1e6 ± 1 is held to 0.06, 6% of its std); True when it did."""
    coarse = []
    for name, mean, std, logged in zip(pre.numeric, pre.means, pre.stds, pre.log_mask,
                                       strict=True):  # fmt: skip
        if logged:  # a logarithm's float32 rounding is relative: far below any std
            continue
        rounding = float(np.spacing(np.float32(abs(mean) + 3 * std)))
        if rounding > PRECISION * std:
            coarse.append(f"{name!r} (mean {mean:.4g}, std {std:.3g}: held to {rounding:.2g})")
    if coarse:
        warnings.warn(
            f"the exported graph takes float32 inputs, which hold {', '.join(coarse)} too "
            "coarsely: its predictions differ from the model's (polytask predict and serve "
            "read float64); subtract a constant from such a column (e.g. its mean) before "
            "training, or serve the model itself",
            UserWarning,
            stacklevel=3,
        )
    return bool(coarse)


def _remove_earlier_export(out: Path) -> None:
    """Delete the files an earlier export's manifest lists (its graph, its int8 copy, the
    manifest), so that a client reading the folder never finds another model's graph; other
    files in the folder are left alone."""
    try:
        earlier = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return
    names = [earlier.get("file"), (earlier.get("quantization") or {}).get("file"), MANIFEST]
    for name in names:
        if isinstance(name, str) and Path(name).name == name:  # a bare file name only
            (out / name).unlink(missing_ok=True)


def _warn_input_rounding(graph: ServingGraph, wide: np.ndarray, got: list[np.ndarray]) -> None:
    """Warn where the float32 graph input changes the check rows' predictions from the
    model's, which encodes float64 values (polytask predict and serve): a tree's split near a
    value the rounding moves sends the row down the other branch, however small the rounding."""
    with torch.no_grad():
        encoded = graph.preprocessor.encode_raw(torch.from_numpy(wide)).to(torch.float32)
        model = [o.numpy() for o in graph.outputs(encoded)]
    rows = np.zeros(len(wide), dtype=bool)
    for a, b in zip(got, model, strict=True):
        gap = np.abs(a - b) / (1 + np.abs(b))
        rows |= gap.reshape(len(wide), -1).max(axis=1, initial=0.0) > TOLERANCE
    if rows.any():
        worst = _largest_difference(got, model, relative=True)
        warnings.warn(
            f"the exported graph takes float32 inputs, and on {int(rows.sum())} of the "
            f"{len(wide)} check rows its predictions differ from the model's (which reads "
            f"float64: polytask predict and serve) by up to {worst:.3g} relative to 1 + "
            "|output| (a split of a tree model near a value the rounding moves, or a column "
            "with a large offset); subtract a constant from such a column (e.g. its mean) "
            "before training, or serve the model itself",
            UserWarning,
            stacklevel=3,
        )


def _parent(out: Path) -> Path:
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _check_rows(pre: TabularPreprocessor, data: pd.DataFrame | None) -> np.ndarray:
    """Raw feature rows to compare an export with the model on: `data`'s, or rows drawn
    around the training means with every category and some missing values."""
    if data is not None:
        return pre.raw_features(data.head(CHECK_ROWS)).astype(np.float64)
    rng = np.random.default_rng(0)
    numeric = pre.typical_numeric(rng.normal(size=(CHECK_ROWS, len(pre.numeric))))
    numeric[rng.random(numeric.shape) < 0.05] = np.nan
    categorical = np.stack(
        [rng.integers(-1, len(c), CHECK_ROWS) for c in pre.categories], axis=1
    ) if pre.categories else np.zeros((CHECK_ROWS, 0))  # fmt: skip
    return np.concatenate([numeric, categorical], axis=1).astype(np.float64)


@torch.no_grad()
def _python_outputs(graph: ServingGraph, rows: np.ndarray) -> list[np.ndarray]:
    return [o.numpy() for o in graph(torch.from_numpy(rows))]


def _largest_difference(
    got: list[np.ndarray], expected: list[np.ndarray], relative: bool = False
) -> float:
    """max |got − expected| over every output (divided by 1 + |expected| with `relative`)."""
    if len(got) != len(expected):
        return float("inf")
    worst = 0.0
    for a, b in zip(got, expected, strict=True):
        if a.shape != b.shape:
            return float("inf")
        gap = np.abs(a - b) / (1 + np.abs(b)) if relative else np.abs(a - b)
        worst = max(worst, float(np.max(gap, initial=0.0)))
    return worst


def _quantize(
    fmt: ExportFormat,
    graph: ServingGraph,
    staged: Path,
    fitted: FittedModel,
    tasks: list[Task],
    rows: np.ndarray,
    expected: list[np.ndarray],
    data: pd.DataFrame | None,
) -> dict[str, Any]:
    """Write the int8 copy and measure what quantisation changed."""
    source = staged / fmt.suffix
    target = source.with_name(source.stem + ".int8" + source.suffix)
    fmt.quantize(graph, source, target)
    report: dict[str, Any] = {
        "file": target.name,
        "bytes": target.stat().st_size,
        "float_bytes": source.stat().st_size,
        "max_output_change": _largest_difference(fmt.load(target)(rows), expected, relative=True),
    }
    if data is not None:
        labelled = [t for t in tasks if set(t.target_columns) <= set(data.columns)]
        if labelled:
            pre = tabular_encoding(fitted.preprocessor)
            before = _metrics(fmt.load(source), pre, tasks, labelled, data)
            after = _metrics(fmt.load(target), pre, tasks, labelled, data)
            report["metrics"] = {
                name: {m: {"float": before[name][m], "int8": after[name][m]} for m in values}
                for name, values in before.items()
            }
            report["unlabelled"] = [t.name for t in labelled if t.name not in before]
    return report


def _metrics(
    run: Runner,
    pre: TabularPreprocessor,
    tasks: list[Task],
    labelled: list[Task],
    data: pd.DataFrame,
) -> dict[str, dict[str, float]]:
    """Each `labelled` task's metrics of an export's outputs (one per task of `tasks`, in
    order) on the labelled rows of `data` (tasks with none are left out: a metric of no rows
    is not a number)."""
    outputs = run(pre.raw_features(data).astype(np.float32))
    result = {}
    for task, served in zip(tasks, outputs, strict=True):
        if task not in labelled:
            continue
        kind, fit = task.kind_spec, pre.target_fit(task)
        target = pre.transform_target(task, data)
        if not bool(task.mask(target).any()):
            continue
        truth = kind.truth(target, fit.scale)
        result[task.name] = {k: float(v) for k, v in task.evaluate(served, truth).items()}
    return result


def _manifest(
    fitted: FittedModel,
    tasks: list[Task],
    fmt: ExportFormat,
    difference: float,
    quantization: dict[str, Any] | None,
) -> dict[str, Any]:
    pre = tabular_encoding(fitted.preprocessor, "export")
    return {
        "polytask_version": __version__,
        "torch_version": torch.__version__,
        "format": fmt.name,
        "file": fmt.suffix,
        "graph_input": {
            "name": "features",
            "dtype": "float32",
            "shape": ["batch", len(pre.numeric) + len(pre.categorical)],
            "columns": [*pre.numeric, *pre.categorical],
            "encoding": (
                "one column per feature, in `columns` order: numeric features as numbers "
                "(missing: NaN), categorical features as the index of the value in its "
                "`categories` list (missing or unseen: -1)"
            ),
        },
        "inputs": input_schema(pre),
        "outputs": output_schema(tasks, pre),
        "architecture": fitted.model_config.architecture,
        "tasks": [t.to_dict() for t in tasks],
        "preprocessor": pre.to_dict(),
        "max_difference": difference,
        "quantization": quantization,
    }


@dataclass
class ExportedModel:
    """An exported model run from Python, through its format's runtime (onnxruntime,
    torch.jit, torch.export): the same predictions table as `FittedModel.predict`."""

    folder: Path
    manifest: dict[str, Any]
    preprocessor: TabularPreprocessor
    tasks: tuple[Task, ...]
    run: Runner

    def predict(
        self,
        df: pd.DataFrame,
        id_columns: Sequence[str] = (),
        tasks: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        chosen = choose_tasks(self.tasks, tasks)
        ids = check_id_columns(df, id_columns)
        outputs = self.outputs(df)
        left_out = [t for t in self.tasks if t not in chosen]
        return prediction_frame(df, ids, chosen, outputs, self.preprocessor, left_out=left_out,
                                unshared=EXPORT_BLANK)  # fmt: skip

    def outputs(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each task's raw graph output for the rows of `df` (probabilities, values)."""
        raw = self.preprocessor.raw_features(df).astype(np.float32)
        return dict(zip([t.name for t in self.tasks], self.run(raw), strict=True))


def load_exported(folder: str | Path, quantized: bool = False) -> ExportedModel:
    """The export in `folder` (its manifest and graph file; `quantized`: the int8 copy)."""
    root = Path(folder)
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"{root} holds no {MANIFEST}: export a model there with polytask export")
    manifest = json.loads(path.read_text())
    fmt = get_format(manifest["format"])
    fmt.check_available()
    quant = manifest.get("quantization")
    if quantized and not quant:
        raise DataError(f"{root} holds no int8 copy: export with quantize")
    file = root / (quant["file"] if quantized else manifest["file"])
    tasks = tuple(Task(**t) for t in manifest["tasks"])
    pre = TabularPreprocessor.from_dict(manifest["preprocessor"])
    return ExportedModel(root, manifest, pre, tasks, fmt.load(file))
