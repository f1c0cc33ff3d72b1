import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra (fastapi, uvicorn)")

from fastapi.testclient import TestClient

from polytask.serve._server import Batcher, ServeOptions, create_app

from .conftest import FEATURES

COLUMNS = FEATURES["numeric"] + FEATURES["categorical"]


def _payload(df: pd.DataFrame) -> dict:
    rows = []
    for record in df[COLUMNS].to_dict("records"):
        rows.append({k: (None if isinstance(v, float) and math.isnan(v) else v)
                     for k, v in record.items()})  # fmt: skip
    return {"rows": rows}


def _check_answer(answer: dict, expected: pd.DataFrame) -> None:
    got = pd.DataFrame(answer["predictions"])
    assert list(got.columns) == list(expected.columns)
    for column in expected.columns:
        if expected[column].dtype.kind == "f":
            np.testing.assert_allclose(got[column], expected[column], rtol=1e-6)
        else:
            assert got[column].tolist() == expected[column].tolist()


@pytest.fixture(scope="module")
def client(trained):
    fitted, _ = trained
    with TestClient(create_app(fitted, ServeOptions(max_request_bytes=20_000))) as c:
        yield c


def test_predicts_every_task_or_a_subset(client, trained, rows):
    fitted, _ = trained
    answer = client.post("/predict", json=_payload(rows))
    assert answer.status_code == 200
    assert answer.json()["tasks"] == ["churn", "ltv", "plan"]
    _check_answer(answer.json(), fitted.predict(rows))
    subset = client.post("/predict?tasks=plan,churn", json=_payload(rows.iloc[:3]))
    assert subset.json()["tasks"] == ["churn", "plan"]
    _check_answer(subset.json(), fitted.predict(rows.iloc[:3], tasks=["churn", "plan"]))


def test_health_and_metadata(client):
    assert client.get("/health").json() == {"status": "ok", "tasks": ["churn", "ltv", "plan"]}
    meta = client.get("/metadata").json()
    assert [i["name"] for i in meta["inputs"]] == COLUMNS
    assert meta["inputs"][-1]["type"] == "category" and meta["inputs"][0]["type"] == "number"
    plan = meta["tasks"][2]
    assert plan["classes"] == ["basic", "premium", "standard"]
    assert plan["columns"][:2] == ["plan", "plan_prob_basic"]


GOOD = {c: 0.5 for c in FEATURES["numeric"]} | {"region": "north"}


def _rows(**changes: object) -> bytes:
    return json.dumps({"rows": [GOOD | changes]}).encode()


