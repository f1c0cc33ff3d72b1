"""Data-loading workers: the same run as without them, and a clean stop on Ctrl-C (no traceback,
no process left behind, exit code 130, then an exact resume from the newest checkpoint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer


def _sources(seed: int) -> dict[str, TaskData]:
    g = torch.Generator().manual_seed(seed)

    def part(n: int, task: str) -> TaskData:
        x = torch.randn(n, 5, generator=g)
        return TaskData(
            x, {task: x[:, 0] * (1 if task == "a" else -1) + torch.randn(n, generator=g)}
        )

    return {"a": part(200, "a"), "b": part(50, "b")}


def _train(num_workers: int, schedule: str) -> tuple[dict[str, torch.Tensor], list[dict]]:
    torch.manual_seed(0)
    tasks = [Task("a", "regression"), Task("b", "regression")]
    model = hard_sharing_mlp(5, tasks, hidden=(16,), dropout=0.2)
    config = TrainConfig(epochs=None, steps=30, eval_every=7, batch_size=16, progress=False,
                         patience=None, schedule=schedule, num_workers=num_workers)  # fmt: skip
    trainer = Trainer(model, make_balancer("dwa"), config)
    history = trainer.fit(_sources(0), _sources(1))
    return trainer.model.state_dict(), history


@pytest.mark.parametrize("schedule", ["temperature", "dynamic"])
def test_worker_processes_give_the_same_run(schedule):
    alone, history_alone = _train(0, schedule)
    workers, history_workers = _train(2, schedule)
    for name in alone:
        assert torch.equal(alone[name], workers[name]), name
    assert [_untimed(h) for h in history_alone] == [_untimed(h) for h in history_workers]


def _untimed(logs: dict) -> dict:
    """The logs without wall-clock figures (time/step_ms, time/monitor_ms); NaN (a task no
    step of the window labelled) as text, so that equal logs compare equal."""
    return {k: "nan" if v != v else v for k, v in logs.items() if not k.startswith("time/")}


CONFIG = {
    "data": {"builtin": "customers", "options": {"n": 3000, "seed": 0}},
    "tasks": [{"name": "churn", "kind": "binary"}, {"name": "ltv", "kind": "regression"}],
    "model": {"hidden": [32, 32], "dropout": 0.1},
    "balancer": {"name": "dwa"},
    "training": {"epochs": None, "steps": 600, "eval_every": 100, "batch_size": 32,
                 "patience": None, "progress": False, "num_workers": 2, "keep_last": 2},
}  # fmt: skip


def _as_a_terminal_job() -> None:
    """In the child before exec: SIGINT handled by default, as in a terminal's foreground job.
    A process that inherits SIGINT ignored (a background job of a non-interactive shell, as
    CI runners start their commands) keeps ignoring it: Python then installs no Ctrl-C handler,
    and the run went on to exit 0 (issue 20 item 17)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --no-report: the report's plots take seconds, and tests/report checks them
    command = [sys.executable, "-m", "polytask.cli._main", "train", str(config), "--out", str(out),
               "--no-report"]  # fmt: skip
    return subprocess.Popen(
        [*command, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=_as_a_terminal_job,
    )  # fmt: skip


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_ctrl_c_with_workers_stops_cleanly_and_resumes_exactly(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    whole = _cli(config, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read().decode()[-2000:]

    run = tmp_path / "interrupted"
    job = _cli(config, run)
    deadline = time.time() + 120
    while not list((run / "checkpoints").glob("step-*.pt")) and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert job.poll() is None, "the run ended before the interrupt: give it more steps"
    os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    stderr = job.stderr.read().decode()
    assert job.wait(timeout=60) == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "warning: interrupted at step" in stderr and "--resume" in stderr, stderr
    assert _group_gone(job.pid, timeout=10), "a data worker outlived the interrupted run"
    assert not (run / "model.pt").exists()

    resumed = _cli(config, run, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["model"]
    b = torch.load(run / "model.pt", weights_only=True)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_the_resume_command_of_a_torchrun_job_is_a_torchrun_command(tmp_path, monkeypatch):
    """Found by a scale trial: a stopped 2-process job said `polytask train CONFIG --resume`,
    which resumes it in one process (the same run only up to rounding)."""
    from types import SimpleNamespace

    from polytask._audience import command_line

    trainer = Trainer(hard_sharing_mlp(3, [Task("a", "regression")]), make_balancer("ew"),
                      TrainConfig(progress=False), run_dir=tmp_path)  # fmt: skip
    (tmp_path / "checkpoints").mkdir()
    trainer.save(tmp_path / "checkpoints" / "step-00000001.pt")
    with command_line("train"):
        assert "`polytask train CONFIG --resume`" in trainer._interrupted(KeyboardInterrupt())
        trainer.processes = SimpleNamespace(world_size=2)  # type: ignore[assignment]
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        said = trainer._interrupted(KeyboardInterrupt())
        assert "`torchrun --nproc-per-node 2 -m polytask train CONFIG --resume`" in said
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # two machines, one process each
        said = trainer._interrupted(KeyboardInterrupt())
        assert "`torchrun (launched as before) -m polytask train CONFIG --resume`" in said


def test_nccl_in_one_cpu_process_is_said(caplog):
    """Found by a scale trial: `dist_backend: nccl` on a CPU was taken without a word in one
    process, and refused only once the same config ran under torchrun."""
    with caplog.at_level("WARNING", logger="polytask"):
        Trainer(hard_sharing_mlp(3, [Task("a", "regression")]), make_balancer("ew"),
                TrainConfig(progress=False, dist_backend="nccl"))  # fmt: skip
    assert "dist_backend nccl needs CUDA GPUs" in caplog.text
