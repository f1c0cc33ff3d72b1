"""`polytask export` and `polytask serve`: one trained model for every task, outside training."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from polytask._files import require_file

MAX_REQUEST_BYTES = 32_000_000
"""`serve --max-request-bytes` by default (the server's `ServeOptions` default too)."""

FORMAT_NAMES = ("onnx", "torchscript", "exported-program")
"""The export formats (`polytask.serve.FORMATS`), named here so that --help needs no torch."""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:  # 0 (any free port) would listen where no one is told
        raise argparse.ArgumentTypeError(f"must be a port, 1 to 65535, got {value}")
    return value


def _wait_ms(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1000 ms, got {text}")
    return value


def add_parsers(sub: Any, common: argparse.ArgumentParser, task_list: Any) -> None:
    """The `export` and `serve` sub-commands."""
    export = sub.add_parser(
        "export",
        parents=[common],
        help="export a trained model (every task head in one graph) to ONNX, TorchScript or "
        "torch.export",
    )
    export.add_argument("checkpoint", help="model.pt written by `polytask train`")
    export.add_argument(
        "--format",
        default="onnx",
        metavar="FORMAT",
        help=f"file format: {', '.join(FORMAT_NAMES)}, or one registered with --import "
        "(default onnx)",
    )
    export.add_argument(
        "--out", help="folder to write the graph and manifest.json into (default: MODEL_DIR/export)"
    )
    export.add_argument("--tasks", type=task_list, metavar="A,B", help="export only these tasks")
    export.add_argument(
        "--quantize",
        choices=("int8",),
        help="also write a dynamically int8-quantised copy for CPU serving (onnx, torchscript)",
    )
    export.add_argument(
        "--data",
        help="CSV of rows to check the export on; with their labels, --quantize reports each "
        "task's metrics before and after quantisation",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier export"
    )
    export.set_defaults(func=cmd_export)

    serve = sub.add_parser(
        "serve", parents=[common], help="serve a trained model over HTTP (every task, one model)"
    )
    serve.add_argument("checkpoint", help="model.pt written by `polytask train`")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=_positive, default=1, help="server processes (default 1)")
    serve.add_argument(
        "--max-request-bytes",
        type=_positive,
        default=MAX_REQUEST_BYTES,
        help=f"larger requests are refused with 413 (default {MAX_REQUEST_BYTES}: room for "
        "--max-rows rows of about 100 features)",
    )
    serve.add_argument(
        "--max-rows", type=_positive, default=10_000, help="rows per request (default 10000)"
    )
    serve.add_argument(
        "--batch-wait-ms",
        type=_wait_ms,
        default=0.0,
        help="how long a request waits for others to batch with (default 0: only requests "
        "already queued join it)",
    )
    serve.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="torch threads of each worker process (default: the cores shared among the "
        "workers; 1 is often fastest for a small model on a busy machine)",
    )
    serve.set_defaults(func=cmd_serve)


def cmd_export(args: argparse.Namespace, console: Console) -> None:
    from polytask.serve.formats import FORMATS, get_format

    chosen = get_format(args.format)  # an unknown one refused with those known, plugins' too
    require_file(args.checkpoint, "model")
    if args.data:
        require_file(args.data, "data file")
    from polytask.app import FittedModel
    from polytask.app._encoding import tabular_encoding
    from polytask.data._tabular import read_csv
    from polytask.serve import export_model

    fitted = FittedModel.load(args.checkpoint)
    tabular_encoding(fitted.preprocessor, "export")  # before any format asks for its extras
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "export"
    data = read_csv(args.data) if args.data else None
    if args.quantize and not chosen.quantizable:  # before saying "exporting"
        quantizable = [n for n in FORMATS if get_format(n).quantizable]
        raise ValueError(f"--quantize: export format {args.format!r} has no int8 quantisation; "
                         f"use {' or '.join(quantizable)}")  # fmt: skip
    if not args.quiet:
        print(f"exporting to {out} ({args.format})", file=sys.stderr, flush=True)
    result = export_model(
        fitted,
        out,
        args.format,
        tasks=args.tasks,
        quantize=args.quantize == "int8",
        data=data,
        overwrite=args.overwrite,
    )
    names = ", ".join(o["name"] for o in result.manifest["outputs"])
    console.print(f"wrote {out} ({args.format}; outputs {names})", highlight=False)
    console.print(
        "checked against the Python model on the same float32 inputs: largest difference "
        f"{result.max_difference:.2g} (relative to 1 + |output|)",
        highlight=False,
    )
    if result.quantization:
        headline, table = _quantization_table(result.quantization)
        console.print(headline, soft_wrap=True, highlight=False)
        if table is not None:
            console.print(table)