@pytest.mark.parametrize(
    ("body", "query", "status", "loc", "message"),
    [
        (b"{rows", "", 400, ["body"], "the body is not valid JSON"),
        (b'{"rows": [{"usage_0": 1}]}', "", 422, ["rows", 0, "usage_1"], "'usage_1' is missing"),
        (
            json.dumps(
                {"rows": [{k if k != "age" else "ages": v for k, v in GOOD.items()}]}
            ).encode(),
            "",
            422,
            ["rows", 0, "age"],
            "'age' is missing (the row has 'ages': a misspelling?)",
        ),
        (_rows(age="old"), "", 422, ["rows", 0, "age"], "'age' must be a finite number"),
        (_rows(age=10**400), "", 422, ["rows", 0, "age"], "'age' must be a finite number"),
        (_rows(colour=1), "", 422, ["rows", 0, "colour"], "unknown field 'colour'"),
        (_rows(region=[1]), "", 422, ["rows", 0, "region"], "must be a category"),
        (b'{"rows": []}', "", 422, ["rows"], "at least one row"),
        (b'{"row": []}', "", 422, ["body"], 'must be an object {"rows"'),
        (_rows(), "?tasks=churn,lvt", 400, ["query", "tasks"], "unknown task(s) ['lvt']"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(client, body, query, status, loc, message):
    answer = client.post(f"/predict{query}", content=body)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == loc and message in detail["msg"]


def test_oversized_request_is_refused(client, rows):
    big = _payload(pd.concat([rows] * 10, ignore_index=True))
    answer = client.post("/predict", json=big)
    assert answer.status_code == 413
    assert "larger than 20000 bytes" in answer.json()["error"]


def test_null_is_a_missing_value_and_unseen_category_too(client):
    row = {c: None for c in COLUMNS}
    answer = client.post("/predict", json={"rows": [row, row | {"region": "atlantis"}]})
    assert answer.status_code == 200
    first, second = answer.json()["predictions"]
    assert first == second  # an unseen category is encoded as a missing one


def test_concurrent_requests_run_as_one_batch_with_the_same_answers(trained, rows):
    fitted, _ = trained
    batcher = Batcher(fitted, ServeOptions())
    frames = [rows.iloc[i : i + 4].reset_index(drop=True) for i in range(0, 40, 4)]
    bad = rows.iloc[:2].reset_index(drop=True).copy()
    bad.loc[1, "age"] = 1e300  # refused by the encoding: only its own request fails

    async def ask() -> list:
        return await asyncio.gather(
            *(batcher.predict(f) for f in [*frames, bad]), return_exceptions=True
        )

    answers = asyncio.run(ask())
    batcher.close()
    assert batcher.batches == 1 and batcher.rows == 42
    for frame, answer in zip(frames, answers[:-1], strict=True):
        pd.testing.assert_frame_equal(answer.reset_index(drop=True), fitted.predict(frame))
    assert isinstance(answers[-1], ValueError) and "standard deviations" in str(answers[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
def test_real_server_process_answers_a_real_client(trained, rows, tmp_path):
    fitted, model = trained
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "polytask.cli._main", "serve", str(model), "--port", str(port),
         "--max-request-bytes", "50000"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a loaded machine imports torch slowly
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                    assert json.loads(r.read())["status"] == "ok"
                    break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "the server did not start in 180 s"
                time.sleep(0.5)
        status, answer = _post(f"{base}/predict", json.dumps(_payload(rows)).encode())
        assert status == 200
        _check_answer(answer, fitted.predict(rows))
        status, answer = _post(f"{base}/predict?tasks=ltv", json.dumps(_payload(rows)).encode())
        assert status == 200 and answer["tasks"] == ["ltv"]
        assert _post(f"{base}/predict", b"{nope")[0] == 400
        assert _post(f"{base}/predict", b'{"rows": [{"age": 1}]}')[0] == 422
        assert _post(f"{base}/predict?tasks=x", b"{}")[0] == 400
        huge = json.dumps(_payload(pd.concat([rows] * 20, ignore_index=True))).encode()
        assert _post(f"{base}/predict", huge)[0] == 413

        frames = [rows.iloc[i : i + 5] for i in range(0, 40, 5)] * 4
        with ThreadPoolExecutor(16) as pool:
            results = list(
                pool.map(lambda f: _post(f"{base}/predict", json.dumps(_payload(f)).encode()),
                         frames)
            )  # fmt: skip
        for frame, (status, answer) in zip(frames, results, strict=True):
            assert status == 200
            _check_answer(answer, fitted.predict(frame).reset_index(drop=True))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_an_auxiliary_task_is_not_served(tmp_path, rows):
    from tests.serve.conftest import TASKS, train

    tasks = [*TASKS[:2], {"name": "rec", "kind": "denoising"}]
    fitted = train(tmp_path, tasks=tasks, hidden=[8])
    with TestClient(create_app(fitted)) as c:
        assert c.get("/health").json()["tasks"] == ["churn", "ltv"]
        assert [t["name"] for t in c.get("/metadata").json()["tasks"]] == ["churn", "ltv"]
        assert c.post("/predict", json=_payload(rows.iloc[:2])).json()["tasks"] == ["churn", "ltv"]
        refused = c.post("/predict?tasks=rec", json=_payload(rows.iloc[:2]))
        assert refused.status_code == 400 and "auxiliary" in refused.json()["error"]


def test_answers_turn_blanks_of_every_kind_into_null():
    """NaN in floats and pandas' NA in nullable integers (a binary task's labels with blank
    rows) are JSON null; numbers come back as Python numbers."""
    from polytask.serve._server import _records

    frame = pd.DataFrame({"label": pd.array([1, pd.NA, 0], dtype="Int64"),
                          "prob": [0.9, np.nan, 0.2]})  # fmt: skip
    records = _records(frame, ["label", "prob"])
    assert records == [{"label": 1, "prob": 0.9}, {"label": None, "prob": None},
                       {"label": 0, "prob": 0.2}]  # fmt: skip
    assert json.loads(json.dumps(records)) == records


def test_serve_shares_the_cores_among_its_workers_and_each_worker_sets_its_threads(
    trained, monkeypatch
):
    import torch
    import uvicorn

    from polytask._plugins import IMPORTS_ENV
    from polytask.cli._main import main
    from polytask.serve._server import MODEL_ENV, OPTIONS_ENV, app_from_environment

    _, model = trained
    started: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: started.update(kw))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for env in (MODEL_ENV, OPTIONS_ENV, IMPORTS_ENV):
        monkeypatch.setenv(env, "")  # the command sets them; monkeypatch restores them
    for flags, threads in (([], 8), (["--workers", "3"], 2), (["--threads", "1"], 1),
                           (["--workers", "16"], 1)):  # fmt: skip
        assert main(["-q", "serve", str(model), "--port", str(_free_port()), *flags]) == 0
        assert json.loads(os.environ[OPTIONS_ENV])["threads"] == threads, flags
    assert started["workers"] == 16
    before = torch.get_num_threads()
    try:  # polytask --threads 1 serve also sets the main process's threads
        top = ["-q", "--threads", "1", "serve", str(model), "--port", str(_free_port())]
        assert main(top) == 0  # each worker 1 thread (was ignored: 8)
        assert json.loads(os.environ[OPTIONS_ENV])["threads"] == 1
        assert main([*top, "--threads", "2"]) == 0  # serve's own comes first
        assert json.loads(os.environ[OPTIONS_ENV])["threads"] == 2
    finally:
        torch.set_num_threads(before)
    import logging

    logger = logging.getLogger("polytask")
    handlers, filters = list(logger.handlers), list(logger.filters)
    try:
        monkeypatch.setenv(OPTIONS_ENV, json.dumps({"threads": 2}))
        from fastapi import FastAPI

        assert isinstance(app_from_environment(), FastAPI)
        assert torch.get_num_threads() == 2  # a worker process's own setting
        assert logger.filters == filters  # no filter on the process's logger (the handler's)
    finally:
        torch.set_num_threads(before)
        for handler in [h for h in logger.handlers if h not in handlers]:  # a worker's own
            logger.removeHandler(handler)
    assert os.environ[MODEL_ENV] == str(model.resolve())
    with pytest.raises(ValueError, match="threads must be at least 1"):
        ServeOptions(threads=0)


def test_a_port_in_use_or_out_of_range_is_one_line_before_serving(trained, capsys):
    """Before: 'serving ... on :8767' then uvicorn's tracebacks (exit 1 or 3)."""
    from polytask.cli._main import main

    _, model = trained
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(model), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"error: port {port} on 127.0.0.1 is in use (another server?)" in err
    assert "serving" not in err and "Traceback" not in err
    for port in ("99999", "0"):  # 0: any free port, listening where no one is told
        with pytest.raises(SystemExit) as stop:
            main(["serve", str(model), "--port", port])
        assert stop.value.code == 2
        assert f"must be a port, 1 to 65535, got {port}" in capsys.readouterr().err


def test_outputs_broken_for_every_row_blame_the_model_not_the_rows(trained, rows):
    """A diverged run's weights (about 1e28 each): every row's output is infinite, which the
    rows' features cannot explain (before: 'their features are far outside the training')."""
    import copy

    import torch

    from polytask.data._tabular import DataError

    fitted, _ = trained
    broken = copy.deepcopy(fitted)
    with torch.no_grad():
        for p in broken.model.parameters():
            p.mul_(1e28)
    with pytest.raises(DataError, match="the model, not the rows, is the likely cause") as err:
        broken.predict(rows.head(20))
    assert "its largest weight is" in str(err.value) and "training.lr" in str(err.value)


def test_a_repeated_warning_passes_once_a_minute_then_counts_what_was_held(monkeypatch):
    import logging

    import polytask.serve._server as server

    clock = iter([0.0, 1.0, 2.0, 61.0, 62.0])
    monkeypatch.setattr(server.time, "monotonic", lambda: next(clock))
    repeats = server.Repeats(60.0)

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("polytask", logging.WARNING, __file__, 1, text, (), None)

    passed = [r.getMessage() for r in map(record, ["unseen 'x'"] * 4 + ["other"])
              if repeats.filter(r)]  # fmt: skip
    assert passed == ["unseen 'x'", "unseen 'x' (and 2 more times in 60 s)", "other"]


def test_requests_on_new_event_loops_are_answered(trained, rows):
    """A TestClient used without `with` runs each request on its own event loop: the second
    waited forever on the first loop's queue."""
    import threading

    fitted, _ = trained
    client = TestClient(create_app(fitted))
    codes: list[int] = []

    def ask() -> None:
        for _ in range(3):
            codes.append(client.post("/predict", json=_payload(rows.head(2))).status_code)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive() and codes == [200, 200, 200]


def test_tasks_made_from_a_feature_column_answer_a_new_group_in_their_combined_columns(
    tmp_path,
):
    """With the task column also a feature, a row of a new group has no task of its own:
    FittedModel.predict answers it in the combined columns (the shared part), which the
    server dropped, answering nulls only."""
    from polytask.app import fit, load_prepared
    from polytask.cli._config_io import parse_config

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=300), "grp": rng.choice(["g0", "g1"], 300)})
    frame["b"] = (frame["x"] + rng.normal(size=300) > 0).astype(int)
    frame.to_csv(tmp_path / "g.csv", index=False)
    config = parse_config({
        "data": {"path": str(tmp_path / "g.csv"),
                 "features": {"numeric": ["x"], "categorical": ["grp"]}},
        "tasks": {"from_column": "grp", "target": "b", "kind": "binary"},
        "model": {"architecture": "multilevel"},  # a shared part predicts a new group
        "training": {"optimizer": "lbfgs", "lr": 1.0, "batch_size": 100000, "epochs": 1,
                     "progress": False},
        "output_dir": str(tmp_path / "run"),
    })  # fmt: skip
    fitted = fit(config, load_prepared(config), run_dir=tmp_path / "run")
    rows = [{"x": 0.3, "grp": "g_new"}, {"x": 0.3, "grp": "g1"}]
    with TestClient(create_app(fitted)) as client:
        answer = client.post("/predict", json={"rows": rows}).json()["predictions"]
        assert client.get("/metadata").json()["combined_columns"] == ["b", "b_prob"]
        only = client.post("/predict?tasks=grp_g1", json={"rows": rows}).json()["predictions"]
    want = fitted.predict(pd.DataFrame(rows))
    # a request of new groups only: logged as polytask's (once a minute), without the check
    # meant for a whole file ("no row holds a value ..."), and not as Python's with a source line
    import logging
    import warnings

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    logging.getLogger("polytask").addHandler(keep)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a Python warning escaping the server fails here
            with TestClient(create_app(fitted)) as client:
                new = client.post("/predict", json={"rows": rows[:1]})
    finally:
        logging.getLogger("polytask").removeHandler(keep)
    assert new.status_code == 200
    assert any("hold values no task was made for" in m for m in seen), seen
    assert not any("no row holds a value" in m for m in seen), seen
    assert answer[0]["grp_g1_prob"] is None and 0 < answer[0]["b_prob"] < 1
    assert answer[0]["b_prob"] == pytest.approx(want["b_prob"][0], rel=1e-6)
    assert answer[1]["b_prob"] == pytest.approx(answer[1]["grp_g1_prob"], rel=1e-6)
    assert "b_prob" not in only[0]
