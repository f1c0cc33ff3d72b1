"""The HTTP server: one trained model answering for every task (FastAPI and uvicorn: the
`serve` extra; this module imports them).

`POST /predict` takes `{"rows": [{feature: value, ...}, ...]}` and answers
`{"tasks": [...], "predictions": [{column: value, ...}, ...]}`, the columns named as
`polytask predict` names them; `?tasks=a,b` answers some of the tasks. Requests that arrive
while the model is busy are run together as one batch (no waiting when there is no queue)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from polytask._version import __version__
from polytask.app._encoding import tabular_encoding
from polytask.app._fitted import FittedModel
from polytask.serve._schema import RowError, input_schema, output_schema, rows_frame
from polytask.tasks._columns import DataError

log = logging.getLogger("polytask")

MODEL_ENV = "POLYTASK_SERVE_MODEL"
OPTIONS_ENV = "POLYTASK_SERVE_OPTIONS"


@dataclass(frozen=True)
class ServeOptions:
    """Limits and batching of the server."""

    max_request_bytes: int = 32_000_000
    """Larger request bodies are refused (413) before they are read into memory."""
    max_rows: int = 10_000
    """Rows per request."""
    max_batch_rows: int = 4096
    """Rows run through the model at once when concurrent requests are batched."""
    batch_wait_ms: float = 0.0
    """How long the first request of a batch waits for others (0: only those already queued
    join it, so a lone request is never delayed)."""
    threads: int | None = None
    """Torch threads of each `polytask serve` worker process (`torch.set_num_threads`, set in
    the worker, never by `create_app` in a process of yours); None: PyTorch's default."""

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_rows", "max_batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise ValueError(f"batch_wait_ms must be in [0, 1000], got {self.batch_wait_ms}")


@dataclass
class _Request:
    frame: pd.DataFrame
    done: asyncio.Future[pd.DataFrame]


