"""Serving cost: one multi-task model against K single-task models answering the same requests.

K tasks (regression and binary, alternating) on generated tabular data: 32 numeric features,
targets drawn from a shared rank-4 structure plus noise. The multi-task model is a hard-sharing
MLP 32 → 256 → 256 with K heads; each single-task model is the same architecture with one head
(what a team deploying one model per task runs). All are trained for one epoch on 4,000 rows:
quality is not the point here, only the cost of answering.

Paths, each answering single-row requests and 64-row batches for every task:

- in-process (torch): `FittedModel.predict` of the one model against the K models' `predict`
  one after the other (the time to have all K answers);
- in-process (onnx): the same through the ONNX exports (`load_exported`, onnxruntime);
- HTTP: one `polytask serve` process against K server processes (one per single-task model), a
  client on persistent connections sending each request to the one server, or to all K servers
  one after the other (sequential) or all at once from K threads (concurrent).

Latency: p50 and p99 per request (for the K models: until the last answer is in), the one model
and the K models measured alternately in the same rounds (their order swapped every round), so
that drifts in machine load hit both alike. Throughput: rows answered (for every task) per
second by one client. Memory: each in-process configuration is loaded in a fresh process whose
resident memory (VmRSS) is read after the imports and again after loading the model(s) and
answering warm-up requests; for HTTP, the sum of the server processes' VmRSS after the timed
requests. Cost = p50 latency × memory (total resident memory); the ratio is K models / one model.
Model processes run one torch thread (OMP_NUM_THREADS=1). Results: benchmarks/results/serving.md
and serving.json.

    python benchmarks/serving.py [--ks 2 8 32] [--http-ks 2 8 32] [--quick] [--no-onnx]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import commit

HERE = Path(__file__).resolve().parent
FEATURES, RANK, TRAIN_ROWS, POOL_ROWS, BATCH = 32, 4, 4000, 2048, 64
HIDDEN = [256, 256]
SIZES = (1, BATCH)
GOAL_K, GOAL = 8, 5.0
START_TIMEOUT = 900  # seconds for every server of one K to answer /health (torch imports)
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------- models and data


def _frame(n: int, k: int, seed: int, targets: bool = True):  # type: ignore[no-untyped-def]
    import pandas as pd

    structure = np.random.default_rng(0)  # the same tasks for every draw of rows
    w = structure.standard_normal((FEATURES, RANK)) @ structure.standard_normal((RANK, k))
    w /= np.sqrt(FEATURES * RANK / 4)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FEATURES))
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(FEATURES)])
    if targets:
        y = x @ w + 0.5 * rng.standard_normal((n, k))
        for t in range(k):
            df[f"t{t}"] = y[:, t] if t % 2 == 0 else (y[:, t] > 0).astype(int)
    return df


def _task_specs(k: int) -> list[dict[str, str]]:
    return [{"name": f"t{t}", "kind": "regression" if t % 2 == 0 else "binary"} for t in range(k)]


def build(work: Path, ks: list[int], onnx: bool, train_rows: int) -> dict[str, Any]:
    """Train the K-task models and the single-task models; export them to ONNX."""
    from polytask.app import fit, load_prepared
    from polytask.cli._config_io import parse_config

    kmax = max(ks)
    _frame(train_rows, kmax, seed=1).to_csv(work / "train.csv", index=False)
    _frame(POOL_ROWS, kmax, seed=2, targets=False).to_csv(work / "requests.csv", index=False)
    config = parse_config(
        {
            "data": {
                "path": str(work / "train.csv"),
                "features": {"numeric": [f"x{i}" for i in range(FEATURES)]},
                "split": {"seed": 0},
            },
            "tasks": _task_specs(kmax),
            "model": {"architecture": "hard_sharing", "hidden": HIDDEN},
            "training": {"epochs": 1, "batch_size": 64, "progress": False, "seed": 0},
            "output_dir": str(work / "runs"),
        }
    )
    data = load_prepared(config)
    paths: dict[str, Any] = {"mtl": {}, "single": []}
    for k in ks:
        fitted = fit(config, data, tasks=data.tasks[:k], run_dir=work / "runs" / f"mtl{k}")
        paths["mtl"][k] = str(fitted.save(work / f"mtl{k}.pt"))
        if onnx:
            _export(fitted, work / "onnx" / f"mtl{k}")
    for t in range(kmax):
        fitted = fit(config, data, tasks=[data.tasks[t]], run_dir=work / "runs" / f"t{t}")
        paths["single"].append(str(fitted.save(work / f"t{t}.pt")))
        if onnx:
            _export(fitted, work / "onnx" / f"t{t}")
    return paths


def _export(fitted: Any, folder: Path) -> None:
    import warnings

    from polytask.serve import export_model

    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        export_model(fitted, folder, "onnx", overwrite=True)


def _onnx_folder(checkpoint: str) -> str:
    path = Path(checkpoint)
    return str(path.parent / "onnx" / path.stem)


def _load(kind: str, checkpoints: list[str]) -> list[Any]:
    if kind == "torch":
        from polytask.app import FittedModel

        models = [FittedModel.load(p) for p in checkpoints]
        for m in models:
            m.model.eval()
        return models
    from polytask.serve import load_exported

    return [load_exported(_onnx_folder(p)) for p in checkpoints]


def _requests(work: Path, size: int, count: int) -> list[Any]:
    """`count` requests of `size` rows from the pool of fresh rows (sliced before timing)."""
    import pandas as pd

    pool = pd.read_csv(work / "requests.csv")
    starts = [(i * size * 7) % (len(pool) - size) for i in range(count)]
    return [pool.iloc[s : s + size].reset_index(drop=True) for s in starts]


# ---------------------------------------------------------------- memory (fresh process each)


def _rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _tree_rss_kb(pid: int) -> int:
    """VmRSS of `pid` and its descendants."""
    total = _rss_kb(pid)
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _tree_rss_kb(int(child))
    return total


def measure_memory(work: Path, kind: str, checkpoints: list[str]) -> dict[str, Any]:
    """In this fresh process: RSS with the imports done, then with the models loaded and warm."""
    import pandas as pd  # noqa: F401
    import torch

    import polytask.app
    import polytask.serve  # noqa: F401

    if kind == "onnx":
        import onnxruntime  # noqa: F401
    torch.set_num_threads(1)
    warm = _requests(work, 1, 3) + _requests(work, BATCH, 3)
    gc.collect()
    before = _rss_kb()
    models = _load(kind, checkpoints)
    for frame in warm:
        for m in models:
            m.predict(frame)
    gc.collect()
    after = _rss_kb()
    if kind == "torch":
        params = sum(
            t.numel() * t.element_size()
            for m in models
            for t in [*m.model.parameters(), *m.model.buffers()]
        )
    else:
        params = sum(
            f.stat().st_size for p in checkpoints for f in Path(_onnx_folder(p)).glob("*.onnx")
        )
    return {"rss_before_mb": before / 1024, "rss_mb": after / 1024, "param_bytes": params}


# ---------------------------------------------------------------- in-process timing


def time_in_process(work: Path, k: int, paths: dict[str, Any], rounds: int, onnx: bool):  # type: ignore[no-untyped-def]
    """Latency samples (ms) per (path, size, side), the one model and the K models alternating."""
    import torch

    torch.set_num_threads(1)
    kinds = ["torch", "onnx"] if onnx else ["torch"]
    sides = {
        kind: {
            "one": _load(kind, [paths["mtl"][str(k)]]),
            "k": _load(kind, paths["single"][:k]),
        }
        for kind in kinds
    }
    samples: dict[str, list[float]] = {}
    for size in SIZES:
        frames = _requests(work, size, rounds + 5)
        for kind, side in sides.items():
            for frame in frames[:5]:  # warm-up
                for m in side["one"] + side["k"]:
                    m.predict(frame)
            one = samples.setdefault(f"{kind}/{size}/one", [])
            many = samples.setdefault(f"{kind}/{size}/k", [])
            for r, frame in enumerate(frames[5:]):
                order = [("one", one), ("k", many)]
                for name, out in order if r % 2 == 0 else order[::-1]:
                    models = side[name]
                    start = time.perf_counter()
                    for m in models:
                        m.predict(frame)
                    out.append((time.perf_counter() - start) * 1000)
    return samples


# ---------------------------------------------------------------- HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, checkpoint: str, logs: Path, name: str) -> None:
        self.port = _free_port()
        self.log = (logs / f"{name}.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "polytask.cli._main", "serve", checkpoint,
             "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **ENV},
        )  # fmt: skip
        self.connection: http.client.HTTPConnection | None = None
        self.name = name
        self.reconnects = 0

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"server {self.name} exited: {Path(self.log.name).read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/health")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def predict(self, body: bytes) -> dict[str, Any]:
        """One request on the kept connection; uvicorn closes connections idle for 5 s, so a
        closed one is opened again (as a client's connection pool does)."""
        for attempt in (0, 1):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            try:
                self.connection.request(
                    "POST", "/predict", body, {"Content-Type": "application/json"}
                )  # fmt: skip
                response = self.connection.getresponse()
                break
            except (ConnectionError, http.client.HTTPException):
                self.connection.close()
                self.connection = None
                self.reconnects += 1
                if attempt:
                    raise
        answer: dict[str, Any] = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {response.status}: {answer}")
        return answer

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.log.close()


def start_servers(work: Path, k: int, paths: dict[str, Any]) -> list[Server]:
    """The one model's server and the K models' servers, started together."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    servers: list[Server] = []
    try:
        servers.append(Server(paths["mtl"][str(k)], logs, f"mtl{k}"))
        for t, p in enumerate(paths["single"][:k]):
            servers.append(Server(p, logs, f"k{k}-t{t}"))
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


def time_http(work: Path, servers: list[Server], started: float, rounds: int) -> dict[str, Any]:
    """Latency samples of `servers` (the one model's first), which this stops at the end."""
    k = len(servers) - 1
    try:
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(servers)
        while waiting:
            waiting = [s for s in waiting if not s.healthy()]
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"{len(waiting)} server(s) did not start in {START_TIMEOUT} s")
            if waiting:
                time.sleep(0.5)
        start_seconds = time.perf_counter() - started
        one, many = servers[0], servers[1:]
        samples: dict[str, list[float]] = {}
        with ThreadPoolExecutor(k) as pool:
            for size in SIZES:
                frames = _requests(work, size, rounds + 5)
                bodies = [
                    json.dumps({"rows": f.to_dict(orient="records")}).encode() for f in frames
                ]
                for body in bodies[:5]:  # warm-up
                    for s in servers:
                        s.predict(body)
                names = ["one", "k", "k_concurrent"]
                for r, body in enumerate(bodies[5:]):
                    for name in names if r % 2 == 0 else names[::-1]:
                        start = time.perf_counter()
                        if name == "one":
                            one.predict(body)
                        elif name == "k":
                            for s in many:
                                s.predict(body)
                        else:
                            list(pool.map(Server.predict, many, [body] * k))
                        samples.setdefault(f"http/{size}/{name}", []).append(
                            (time.perf_counter() - start) * 1000
                        )
        rss = [_tree_rss_kb(s.process.pid) / 1024 for s in servers]
        reconnects = sum(s.reconnects for s in servers)
        return {
            "samples": samples,
            "rss_one_mb": rss[0],
            "rss_k_mb": sum(rss[1:]),
            "rss_k_each_mb": rss[1:],
            "start_seconds": start_seconds,
            "reconnects": reconnects,
        }
    finally:
        for s in servers:
            s.stop()


# ---------------------------------------------------------------- orchestration and report


def _child(args: list[str], timeout: float = 3600) -> Any:
    done = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stats(values: list[float], size: int) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "rows_per_s": size * 1000 / float(a.mean()),
        "n": len(a),
    }


