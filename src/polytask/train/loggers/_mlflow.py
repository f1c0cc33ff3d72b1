"""MLflow tracking: the run's settings as params, each evaluation's logs as metrics (the
`mlflow` extra)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from polytask.train.loggers._base import Logger, flat_params

RUN_FILE = "mlflow_run.json"
"""Which MLflow run a run folder logs to (read back when the run resumes)."""
_BAD = re.compile(r"[^\w./\- ]")
_MAX_PARAM = 6000  # characters in a param value (MLflow's limit)


class MLflowLogger(Logger):
    """Logs to an MLflow tracking store: one MLflow run per training run, named after the run
    folder (`run_name`) in experiment `experiment`, with the run's settings as params
    (`training.lr`, `balancer`, ...) and each evaluation's logs as metrics at its training step.
    The store is `tracking_uri`, else `MLFLOW_TRACKING_URI`, else a local file store in
    `RUN_DIR/mlruns` (no server, no network). Needs `pip install 'polytask[mlflow]'`.

    The run's id is kept in `RUN_DIR/mlflow_run.json`: a resumed run continues the same MLflow
    run and skips the steps it already holds. Each evaluation is written when the next one
    comes (or at the end), once its checkpoint exists, so a stopped run leaves none that its
    resume trains again, and none half-written: no step is logged twice, and each holds the
    values of the run's history; params it already holds keep their first value. A logger
    first added on resume (or pointed at another store) starts an MLflow run holding the
    evaluations before it too."""

    requires = ("mlflow",)
    extra = "mlflow"

    def __init__(
        self,
        run_dir: str | Path,
        tracking_uri: str | None = None,
        experiment: str = "polytask",
        run_name: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.run_id: str | None = None
        """The MLflow run logged to (set when training starts)."""
        self._client: Any = None
        self._done = 0  # the highest step the MLflow run holds
        self._held: tuple[int, dict[str, float]] | None = None
        """The newest evaluation, written once the next one (or the end) comes."""

    def uri(self) -> str:
        """The tracking store: `tracking_uri`, `MLFLOW_TRACKING_URI`, or RUN_DIR/mlruns."""
        local = (self.run_dir / "mlruns").resolve().as_uri()
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local

    @classmethod
    def refused(cls, options: Mapping[str, Any]) -> str | None:
        """A local file store where the user's MLFLOW_ALLOW_FILE_STORE forbids one (MLflow would
        refuse it at the first evaluation)."""
        allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "true").strip().lower()
        uri = options.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if allowed not in ("false", "0") or (uri is not None and not _is_file_store(uri)):
            return None
        store = (
            f"the file store {uri!r}" if uri else "its default store, the file store RUN_DIR/mlruns"
        )
        return (
            f"MLFLOW_ALLOW_FILE_STORE={os.environ['MLFLOW_ALLOW_FILE_STORE']} forbids {store}: "
            "give logger_params.mlflow.tracking_uri (or MLFLOW_TRACKING_URI) a database or "
            "server store (sqlite:///mlflow.db, http://HOST:5000), or unset "
            "MLFLOW_ALLOW_FILE_STORE"
        )

    def start(self, step: int, history: Sequence[Mapping[str, float]]) -> None:
        from mlflow.tracking import MlflowClient

        uri = self.uri()
        with _file_store_allowed(uri):
            self._client = client = MlflowClient(uri)
            self.run_id = self._earlier_run(uri) if step > 0 else None
            if self.run_id is not None:
                client.update_run(self.run_id, status="RUNNING")
                done = client.get_metric_history(self.run_id, "epoch")  # written last: whole
                self._done = max((m.step for m in done), default=0)
            else:
                found = client.get_experiment_by_name(self.experiment)
                experiment = found.experiment_id if found else None
                experiment = experiment or client.create_experiment(self.experiment)
                name = self.run_name or self.run_dir.resolve().name
                self.run_id = client.create_run(experiment, run_name=name).info.run_id
                self._done = 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"tracking_uri": uri, "run_id": self.run_id}
        (self.run_dir / RUN_FILE).write_text(json.dumps(record, indent=1) + "\n")
        for row in history:  # evaluations before a resume that this MLflow run lacks
            if int(row["step"]) > self._done:
                self._write(int(row["step"]), row)

    def _earlier_run(self, uri: str) -> str | None:
        """The MLflow run this run folder logged to in this store before, if it still exists."""
        try:
            record = json.loads((self.run_dir / RUN_FILE).read_text())
        except (OSError, ValueError):
            return None
        if record.get("tracking_uri") != uri:
            return None
        try:
            run = self._client.get_run(record["run_id"])
        except Exception:  # deleted, or another store's id: start a new MLflow run
            return None
        return str(run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        with _file_store_allowed(self.uri()):
            held = self._client.get_run(self.run_id).data.params
            new = {}
            for key, value in flat_params(params).items():
                name = _key(key)
                text = value if isinstance(value, str) else json.dumps(value, default=str)
                if name not in held:
                    new[name] = text[:_MAX_PARAM]
            items = [Param(k, v) for k, v in new.items()]
            for i in range(0, len(items), 100):  # MLflow takes up to 100 params per batch
                self._client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, step: int, logs: Mapping[str, float]) -> None:
        """Write the evaluation before this one, and hold this one until the next (or the
        end): by then its checkpoint is written, so the MLflow run never holds an evaluation
        that a resumed run would train again (perhaps to other values, a resume may change
        the length and a schedule with it), nor one half-written when the run was stopped."""
        if step <= self._done:  # already in the MLflow run
            return
        self._flush()
        self._held = (step, dict(logs))

    def _stays(self) -> bool:
        """Whether a stopped run's held evaluation stands: its checkpoint was written, or the
        run keeps none (nothing resumes it, so nothing trains it again)."""
        if self._held is None:
            return False
        folder = self.run_dir / "checkpoints"
        mine = folder / f"step-{self._held[0]:08d}.pt"
        return mine.is_file() or not any(folder.glob("step-*.pt"))

    def _flush(self) -> None:
        if self._held is not None:
            self._write(*self._held)
            self._held = None

    def _write(self, step: int, logs: Mapping[str, float]) -> None:
        """One evaluation's metrics, `epoch` last: a step whose `epoch` the run holds is whole
        (a file store writes a batch one metric at a time)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        keys = [k for k in logs if k not in ("step", "epoch")] + ["epoch"] * ("epoch" in logs)
        metrics = [Metric(_key(k), float(logs[k]), now, step) for k in keys]
        with _file_store_allowed(self.uri()):
            for i in range(0, len(metrics), 1000):  # MLflow's batch limit
                self._client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        self._done = step

    def close(self) -> None:
        if self._client is None or self.run_id is None:
            return
        error = sys.exc_info()[0]  # on_fit_end runs in the loop's `finally`
        if error is None or self._stays():
            self._flush()  # the last evaluation, where no resume will train it again
        self._held = None
        status = "FINISHED" if error is None else "FAILED"
        if error is not None and issubclass(error, KeyboardInterrupt):
            status = "KILLED"
        with _file_store_allowed(self.uri()):
            self._client.set_terminated(self.run_id, status)
        self._client = None


def _key(name: str) -> str:
    """`name` as an MLflow metric or param key (letters, digits, `_ - . / ` and space)."""
    return _BAD.sub("_", name).strip("/") or "_"


def _is_file_store(uri: str) -> bool:
    """Whether MLflow reads `uri` as a local file store: a `file:` URI or a plain path."""
    scheme = urllib.parse.urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")  # C:\\ drive


@contextlib.contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """Let MLflow open a local file store (MLflow 3 refuses one unless MLFLOW_ALLOW_FILE_STORE
    is set), for polytask's own calls only; the user's setting, where there is one, stands."""
    if not _is_file_store(uri) or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