@dataclass
class Batcher:
    """Runs queued prediction requests through the model together, one batch at a time, on a
    worker thread (so the event loop keeps accepting requests meanwhile)."""

    fitted: FittedModel
    options: ServeOptions
    batches: int = 0
    rows: int = 0
    _queue: asyncio.Queue[_Request] | None = None
    _worker: asyncio.Task[None] | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))

    async def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:  # a queue and worker per event loop
            self._queue, self._loop = asyncio.Queue(), loop  # (a test client's, each request)
            self._worker = loop.create_task(self._run(self._queue))
        done: asyncio.Future[pd.DataFrame] = loop.create_future()
        await self._queue.put(_Request(frame, done))
        return await done

    async def _run(self, queue: asyncio.Queue[_Request]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            size = len(batch[0].frame)
            if self.options.batch_wait_ms > 0:
                await asyncio.sleep(self.options.batch_wait_ms / 1000)
            while not queue.empty() and size < self.options.max_batch_rows:
                batch.append(queue.get_nowait())
                size += len(batch[-1].frame)
            try:
                results = await loop.run_in_executor(self._pool, self._predict, batch)
            except Exception as err:  # never leave a request waiting
                results = [err] * len(batch)
            for request, result in zip(batch, results, strict=True):
                if request.done.cancelled():
                    continue
                if isinstance(result, BaseException):
                    request.done.set_exception(result)
                else:
                    request.done.set_result(result)

    def _predict(self, batch: list[_Request]) -> list[pd.DataFrame | Exception]:
        """`_run_batch` with the data warnings it raises logged as polytask's (at most once a
        minute each, by the server's filter), not printed by Python with a source line."""
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out = self._run_batch(batch)
        for warning in seen:
            log.warning("%s", warning.message)
        return out

    def _run_batch(self, batch: list[_Request]) -> list[pd.DataFrame | Exception]:
        """One model run for the whole batch; if it fails (one request's rows are bad), each
        request alone, so that the error reaches only the request that caused it."""
        self.batches += 1
        self.rows += sum(len(r.frame) for r in batch)
        frames = [r.frame for r in batch]
        try:
            joined = self.fitted.predict(pd.concat(frames, ignore_index=True))
        except Exception:
            if len(batch) == 1:
                raise
            out: list[pd.DataFrame | Exception] = []
            for frame in frames:
                try:
                    out.append(self.fitted.predict(frame))
                except Exception as err:
                    out.append(err)
            return out
        bounds = np.cumsum([0, *map(len, frames)])
        return [joined.iloc[a:b] for a, b in itertools.pairwise(bounds)]

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _records(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of `frame`'s `columns` as JSON-ready dicts (NumPy scalars to Python, NaN and
    pandas' NA, a blank in a column of nullable integers, to null)."""

    def plain(value: Any) -> Any:
        if value is pd.NA:
            return None
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    values = frame[list(columns)].to_numpy(dtype=object)
    return [dict(zip(columns, map(plain, row), strict=True)) for row in values]


def create_app(fitted: FittedModel, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI application serving `fitted`: `/predict`, `/health`, `/metadata`."""
    opts = options or ServeOptions()
    fitted.model.eval()
    pre = tabular_encoding(fitted.preprocessor, "serve")
    served = fitted.choose_tasks(None)  # every task but the auxiliary ones
    task_names = [t.name for t in served]
    example = _example_frame(fitted)
    columns_of = {t.name: list(fitted.predict(example, tasks=[t.name]).columns) for t in served}
    own = {c for columns in columns_of.values() for c in columns}
    # tasks made from a column that is also a feature: their combined columns (each row
    # predicted by its own group's task, a new group by the shared part) with every task
    combined = [c for c in fitted.predict(example).columns if c not in own]
    batcher = Batcher(fitted, opts)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(
        title="polytask model",
        version=__version__,
        description=f"One model serving the tasks {', '.join(task_names)}.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher

    def problem(status: int, loc: list[str | int], message: str) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"loc": loc, "msg": message}], "error": message}, status_code=status
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "tasks": task_names}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        outputs = output_schema(served, pre)
        for entry in outputs:
            entry["columns"] = columns_of[entry["name"]]
        return {
            "polytask_version": __version__,
            "architecture": fitted.model_config.architecture,
            "tasks": outputs,
            "inputs": input_schema(pre),
            "combined_columns": combined,
            "request": {
                "body": '{"rows": [{feature: value, ...}, ...]}',
                "max_rows": opts.max_rows,
                "max_request_bytes": opts.max_request_bytes,
                "tasks_query": "?tasks=a,b answers only those tasks (and no combined_columns)",
            },
        }

    @app.post("/predict", response_model=None)
    async def predict(request: Request, tasks: str | None = None) -> Any:
        chosen = task_names
        if tasks is not None:
            chosen = [n.strip() for n in tasks.split(",") if n.strip()]
            if any(n not in task_names for n in chosen):
                try:  # unknown, or auxiliary (trained, never served): says which
                    fitted.choose_tasks(chosen)
                except DataError as err:
                    return problem(400, ["query", "tasks"], str(err))
            if not chosen:
                return problem(
                    400, ["query", "tasks"], f"no task named: give some of {', '.join(task_names)}"
                )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > opts.max_request_bytes:
            return _too_large(problem, opts)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > opts.max_request_bytes:
                return _too_large(problem, opts)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return problem(400, ["body"], f"the body is not valid JSON: {err}")
        if not isinstance(payload, dict) or "rows" not in payload:
            return problem(422, ["body"], 'the body must be an object {"rows": [...]}')
        extra = sorted(set(payload) - {"rows"})
        if extra:
            return problem(422, ["body", extra[0]], f"unknown field {extra[0]!r}; give rows")
        try:
            frame = rows_frame(payload["rows"], pre, opts.max_rows)
        except RowError as err:
            return problem(422, err.loc, err.message)
        try:
            predictions = await batcher.predict(frame)
        except DataError as err:
            return problem(422, ["rows"], str(err))
        answered = [n for n in task_names if n in set(chosen)]  # the model's order
        wanted = [c for n in answered for c in columns_of[n]]
        if len(answered) == len(task_names):
            wanted += combined
        return {
            "tasks": answered,
            "predictions": _records(predictions, wanted),
        }

    return app


def _too_large(problem: Any, opts: ServeOptions) -> Any:
    return problem(
        413,
        ["body"],
        f"the request is larger than {opts.max_request_bytes} bytes: send fewer rows per "
        "request (or start the server with a larger --max-request-bytes)",
    )


def _example_frame(fitted: FittedModel) -> pd.DataFrame:
    """One row at the training means (numeric) and first categories: to learn the columns."""
    pre = tabular_encoding(fitted.preprocessor, "serve")
    typical = pre.typical_numeric().tolist()
    row: dict[str, Any] = dict(zip(pre.numeric, typical, strict=True))
    row.update(
        {
            c: (cats[0] if cats else None)
            for c, cats in zip(pre.categorical, pre.categories, strict=True)
        }
    )
    return pd.DataFrame([row])


class Repeats(logging.Filter):
    """Lets a log message through once per `seconds` (a server sees the same unseen category
    in request after request); the next one that passes says how many were held back."""

    def __init__(self, seconds: float = 60.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text, now = record.getMessage(), time.monotonic()
        last, held = self.seen.get(text, (-math.inf, 0))
        if now - last < self.seconds:
            self.seen[text] = (last, held + 1)
            return False
        self.seen[text] = (now, 0)
        if held:
            record.msg, record.args = f"{text} (and {held} more times in {self.seconds:g} s)", ()
        return True


class _Lower(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"  # as the command line's


def _serving_logs() -> None:
    """In a worker process `polytask serve --workers N` started (no handler of the command
    line's): polytask's warnings as `warning: ...` on stderr, each repeated one at most once a
    minute. (With one worker the command line's process serves; `cmd_serve` filters there.)"""
    logger = logging.getLogger("polytask")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Lower())
    handler.addFilter(Repeats())
    logger.addHandler(handler)


def app_from_environment() -> FastAPI:
    """The app for `uvicorn --factory` worker processes: the model path and options come from
    the environment that `polytask serve` sets (never from a request)."""
    _serving_logs()
    from polytask._plugins import imports_from_environment

    imports_from_environment()  # the components `polytask --import` registered
    path = os.environ.get(MODEL_ENV)
    if not path:
        raise RuntimeError(f"{MODEL_ENV} is not set: start the server with `polytask serve MODEL`")
    options = ServeOptions(**json.loads(os.environ.get(OPTIONS_ENV, "{}")))
    if options.threads is not None:  # this worker process's own
        torch.set_num_threads(options.threads)
    return create_app(FittedModel.load(path), options)
