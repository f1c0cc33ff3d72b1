"""A Trainer's whole state on disk: save, load, resume, and the check that a checkpoint was
written by this run (same model, tasks, balancer and settings)."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from polytask._audience import for_user
from polytask._version import __version__
from polytask.balancers._base import Balancer
from polytask.train._callbacks import latest_checkpoint
from polytask.train._checkpoint import (
    CheckpointError,
    describe_state_mismatch,
    load_checkpoint,
    run_differences,
    save_checkpoint,
)

if TYPE_CHECKING:
    from polytask.tasks._task import Task
    from polytask.train._loop import Trainer

log = logging.getLogger("polytask")
RESUMED = (
    "sampler",
    "early_stopping",
    "rng",
    "cuda_rng",
    "relations",
    "meta",
    "loss_scale",
    "lr_schedule",
)
"""States restored when `fit` starts (the sampler and early stopping exist only then)."""


def run_settings(trainer: Trainer) -> dict[str, Any]:
    """What makes this run this run (recorded in checkpoints, compared on resume): model
    class, tasks, balancer, training settings and the run metadata the Trainer was given."""
    return {
        "model": type(trainer.model).__name__,
        "tasks": list(trainer.model.task_names),
        "balancer": type(trainer.balancer).__name__,
        "balancer_params": balancer_settings(trainer.balancer),
        "task_settings": {t.name: task_settings(t) for t in trainer.tasks},
        "training": dataclasses.asdict(trainer.config),
        **trainer.run_meta,
    }


def balancer_settings(balancer: Balancer) -> dict[str, Any]:
    """The balancer's constructor parameters it keeps under their own names, as JSON values
    (DWA's temperature, CAGrad's c; a wrapped balancer's, e.g. under auxiliary gradients, as
    its class and parameters), so that a resume with others is refused."""
    out: dict[str, Any] = {}
    for name in inspect.signature(type(balancer)).parameters:
        value = getattr(balancer, name, callable)  # a method of that name: not a setting
        if value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        elif isinstance(value, Balancer):
            out[name] = {"class": type(value).__name__, **balancer_settings(value)}
    return out


def task_settings(task: Task) -> dict[str, Any]:
    """A task's settings as JSON values (a custom loss or metric by its class), compared on
    resume: another loss, primary metric or auxiliary flag would make another run."""
    return {
        f.name: _plain(getattr(task, f.name))
        for f in dataclasses.fields(task)
        if f.name not in ("name", "head")  # the head: its weights' shapes are checked on load
    }


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    kind = value if isinstance(value, type) else type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def save_state(trainer: Trainer, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Checkpoint model, optimizer, balancer, sampler, early-stopping, RNG and meta-learning
    state and the meta head init, with JSON metadata (step, epoch, history, skipped steps, run
    settings)."""
    states: dict[str, Any] = {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "balancer": trainer.balancer.state_dict(),
    }
    if trainer.sampler is not None:
        states["sampler"] = trainer.sampler.state_dict()
    if trainer.stopper is not None:
        states["early_stopping"] = trainer.stopper.state_dict()
    if trainer.relations.active:
        states["relations"] = trainer.relations.state_dict()
    if trainer.meta is not None:
        states["meta"] = trainer.meta.state_dict()
    if trainer.meta_init:
        states["meta_init"] = trainer.meta_init
    if trainer.loss_scale is not None:
        states["loss_scale"] = trainer.loss_scale.state_dict()
    if trainer.lr_schedule is not None and trainer.lr_schedule.scheduler is not None:
        states["lr_schedule"] = trainer.lr_schedule.state_dict()
    states["rng"] = torch.get_rng_state()  # dropout draws continue where they were
    if trainer.device.type == "cuda":  # and on the GPU, those drawn on it (masks, RLW's)
        states["cuda_rng"] = torch.cuda.get_rng_state(trainer.device)
    info = {"step": trainer.step, "epoch": trainer.epoch, "history": trainer.history,
            "weights_step": trainer.best_step or trainer.step,  # a restored best evaluation's
            "skipped": trainer.skipped, "run": run_settings(trainer),
            "selected": trainer.selected, "alerts": trainer.alerts,
            "torch_version": torch.__version__}  # fmt: skip
    return save_checkpoint(path, states, {**info, **trainer.checkpoint_meta, **(meta or {})})


def load_state(trainer: Trainer, path: str | Path, strict: bool = True) -> dict[str, Any]:
    """Restore model, optimizer and balancer state and the counters; returns the metadata and
    keeps the states that `fit` restores when it starts (`RESUMED`)."""
    states, meta = load_checkpoint(path)
    _check_compatible(trainer, path, meta, strict)
    try:
        trainer.model.load_state_dict(states["model"])
        trainer.optimizer.load_state_dict(states["optimizer"])
        trainer.balancer.load_state_dict(states["balancer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"{path} does not fit this model, optimizer or balancer "
            f"({describe_state_mismatch(err)}); load it with the settings that wrote it"
        ) from None
    trainer.resumed = {k: states.get(k) for k in RESUMED}
    # a checkpoint without one (trained plainly): the mean of the heads just loaded, as a
    # meta-learning Trainer starts, not of the heads it was built with
    fresh = trainer.meta.setup(trainer.model) if trainer.meta is not None else {}
    trainer.meta_init = {
        key: [t.to(trainer.device) for t in tensors]
        for key, tensors in states.get("meta_init", fresh).items()
    }
    trainer.skipped = dict(meta.get("skipped", {}))
    trainer.step, trainer.epoch = int(meta.get("step", 0)), int(meta.get("epoch", 0))
    trainer.history = list(meta.get("history", []))
    trainer.selected = dict(meta.get("selected", {}))
    trainer.alerts = list(meta.get("alerts", []))
    return meta


def resume_state(trainer: Trainer, run_dir: str | Path, strict: bool = True) -> Path | None:
    """Load the newest checkpoint in RUN_DIR/checkpoints (None when there is none)."""
    path = latest_checkpoint(Path(run_dir) / "checkpoints")
    if path is not None:
        try:
            load_state(trainer, path, strict=strict)
        except CheckpointError as err:
            older = sorted(path.parent.glob("step-*.pt"))[:-1]
            if "damaged" not in str(err) or not older:
                raise
            raise CheckpointError(
                f"{err}. An earlier checkpoint is there, {older[-1]}: move the damaged one out "
                "of the folder to resume from it"
            ) from None
    return path


def _check_compatible(
    trainer: Trainer, path: str | Path, meta: dict[str, Any], strict: bool
) -> None:
    versions = [
        f"{name} {saved} (now {now})"
        for name, saved, now in (
            ("polytask", meta.get("polytask_version"), __version__),
            ("torch", meta.get("torch_version", torch.__version__), torch.__version__),
        )
        if saved != now
    ]
    if versions:
        log.warning(
            "%s was written with %s: it loads, but a resumed run may not be bit-identical",
            path,
            ", ".join(versions),
        )
    if "run" not in meta:
        return
    differences = run_differences(meta["run"], run_settings(trainer))
    if not differences:
        return
    message = f"{path} was written by a different run: " + "; ".join(differences)
    if strict:
        raise CheckpointError(
            f"{message}. "
            + for_user(
                "Resume with the settings that wrote it, train into a new run folder, or pass "
                "strict=False to load it anyway",
                "Resume with the config and data that wrote it, or start a new run: --overwrite "
                "replaces the old one, or train into another folder (--out)",
            )
        )
    log.warning("%s; loading it anyway (strict=False)", message)