def _quantization_table(report: dict[str, Any]) -> tuple[str, Table | None]:
    """A line on the int8 copy (size, largest output change) and its metrics table."""
    size = f"{report['float_bytes'] / 1e3:.0f} kB → {report['bytes'] / 1e3:.0f} kB"
    change = f"largest output change {report['max_output_change']:.2%} (relative to 1 + |value|)"
    metrics = report.get("metrics")
    headline = f"int8 copy {report['file']}: {size}, {change}"
    unlabelled = report.get("unlabelled") or []
    if unlabelled:
        more = len(unlabelled) - 10
        shown = ", ".join(unlabelled[:10]) + (f" and {more} more" if more > 0 else "")
        headline += f"; no labelled rows in --data for {shown} (no metrics)"
    if not metrics:
        return headline + ("" if unlabelled else "; pass --data with labels for metrics"), None
    from polytask.cli._render import format_metric

    table = Table()
    for column in ("task", "metric", "float", "int8", "change"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task, values in metrics.items():
        for name, pair in values.items():
            before, after = pair["float"], pair["int8"]
            change = "n/a"  # e.g. the r2 of one row: undefined before and after
            if before is not None and after is not None and math.isfinite(after - before):
                sign = "+" if after >= before else "-"
                change = sign + format_metric(abs(after - before), digits=2)
            table.add_row(task, name, format_metric(before), format_metric(after), change)
    return headline, table


def cmd_serve(args: argparse.Namespace, console: Console) -> None:
    require_file(args.checkpoint, "model")
    from polytask.app import FittedModel
    from polytask.app._encoding import tabular_encoding

    # a model this command cannot serve is refused before asking for the serving extras
    tabular_encoding(FittedModel.load(args.checkpoint).preprocessor, "serve")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise ValueError(
            f"polytask serve needs {err.name}: pip install 'polytask[serve]'"
        ) from None
    from polytask.serve._server import MODEL_ENV, OPTIONS_ENV, ServeOptions

    options = ServeOptions(
        max_request_bytes=args.max_request_bytes,
        max_rows=args.max_rows,
        batch_wait_ms=args.batch_wait_ms,
        threads=args.threads  # serve's own, else polytask --threads N, else a share of cores
        or getattr(args, "torch_threads", None)
        or max(1, (os.cpu_count() or 1) // args.workers),
    )
    from polytask.app import FittedModel

    FittedModel.load(args.checkpoint)  # a bad model fails here, once, not in every worker
    _check_address(args.host, args.port)  # before saying "serving": uvicorn's error is a trace
    os.environ[MODEL_ENV] = str(Path(args.checkpoint).resolve())
    from polytask._plugins import IMPORTS_ENV

    os.environ[IMPORTS_ENV] = os.pathsep.join(  # for the worker processes, as absolute paths
        str(Path(s).resolve()) if s.endswith(".py") else s for s in getattr(args, "imports", [])
    )
    os.environ[OPTIONS_ENV] = json.dumps(options.__dict__)
    if not args.quiet:
        print(
            f"serving {args.checkpoint} on http://{args.host}:{args.port} "
            f"({args.workers} worker(s), {options.threads} torch thread(s) each); "
            "GET /metadata describes the requests",
            file=sys.stderr,
            flush=True,
        )
    from polytask.serve._server import Repeats

    logger, repeats = logging.getLogger("polytask"), Repeats()
    logger.addFilter(repeats)  # a warning repeated in every request: once a minute
    try:
        uvicorn.run(
            "polytask.serve:app_from_environment",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="info" if args.verbose else "warning",
        )
    finally:
        logger.removeFilter(repeats)


def _check_address(host: str, port: int) -> None:
    """Refuse a host:port the server cannot listen on (in use, not this machine's, a port
    that needs root), with the fix, by binding it once and letting it go."""
    import errno
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as err:
        raise ValueError(
            f"--host {host}: not an address this machine can resolve ({err})"
        ) from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                why = f"port {port} on {host} is in use (another server?): give another --port"
            elif err.errno == errno.EACCES:
                why = f"port {port} needs more rights than this user has: give --port 1024 or more"
            elif err.errno == errno.EADDRNOTAVAIL:
                why = f"--host {host} is not an address of this machine"
            else:
                why = f"cannot listen on {host}:{port}: {err.strerror}"
            raise ValueError(why) from None