def _rounds(k: int, quick: bool) -> int:
    return 15 if quick else max(40, 400 // k)


def _machine() -> dict[str, Any]:
    import torch

    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{int(mem) / 2**20:.0f} GiB, {platform.platform()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _phase(phases: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    phases[name] = now - since
    return now


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    machine = _machine()  # the commit measured, before the results are written
    started = phase = time.perf_counter()
    phases: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="polytask-serving-") as tmp:
        work = Path(tmp)
        print(f"training models for K = {args.ks} ...", file=sys.stderr, flush=True)
        paths = build(work, args.ks, args.onnx, 1000 if args.quick else TRAIN_ROWS)
        phase = _phase(phases, "training" + (" and ONNX export" if args.onnx else ""), phase)
        paths = json.loads(json.dumps(paths))  # K keys as text, as the children see them
        (work / "paths.json").write_text(json.dumps(paths))
        kinds = ["torch", "onnx"] if args.onnx else ["torch"]
        # --quick: the servers start while the in-process figures are measured (a smoke run)
        early = {
            k: (start_servers(work, k, paths), time.perf_counter())
            for k in (args.http_ks if args.quick else [])
        }
        try:
            for k in args.ks:
                print(f"K = {k}: memory and in-process latency ...", file=sys.stderr, flush=True)
                # resident memory does not depend on the machine's load: two processes at a time
                configs = [
                    (kind, side, checkpoints)
                    for kind in kinds
                    for side, checkpoints in (
                        ("one", [paths["mtl"][str(k)]]), ("k", paths["single"][:k])
                    )
                ]  # fmt: skip
                with ThreadPoolExecutor(2) as pool:
                    measured = pool.map(
                        lambda c: _child(["--memory-of", c[0], str(work), *c[2]]), configs
                    )
                    memory = {
                        (kind, side): m
                        for (kind, side, _), m in zip(configs, measured, strict=True)
                    }
                phase = _phase(phases, f"K = {k}: memory", phase)
                samples = _child(
                    ["--time-k", str(k), str(work), str(_rounds(k, args.quick)),
                     *(["--no-onnx"] if not args.onnx else [])]
                )  # fmt: skip
                phase = _phase(phases, f"K = {k}: in-process latency", phase)
                for kind in kinds:
                    for size in SIZES:
                        for side in ("one", "k"):
                            m = memory[kind, side]
                            rows.append({
                                "k": k, "path": f"in-process ({kind})", "rows": size, "side": side,
                                **_stats(samples[f"{kind}/{size}/{side}"], size),
                                "rss_mb": m["rss_mb"], "rss_increment_mb": m["rss_mb"]
                                - m["rss_before_mb"], "param_bytes": m["param_bytes"],
                            })  # fmt: skip
                if k in args.http_ks:
                    print(f"K = {k}: HTTP ({k + 1} servers) ...", file=sys.stderr, flush=True)
                    if k in early:
                        servers, started_at = early.pop(k)
                    else:
                        servers, started_at = start_servers(work, k, paths), time.perf_counter()
                    try:
                        result = time_http(work, servers, started_at, _rounds(k, args.quick))
                    except Exception as err:  # the in-process figures are kept
                        notes.append(f"HTTP at K = {k} not measured: {err}")
                        print(notes[-1], file=sys.stderr)
                        continue
                    finally:
                        phase = _phase(phases, f"K = {k}: HTTP", phase)
                    notes.append(
                        f"HTTP K = {k}: the {k + 1} servers took {result['start_seconds']:.0f} s "
                        f"to start together; the client reopened {result['reconnects']} "
                        "connection(s) that the servers had closed after 5 s idle."
                    )
                    for size in SIZES:
                        for side in ("one", "k", "k_concurrent"):
                            rows.append({
                                "k": k, "path": "HTTP" if side != "k_concurrent"
                                else "HTTP, K requests concurrent", "rows": size,
                                "side": "one" if side == "one" else "k",
                                **_stats(result["samples"][f"http/{size}/{side}"], size),
                                "rss_mb": result["rss_one_mb" if side == "one" else "rss_k_mb"],
                            })  # fmt: skip
                    # the concurrent path compares with the same one-model figures
                    for size in SIZES:
                        one = next(
                            r for r in rows
                            if r["k"] == k and r["path"] == "HTTP" and r["rows"] == size
                            and r["side"] == "one"
                        )  # fmt: skip
                        rows.append({**one, "path": "HTTP, K requests concurrent"})
        finally:
            for servers, _ in early.values():
                for s in servers:
                    s.stop()
    for r in rows:
        r["cost"] = r["p50_ms"] * r["rss_mb"] / 1024  # ms × GB
    for r in rows:
        if r["side"] == "k":
            one = next(
                o for o in rows
                if o["side"] == "one" and o["k"] == r["k"] and o["path"] == r["path"]
                and o["rows"] == r["rows"]
            )  # fmt: skip
            r["latency_ratio"] = r["p50_ms"] / one["p50_ms"]
            r["memory_ratio"] = r["rss_mb"] / one["rss_mb"]
            r["cost_ratio"] = r["cost"] / one["cost"]
            if "rss_increment_mb" in r:
                r["cost_ratio_increment"] = (
                    r["p50_ms"] * r["rss_increment_mb"] / (one["p50_ms"] * one["rss_increment_mb"])
                )
    return {
        **machine,
        "command": shlex.join(["python", "benchmarks/serving.py", *sys.argv[1:]]),
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "seconds": time.perf_counter() - started,
        "phases": phases,
        "ks": args.ks,
        "http_ks": args.http_ks,
        "quick": args.quick,
        "rows": rows,
        "notes": notes,
    }


def _order(r: dict[str, Any]) -> tuple[Any, ...]:
    paths = ["in-process (torch)", "in-process (onnx)", "HTTP", "HTTP, K requests concurrent"]
    return (r["k"], paths.index(r["path"]), r["rows"], r["side"] != "one")


def report(result: dict[str, Any]) -> str:
    rows = sorted(result["rows"], key=_order)
    phases = ", ".join(f"{name} {s:.0f} s" for name, s in result["phases"].items())
    load = ", ".join(f"{x:.2f}" for x in result["load_start"])
    load_end = ", ".join(f"{x:.2f}" for x in result["load_end"])
    lines = [
        "# Serving cost: one multi-task model against K single-task models",
        "",
        f"Commit {result['commit']}, {result['date']}; {result['machine']}; Python "
        f"{result['python']}, torch {result['torch']}. Load average (1, 5, 15 min) "
        f"{load} at the start, {load_end} at the end (a shared machine: compare the one model "
        f"and the K models within a K, which were measured in the same rounds). Run took "
        f"{result['seconds'] / 60:.1f} min ({phases}). "
        f"Regenerate: `make bench-serving` (`{result['command']}`).",
        "",
        f"K tasks (regression and binary alternating) on {FEATURES} numeric features with "
        f"targets from a shared rank-{RANK} structure; the one model is a hard-sharing MLP "
        f"{FEATURES}→{'→'.join(map(str, HIDDEN))} with K heads, each of the K models the same "
        "MLP with one head. Trained one epoch on "
        f"{1000 if result['quick'] else TRAIN_ROWS:,} rows (the quality is not the point). "
        "Requests: one row, or "
        f"{BATCH} rows, asking every task; for the K models the latency is until all K answers "
        "are in (in-process and HTTP: one model after the other; HTTP concurrent: the K "
        "requests sent at once from K client threads). The one model and the K models were "
        "timed alternately in the same rounds (order swapped each round); n requests each "
        "(p99 of fewer than 100 requests is close to the maximum). Throughput: rows answered "
        "(for every task) per second by one client. Model processes use one torch thread "
        "(OMP_NUM_THREADS=1; onnxruntime keeps its default threads).",
        "",
        "Memory: in-process, each configuration loaded in a fresh process: total VmRSS after "
        "loading the model(s) and answering warm-up requests, and the increment over the same "
        "process with torch, polytask (and onnxruntime) imported; HTTP: the sum of the server "
        "processes' VmRSS after the timed requests (`polytask serve`, one uvicorn worker each, "
        "on localhost; the client keeps one connection per server). Cost = p50 × total memory "
        "(ms·GB); ratio = K models / one model (≥ 1: the one model is cheaper).",
        "",
        "| K | path | rows/request | served by | n | p50 ms | p99 ms | rows/s | memory MB "
        "| increment MB | parameters kB | cost ms·GB | cost ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        who = "1 model" if r["side"] == "one" else f"{r['k']} models"
        inc = f"{r['rss_increment_mb']:.1f}" if "rss_increment_mb" in r else ""
        params = f"{r['param_bytes'] / 1e3:,.0f}" if "param_bytes" in r else ""
        ratio = f"**{r['cost_ratio']:.1f}×**" if "cost_ratio" in r else ""
        lines.append(
            f"| {r['k']} | {r['path']} | {r['rows']} | {who} | {r['n']} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['rows_per_s']:,.0f} | {r['rss_mb']:,.0f} | {inc} "
            f"| {params} | {r['cost']:.2f} | {ratio} |"
        )
    lines += [
        "",
        "## Ratios (K models / one model)",
        "",
        "| K | path | rows/request | latency × | memory × | cost × | cost × (memory increment) "
        f"| goal ≥ {GOAL:g}× at K = {GOAL_K} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["side"] != "k":
            continue
        inc = f"{r['cost_ratio_increment']:.1f}" if "cost_ratio_increment" in r else ""
        goal = ""
        if r["k"] == GOAL_K:
            goal = "met" if r["cost_ratio"] >= GOAL else "**not met**"
        lines.append(
            f"| {r['k']} | {r['path']} | {r['rows']} | {r['latency_ratio']:.1f} "
            f"| {r['memory_ratio']:.2f} | {r['cost_ratio']:.1f} | {inc} | {goal} |"
        )
    if result["notes"]:
        lines += ["", *(f"- {n}" for n in result["notes"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--http-ks", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--quick", action="store_true", help="smoke run: K = 2, few requests")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false")
    parser.add_argument("--out", default=str(HERE / "results/serving.md"), help="(and .json)")
    parser.add_argument("--memory-of", nargs="+", help=argparse.SUPPRESS)  # kind work paths...
    parser.add_argument("--time-k", nargs=3, help=argparse.SUPPRESS)  # k work rounds
    args = parser.parse_args()
    if args.memory_of:
        kind, work, *checkpoints = args.memory_of
        print(json.dumps(measure_memory(Path(work), kind, checkpoints)))
        return
    if args.time_k:
        k, work, rounds = args.time_k
        paths = json.loads((Path(work) / "paths.json").read_text())
        print(json.dumps(time_in_process(Path(work), int(k), paths, int(rounds), args.onnx)))
        return
    if args.quick:
        args.ks, args.http_ks, args.onnx = [2], [2], False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        args.onnx = False
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(result))
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(report(result))
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
