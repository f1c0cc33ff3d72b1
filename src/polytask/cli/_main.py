"""The `polytask` command line: demo, train, compare, analyze, predict, export, serve, adapt,
edit.

Only the standard library, rich and the package's light modules are imported up front: torch,
scikit-learn and scipy load when a command runs, so `--help` and `--version` answer at once."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import io
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.console import Console

from polytask._audience import command_line
from polytask._files import (
    DiskFullError,
    disk_full,
    json_text,
    require_file,
    strict_json,
    write_bytes_atomic,
    write_text_atomic,
)
from polytask._signals import Terminated, terminate_as_interrupt
from polytask._version import __version__
from polytask.cli._adapt import add_parsers as add_adapt_parsers
from polytask.cli._report import add_report_parser
from polytask.cli._serve import add_parsers as add_serving_parsers

if TYPE_CHECKING:
    import pandas as pd

    from polytask.app import FittedModel, PreparedData, RunConfig
    from polytask.models import MultiTaskNet

EXIT_USAGE = 2
EXIT_TERMINATED = 143
"""128 + SIGTERM, as a shell reports a process that SIGTERM ended."""
DEMO_MIN_CUSTOMERS = 500
"""The demo's smallest data set: its plan task labels 1 customer in 12, and each split part
needs enough of them to measure it (500: about 11 in the test rows)."""


def retain_freed_memory() -> bool:
    """See `polytask.train.retain_freed_memory` (imported when a command runs)."""
    from polytask.train._allocator import retain_freed_memory as retain

    return retain()


TRAINING_COMMANDS = ("demo", "train", "compare", "tune", "analyze")
"""The commands that train, for which a busy machine's advice is worth a line."""


BUSY_HINT_ENV = "POLYTASK_BUSY_HINT"
"""Set to 0: no advice about a busy machine (e.g. for scripts that compare stderr)."""


def _busy_machine() -> str | None:
    """Advice when other work keeps the cores busy (load average at or above their count):
    PyTorch's threads then wait for each other, and one thread is often many times faster."""
    if os.environ.get(BUSY_HINT_ENV) == "0":
        return None
    try:
        load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on this platform
        return None
    if cores < 2 or load < cores:
        return None
    return (f"the machine is busy (load average {load:.1f} on {cores} cores): if steps are slow, "
            "`polytask --threads 1 ...` is often many times faster")  # fmt: skip


def _status(args: argparse.Namespace, message: str) -> None:
    """A short line on stderr about what the command is doing (none with -q)."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _data_source(config: RunConfig) -> str:
    data = config.data
    if data.images is not None:
        return f"the images of {data.images.location}"
    if data.text is not None:
        return f"the texts of {data.text.path}"
    if data.audio is not None:
        return f"the audio files of {data.audio.manifest}"
    if data.molecules is not None:
        return f"the molecules of {data.molecules.path}"
    if data.sources is not None:
        return ", ".join(s.path for s in data.sources)
    if data.builtin is not None:
        return f"the built-in {data.builtin} generator"
    return str(data.path)


def _load_data(args: argparse.Namespace, config: RunConfig) -> PreparedData:
    from polytask.app import load_prepared

    _status(args, f"loading data from {_data_source(config)}")
    data = load_prepared(config)
    _status(args, data.describe())
    return data


def _compare(config: RunConfig, seeds: int, console: Console, args: argparse.Namespace) -> None:
    baseline = _baseline_config(config, getattr(args, "baseline_config", None))
    single = _single_task_settings(baseline, getattr(args, "baseline_config", None))
    data = _compare_data(args, config, console, single, plain=True)
    from polytask.analysis._baselines import compare_with_single_task
    from polytask.cli._render import classic_table, comparison_table

    out = Path(config.output_dir)
    stale = sorted(p.name for p in out.glob("seed*")
                   if p.is_dir() and p.name[4:].isdigit() and int(p.name[4:]) >= seeds)  # fmt: skip
    for name in stale:  # their models would pass for this comparison's
        shutil.rmtree(out / name)
    if stale:
        console.print(f"removed {', '.join(stale)} from {out}: an earlier comparison's seeds "
                      f"beyond these {seeds}")  # fmt: skip
    by = f"; single-task models with {args.baseline_config}'s settings" if baseline else ""
    _status(args, f"training {seeds} seed(s) into {out}{by}")
    result = compare_with_single_task(
        config, data, list(range(seeds)), run_dir=out, baseline=baseline,
        keep_models=getattr(args, "keep_models", False),
    )  # fmt: skip
    from polytask.analysis._classic import constant_scores

    result.constant = constant_scores(data)
    result.single_task_settings = single
    if getattr(args, "classic", True):
        from polytask.analysis._classic import classic_baselines, takes_rows

        if takes_rows(data):
            _status(args, "fitting the classic baselines (settings by CV on the training rows; "
                          "boosting can take minutes a task on a busy machine: --no-classic "
                          "skips them)")  # fmt: skip
        classic = classic_baselines(data, seed=config.training.seed)
        result.classic, result.classic_seconds = classic.metrics, classic.seconds
        result.classic_pooled = classic.pooled
        result.classic_notes = [f"{t}: {why}" for t, why in classic.skipped.items()]
        result.classic_notes += classic.notes
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "compare.json")
    console.print(comparison_table(result))
    if result.classic:
        console.print(classic_table(result))
    elif result.classic_notes:  # every task skipped: say why rather than show nothing
        console.print("classic baselines: none fitted (" + "; ".join(
            dict.fromkeys(n.split(": ", 1)[-1] for n in result.classic_notes)) + ")")  # fmt: skip
    if single is not None:
        console.print(f"single-task models: the model and training settings of {single['file']} "
                      "(--baseline-config; recorded in compare.json)")  # fmt: skip
    console.print(f"results: {out / 'compare.json'}")
    if getattr(args, "keep_models", False):
        console.print(f"models: {out}/seed*/mtl/model.pt and seed*/stl_TASK/model.pt (each "
                      "single-task model predicts and serves on its own)")  # fmt: skip


def _baseline_config(config: RunConfig, path: str | None) -> RunConfig | None:
    """`compare --baseline-config FILE`: its model and training settings for the single-task
    models; refused unless its data and tasks are the config's (the same rows and targets)."""
    if path is None:
        return None
    from polytask.cli._config_io import ConfigError, load_config

    baseline = load_config(path)
    differ = [k for k in ("data", "tasks") if getattr(baseline, k) != getattr(config, k)]
    if differ:
        raise ConfigError(
            f"--baseline-config {path}: its {' and '.join(differ)} differ from the config's; "
            "only model, balancer and training may differ (write it with polytask tune "
            "--single-task)"
        )
    if baseline.model.ensemble != config.model.ensemble:
        logging.getLogger("polytask").warning(
            "--baseline-config %s: its single-task models are ensembles of %d, the multi-task "
            "model of %d: not the same budget", path, baseline.model.ensemble,
            config.model.ensemble,
        )  # fmt: skip
    return baseline


def cmd_demo(args: argparse.Namespace, console: Console) -> None:
    console.print(
        "[bold]polytask demo[/bold]: synthetic customers; tasks churn (binary), lifetime value "
        "(regression) and plan (3 classes, 8% labelled); one shared model vs one model per task"
    )
    from polytask.cli._demo import demo_config

    config = _quieted(args, demo_config(n=args.n, epochs=args.epochs, output_dir=args.out))
    out = Path(args.out)
    if not args.overwrite and out.is_dir() and any(out.iterdir()) and not _holds_demo(out):
        raise ValueError(
            f"{out} holds files that are not an earlier demo's: --overwrite replaces what the "
            "demo writes there, or give the demo another folder (--out)"
        )
    args.overwrite = True  # an earlier demo, of any size, is the demo's to replace
    _compare(config, args.seeds, console, args)


def _holds_demo(out: Path) -> bool:
    """Whether `out`'s recorded config is a demo's (`demo_config` of any size and epochs)."""
    from polytask.cli._demo import demo_config

    try:
        recorded = json.loads((out / COMPARED).read_text())
        size, epochs = int(recorded["data"]["options"]["n"]), int(recorded["training"]["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return _recorded_differs(out, demo_config(n=size, epochs=epochs, output_dir="")) is False


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    """The YAML config, with `--out` overriding its output_dir."""
    from polytask.cli._config_io import load_config

    config = load_config(args.config)
    config = dataclasses.replace(config, output_dir=args.out) if args.out else config
    args.run_dir = config.output_dir  # where it writes, for the messages
    return _quieted(args, config)


def _quieted(args: argparse.Namespace, config: RunConfig) -> RunConfig:
    """With -q, no progress bar or per-epoch lines either (results, warnings and errors only)."""
    if not getattr(args, "quiet", False) or not config.training.progress:
        return config
    return dataclasses.replace(
        config, training=dataclasses.replace(config.training, progress=False)
    )


SPLIT_FILE = "split.npz"
"""The rows of each part a run trained, validated and was tested on (`_write_split`)."""
RUN_FILES = ("model.pt", "best.pt", "last_good.pt", "metrics.csv", "metrics.json",
             "test_metrics.json", "relations.json", "mlflow_run.json",
             "blend_members.json", SPLIT_FILE)  # fmt: skip
"""What a training run writes into its folder besides checkpoints/ (and report.html, which
`compare` writes too, so it is no sign of a run: --overwrite removes it, the run rewrites it)."""
RUN_FOLDERS = ("tensorboard", "mlruns", "export")
"""Folders of a run's loggers and exports, which --overwrite removes with the run."""


def _write_split(path: Path, data: PreparedData) -> None:
    """The positions, in the data as read (from 0), of the training, validation and test rows:
    `train_idx` / `val_idx` / `test_idx`, a split file itself (the same three parts); none for
    several data sets, each split on its own."""
    if data.split is None:
        path.unlink(missing_ok=True)
        return
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, train_idx=data.split.train, val_idx=data.split.val,
             test_idx=data.split.test)  # fmt: skip
    write_bytes_atomic(path, buffer.getvalue())


def _claim(out: Path, resume: bool, overwrite: bool, console: Console) -> None:
    """Make `out` this run's: refuse another run's files unless resuming or overwriting, and say
    what a resume continues."""
    from polytask.app._ensemble import MEMBER_FOLDERS
    from polytask.train._run_folder import RunFolderError

    if resume and overwrite:
        raise ValueError("give --resume (continue the run in the folder) or --overwrite, not both")
    checkpoints = sorted((out / "checkpoints").glob("step-*.pt"))
    found = [out / name for name in RUN_FILES if (out / name).exists()]
    if overwrite:
        for path in [*checkpoints, *found]:
            path.unlink()
        if found or checkpoints:
            (out / "report.html").unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # left empty: no sign of a run
                (out / "checkpoints").rmdir()
        folders = [out / name for name in RUN_FOLDERS if (out / name).is_dir()]
        if out.is_dir():
            folders += sorted(
                p for p in out.iterdir() if p.is_dir() and MEMBER_FOLDERS.fullmatch(p.name)
            )
        for folder in folders:
            shutil.rmtree(folder)
        if checkpoints or found or folders:
            console.print(f"--overwrite: removed the earlier run's files from {out}")
        derived = sorted(p.name for p in out.glob("model-*.pt"))
        if derived and (checkpoints or found):  # adapt's and edit's: the user's to keep
            console.print(f"kept {', '.join(derived)}: made from the replaced model by adapt or "
                          "edit, so they do not share this run's trunk")  # fmt: skip
    elif resume:
        if checkpoints:
            console.print(f"resuming the run in {out} from checkpoints/{checkpoints[-1].name}")
        elif found:
            raise RunFolderError(
                f"{out} holds a run ({found[0].name}) but no checkpoint to resume from: "
                "train with --overwrite to replace it, or into another folder (--out)"
            )
        else:
            console.print(f"nothing to resume in {out}: starting a fresh run")
    elif checkpoints or found:
        newest = checkpoints[-1].name if checkpoints else found[0].name
        raise RunFolderError(
            f"{out} already holds a run ({newest}): --resume continues it, --overwrite replaces "
            "it, or train into another folder (--out)"
        )


COMPARED = "compare_config.json"
"""The config of a folder's results, written by `compare` and `train`: the report shows a
folder's run and comparisons together, so they must be of one config."""


def _compared_settings(config: RunConfig) -> str:
    """The config as `compare_config.json` records it (its folder and -q are not the config)."""
    shown = dataclasses.replace(config.training, progress=True)
    settings = dataclasses.asdict(dataclasses.replace(config, output_dir="", training=shown))
    # as the file reads back (a custom loss or metric object by its type's name)
    return json.dumps(strict_json(settings), indent=1, default=lambda o: type(o).__name__)


def _same_settings(earlier: Any, now: Any, shape: Any = None) -> bool:
    """Whether two recorded configs agree on every setting both record: a setting (a field of
    a config dataclass; `shape` is the live object at this place) that a later polytask added,
    at its default, does not make an earlier folder another config's, but a key of a mapping
    the user writes (kind_params, where, loss_params) on one side only does."""
    if isinstance(earlier, dict) and isinstance(now, dict):
        fields = dataclasses.is_dataclass(shape)
        if not fields and earlier.keys() != now.keys():
            return False
        return all(
            _same_settings(earlier[k], now[k], _part(shape, k)) for k in earlier.keys() & now.keys()
        )
    if isinstance(earlier, list) and isinstance(now, list):  # tasks, blend members: item by item
        parts = list(shape) if isinstance(shape, list | tuple) else [None] * len(now)
        return len(earlier) == len(now) == len(parts) and all(
            map(_same_settings, earlier, now, parts)
        )
    return bool(earlier == now)


def _part(shape: Any, key: str) -> Any:
    """The live value at `key` of a config object or mapping (None where unknown)."""
    if dataclasses.is_dataclass(shape):
        return getattr(shape, key, None)
    return shape.get(key) if isinstance(shape, Mapping) else None


def _other_config(out: Path, config: RunConfig) -> tuple[list[Path], str] | None:
    """The comparison results in `out` (files and seed folders, an unfinished comparison's
    too) when they are of another config than `config`, with the reason; None when there are
    none or they are `config`'s."""
    from polytask.analysis._scarcity import fraction_folders
    from polytask.report._run import COMPARE_FILES, seed_folders

    found = [out / name for name in COMPARE_FILES if (out / name).is_file()]
    if out.is_dir():
        found += [*seed_folders(out), *fraction_folders(out)]
    if not found:
        return None
    differs = _recorded_differs(out, config)
    if differs is None:
        return found, f"a comparison whose config is not recorded (no {COMPARED})"
    if not differs:
        return None
    return found, f"a comparison of another config ({found[0].name}; its config: {COMPARED})"


def _resume_hint(other: str) -> str:
    """What --resume needs where the folder holds `other` (`_other_config`'s reason)."""
    if other.startswith("a comparison of another"):  # the folder records the run's config
        return (f"; --resume continues a run with the config that wrote it, which this folder "
                f"records ({COMPARED}): give that config")  # fmt: skip
    return "; to resume, remove the comparison's files and seed folders"


def _recorded_differs(out: Path, config: RunConfig) -> bool | None:
    """Whether the config recorded in `out` is another than `config` (None: none recorded)."""
    try:
        earlier = json.loads((out / COMPARED).read_text())
    except (OSError, ValueError):
        return None
    return not _same_settings(earlier, json.loads(_compared_settings(config)), config)


def _remove_comparisons(out: Path, found: list[Path], console: Console) -> None:
    """Remove another config's comparison results from `out`: files and folders."""
    for path in [*found, out / COMPARED]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    console.print(f"removed the earlier comparison (other data or settings) from {out}")


def _single_task_settings(baseline: RunConfig | None, path: str | None) -> dict[str, Any] | None:
    """What `compare --baseline-config FILE` gives the single-task models (its model and
    training settings), as compare.json records them; None without it."""
    if baseline is None:
        return None
    shown = dataclasses.replace(baseline.training, progress=True)
    settings = {"file": str(path), "model": dataclasses.asdict(baseline.model),
                "training": dataclasses.asdict(shown)}  # fmt: skip
    text = json.dumps(strict_json(settings), default=lambda o: type(o).__name__)
    return cast(dict[str, Any], json.loads(text))


def _other_single_task(out: Path, single: dict[str, Any] | None) -> list[Path] | None:
    """`out`'s comparison results when its single-task models had other settings than
    `single` (--baseline-config given, changed or left out), else None."""
    from polytask.report._run import seed_folders

    try:
        earlier = json.loads((out / "compare.json").read_text()).get("single_task_settings")
    except (OSError, ValueError, AttributeError):
        return None

    def settings(s: Any) -> Any:
        return None if not isinstance(s, dict) else {k: s.get(k) for k in ("model", "training")}

    if settings(earlier) == settings(single):
        return None
    return [out / "compare.json", *seed_folders(out)]


def _compare_data(
    args: argparse.Namespace,
    config: RunConfig,
    console: Console,
    single: dict[str, Any] | None = None,
    plain: bool = False,
) -> PreparedData:
    """The data of a comparison, its folder claimed: a folder's comparisons and run are of one
    config (the report shows them together), so another config's are refused, or removed with
    --overwrite, before anything trains; so is a comparison whose single-task models had other
    settings (`single`: what --baseline-config gives them; `plain`: the comparison that writes
    compare.json)."""
    data = _load_data(args, config)  # bad data is reported first, before the folder
    out = Path(config.output_dir)
    other = _other_config(out, config)
    if plain and other is None and (found := _other_single_task(out, single)) is not None:
        other = (
            found,
            "a comparison whose single-task models had other settings "
            "(--baseline-config given, changed or left out; compare.json: single_task_settings)",
        )
    run = _other_run(out, config)
    if other or run:
        what = " and ".join(w for w in (other[1] if other else None, run) if w)
        if not getattr(args, "overwrite", False):
            raise ValueError(
                f"{out} holds {what}: --overwrite replaces it, or compare into another folder "
                "(--out)"
            )
        if other:
            _remove_comparisons(out, other[0], console)
        if run:
            _claim(out, resume=False, overwrite=True, console=console)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / COMPARED, _compared_settings(config))
    return data


def _other_run(out: Path, config: RunConfig) -> str | None:
    """Why `out`'s training run (of `polytask train`) is another config's, or None (no run,
    or this config's; a run with no recorded config, from an older polytask, is left be)."""
    if (
        not (out / "model.pt").exists()
        and not (out / "metrics.csv").exists()
        and not any((out / "checkpoints").glob("step-*.pt"))
    ):
        return None
    if not _recorded_differs(out, config):  # this config's, or unrecorded
        return None
    return f"a training run of another config (its config: {COMPARED})"


def cmd_train(args: argparse.Namespace, console: Console) -> None:
    config = _config_from_args(args)
    from polytask.app import fit
    from polytask.app._ensemble import preflight, resume_refusal
    from polytask.cli._render import metrics_table
    from polytask.train._device import resolve_device
    from polytask.train._distributed import join_processes, process_device
    from polytask.train._run_folder import RunFolderError, RunLock

    out = Path(config.output_dir)
    training = config.training
    device = resolve_device(training.device)
    processes = join_processes(training.dist_backend, training.dist_timeout_s, device)
    process_device(device, processes)
    main = processes is None or processes.main
    # one training run per folder, for the whole command; under torchrun the main process
    # holds the folder and writes every file in it
    with contextlib.ExitStack() as held:
        problem: Exception | None = None
        try:
            if main:
                held.enter_context(RunLock(out))
            data = _load_data(args, config)  # bad data is reported first, before the folder
            if args.resume and (refusal := resume_refusal(config)):
                raise ValueError(refusal)
            preflight(config, data)  # a model or setting fit refuses: before the folder is cleared
            if main:
                from polytask.cli._render import make_console

                other = _other_config(out, config)
                if other and not args.overwrite:  # the report would show them as this run's
                    raise RunFolderError(
                        f"{out} holds {other[1]}: --overwrite removes it with the run, or train "
                        f"into another folder (--out){_resume_hint(other[1]) * args.resume}"
                    )
                quiet = make_console(file=io.StringIO())  # -q: no status lines
                shown = quiet if args.quiet else console
                _claim(out, args.resume, args.overwrite, shown)
                if other:
                    _remove_comparisons(out, other[0], shown)
                out.mkdir(parents=True, exist_ok=True)  # the folder's config: this run's
                write_text_atomic(out / COMPARED, _compared_settings(config))
        except (RunFolderError, ValueError, OSError) as err:
            problem = err
        if processes is not None:  # the folder is claimed before any process resumes from it
            shared = processes.from_main(None if problem is None else str(problem))
            if shared is not None and problem is None:  # the main process's refusal
                problem = RunFolderError(str(shared))
        if problem is not None:
            raise problem
        _status(args, f"training into {out}")
        fitted = fit(config, data, run_dir=out, resume=args.resume)
        assert fitted.trainer is not None
        test = fitted.trainer.evaluate(data.test, summaries=True)  # every process: shared rows
        if not main:
            return
        write_text_atomic(out / "test_metrics.json", json_text(test))
        _write_split(out / SPLIT_FILE, data)
        path = fitted.save(out / "model.pt")
    console.print(metrics_table(test, "Test metrics", fitted.tasks))
    if config.model.blend:
        from polytask.report._run import BLEND_FILE

        members = _blend_members(fitted, data)
        write_text_atomic(out / BLEND_FILE, json_text(members))
        console.print(_blend_members_line(fitted, members, test), soft_wrap=True)
    relations = fitted.trainer.task_relations
    if relations is not None:  # e.g. "gradient conflict over 40 measurements (...): ..."
        console.print(f"{relations.describe()}; details: {_analyze_command(out)}")
    console.print(
        f"checkpoint: {path}\nmetrics: {out / 'metrics.csv'}, {out / 'test_metrics.json'}"
        + (f"\nrows of each part: {out / SPLIT_FILE}" if data.split is not None else "")
    )


def _blend_members(fitted: FittedModel, data: PreparedData) -> list[dict[str, Any]]:
    """Each blend member alone on the test rows: its architecture, weight and every task's
    metrics (what `blend_members.json` keeps for the report)."""
    from polytask.models import Ensemble

    model, trainer = fitted.model, fitted.trainer
    assert isinstance(model, Ensemble) and trainer is not None
    members = []
    try:
        for member, weight, spec in zip(
            model.members, model.weights or (), _member_specs(fitted), strict=True
        ):
            trainer.model = cast("MultiTaskNet", member)
            alone = trainer.evaluate(data.test, summaries=True)
            members.append({"architecture": spec, "weight": weight, "metrics": alone})
    finally:
        trainer.model = model
    return members


def _blend_members_line(
    fitted: FittedModel,
    members: Sequence[Mapping[str, Any]],
    blended: Mapping[str, Mapping[str, float]],
) -> str:
    """Each blend member's own headline test figure beside the blend's: the first task's
    primary metric on the pooled rows of tasks made from a column, else its mean over tasks."""
    from polytask.train._evaluate import POOLED

    metric = fitted.tasks[0].primary.name

    def headline(scores: Mapping[str, Mapping[str, float]]) -> str:
        pooled = [k for k in scores if k.endswith(POOLED) and metric in scores[k]]
        if pooled:
            return f"{float(scores[pooled[0]][metric]):#.4g} ({pooled[0]} {metric})"
        values = [float(v[metric]) for k, v in scores.items() if k in fitted.model.task_names]
        return f"{sum(values) / len(values):#.4g} (task mean {metric})"

    parts = [
        f"{m['architecture']} (weight {m['weight']:g}): {headline(m['metrics'])}" for m in members
    ]
    return (
        "blend members alone on the test rows: "
        + "; ".join(parts)
        + (f"; the blend: {headline(blended)}")
    )


def _member_specs(fitted: FittedModel) -> list[str]:
    spec = fitted.model_config
    return [spec.architecture, *(m.architecture for m in spec.blend)]


def _label_fractions(spec: str) -> tuple[str, list[float]]:
    """ "plan=0.05,0.1,1" → ("plan", [0.05, 0.1, 1.0])."""
    task, sep, values = spec.partition("=")
    try:
        fractions = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        fractions = []
    if not sep or not task or not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(
            f"--label-fraction {spec!r}: write TASK=F[,F...] with fractions in (0, 1], "
            "e.g. plan=0.05,0.1,0.25,1"
        )
    return task.strip(), fractions


def cmd_compare(args: argparse.Namespace, console: Console) -> None:
    config = _config_from_args(args)
    from polytask.analysis._architectures import compare_architectures
    from polytask.analysis._scarcity import label_fraction_curve
    from polytask.cli._render import architecture_table, curve_table
    from polytask.models import ARCHITECTURES

    if args.groups is not None and not args.groups.strip():
        raise ValueError("--groups is empty: give auto, or groups like churn,ltv/plan")
    for flag, value, what in (
        ("--max-groups", args.max_groups, "the budget of --groups auto"),
        ("--affinity-every", args.affinity_every, "how often --groups auto measures affinity"),
    ):
        if value is not None and args.groups != "auto":
            raise ValueError(
                f"{flag} is {what}"
                + ("; given groups are not chosen from measurements" if args.groups else
                   ": add --groups auto (it finds the groups from one multi-task run)")
            )  # fmt: skip
    chosen = [o for o in ("label_fraction", "architectures", "groups") if getattr(args, o)]
    if len(chosen) > 1:
        flags = " and ".join("--" + o.replace("_", "-") for o in chosen)
        raise ValueError(f"give one of {flags}, not several")
    if chosen and args.keep_models:
        raise ValueError(f"--keep-models applies to the plain comparison, not to "
                         f"--{chosen[0].replace('_', '-')}")  # fmt: skip
    if chosen and args.baseline_config:
        raise ValueError(f"--baseline-config applies to the plain comparison, not to "
                         f"--{chosen[0].replace('_', '-')}")  # fmt: skip
    if args.groups:
        _compare_groups(config, args, console)
        return
    if args.label_fraction:
        task, fractions = _label_fractions(args.label_fraction)
        data = _compare_data(args, config, console)
        out = Path(config.output_dir)
        seeds = list(range(args.seeds))
        curve = label_fraction_curve(config, data, task, fractions, seeds, run_dir=out)
        out.mkdir(parents=True, exist_ok=True)
        curve.to_json(out / "label_fraction.json")
        console.print(curve_table(curve))
        console.print(f"results: {out / 'label_fraction.json'}")
        return
    if not args.architectures:
        _compare(config, args.seeds, console, args)
        return
    names = [a.strip() for a in args.architectures.split(",") if a.strip()]
    unknown = [a for a in names if a not in ARCHITECTURES]
    if unknown:
        raise ValueError(f"--architectures: unknown {unknown}; choose from {sorted(ARCHITECTURES)}")
    data = _compare_data(args, config, console)
    out = Path(config.output_dir)
    result = compare_architectures(config, data, names, list(range(args.seeds)), run_dir=out)
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "architectures.json")
    console.print(architecture_table(result))
    console.print(f"results: {out / 'architectures.json'}")


def _compare_groups(config: RunConfig, args: argparse.Namespace, console: Console) -> None:
    """`compare --groups auto|a,b/c`: grouped vs all-in-one vs single-task training."""
    from polytask.analysis._analyze import AFFINITY_EVERY
    from polytask.analysis._grouping import parse_groups
    from polytask.analysis._groups import compare_groups
    from polytask.cli._render import (
        comparison_table,
        groups_table,
        relations_summary,
        relations_tables,
    )

    names = [t.name for t in config.tasks]
    groups = None if args.groups == "auto" else parse_groups(args.groups, names)
    data = _compare_data(args, config, console)
    out = Path(config.output_dir)
    how = "chosen from the measured task relations" if groups is None else "as given"
    _status(args, f"training {args.seeds} seed(s) into {out}, the groups {how}")
    budget = args.max_groups or 2
    result = compare_groups(
        config, data, groups, list(range(args.seeds)), max_groups=budget, run_dir=out,
        affinity_every=args.affinity_every or AFFINITY_EVERY,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "groups.json")
    if result.relations is not None and result.grouping is not None:
        for table in relations_tables(result.relations, result.grouping, result.basis):
            console.print(table)
        console.print(relations_summary(result.relations, result.grouping))
    console.print(comparison_table(result.all_in_one_comparison()))
    console.print(groups_table(result))
    console.print(f"results: {out / 'groups.json'}")


def cmd_tune(args: argparse.Namespace, console: Console) -> None:
    """Settings by cross-validation on the training rows (`polytask.analysis.tune`)."""
    import yaml
    from rich.table import Table

    from polytask.analysis._tune import require_optuna

    try:  # before the config and data are read: without it nothing can run
        require_optuna()
    except ImportError as err:
        raise ValueError(str(err)) from None

    from polytask.analysis._tune import (
        best_settings,
        check_space,
        clear_gain,
        delta_text,
        file_folds,
        settings_table,
        standard_error,
        tune,
    )
    from polytask.analysis._tune import with_settings as apply
    from polytask.cli._config_io import (
        ConfigError,
        default_output,
        load_config,
        parse_config,
        read_yaml,
    )

    config_path = Path(args.config)
    config = load_config(config_path)  # refuses a bad config before any search
    raw = read_yaml(config_path.read_text(), str(config_path))
    raw.setdefault("output_dir", default_output(config_path))  # as load_config reads it
    base = config_path.resolve().parent
    space = None
    if args.space:
        space_path = require_file(args.space, "search space file", ConfigError)
        try:
            loaded = read_yaml(space_path.read_text(), str(space_path))
        except yaml.YAMLError as err:
            raise ConfigError(f"{space_path} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.space}: a search space is a mapping of dotted paths, e.g. "
                              "training.lr: {log: [1.0e-4, 1.0e-2]}")  # fmt: skip
        space = check_space(loaded)
    suffix = ".single" if args.single_task else ".best"
    default = config_path.with_name(f"{config_path.stem}{suffix}.yaml")
    chosen = Path(args.best) if args.best else default
    _check_best(chosen, config_path, config, raw)  # before the search, not after it
    out = Path(args.out or Path(config.output_dir) / "tune")
    results = out / ("tune_single.json" if args.single_task else "tune.json")
    earlier = [str(p) for p in (chosen, results) if p.exists()]
    if earlier and not args.overwrite:  # a rerun replaced a better best without a word
        raise ValueError(
            f"{' and '.join(earlier)}: an earlier tune's results: --overwrite replaces them, "
            "or --best FILE and --out FOLDER write this one elsewhere"
        )
    own = file_folds(config)
    given = len(set(own.values())) if own else None
    how = (f"the split file's {given} folds (train_cv_fold; --folds is not used)" if given
           else f"{args.folds}-fold cross-validation")  # fmt: skip
    _status(args, f"tuning {args.trials} trial(s) by {how} on the training rows (the test rows "
                  "are not read)")  # fmt: skip
    result = tune(
        raw, lambda r: parse_config(dict(r), base=base), args.trials, args.folds, space,
        seed=config.training.seed, report=lambda line: _status(args, line),
        single_task=args.single_task,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    # the single-task search has its own file: it must not replace the multi-task one's
    write_text_atomic(results, json_text(result.to_dict()))
    which = "single-task models" if args.single_task else "model"
    table = Table(title=f"Trials ({result.folds}-fold CV on the training rows; Δm % of the "
                        f"{which} against the config as given, + = better)")  # fmt: skip
    for col in ("trial", "CV Δm (%)", "settings", "s"):
        table.add_column(col, justify="left" if col == "settings" else "right")
    for row in settings_table(result):
        table.add_row(*row)
    console.print(table)
    best = best_settings(result)
    if not best:
        console.print(f"no trial completed: no config to write; the trials are in {results}")
        return
    assert result.best is not None
    gain = delta_text(result.best["delta_m"])
    if not result.best["delta_m"] > 0:
        console.print(
            f"no trial beat the config as given (the best: CV Δm {gain}%): "
            f"keep {config_path}; nothing written. results: {results}"
        )
        return
    if not clear_gain(result.best):
        console.print(
            f"the best trial's CV Δm {gain}% is within the folds' noise "
            f"(standard error ±{standard_error(result.best):.2f}% over {result.folds} folds): "
            f"the config as given does as well; keep {config_path}; nothing written. Its "
            f"settings are in {results}; more {'trials' if given else 'folds (--folds) or trials'} "
            "tell them apart"
        )
        return
    tuned = apply(raw, best)
    tag = (
        ("-single-tuned" if args.single_task else "-tuned")
        if chosen == default
        else ("-" + chosen.stem.replace(".", "-"))
    )  # a --best file of its own: a folder of its own
    tuned["output_dir"] = str(raw["output_dir"]).rstrip("/") + tag
    write_text_atomic(chosen, yaml.safe_dump(tuned, sort_keys=False))
    multi = config_path.with_name(f"{config_path.stem}.best.yaml")  # the tuned MTL model's
    polytask = "polytask" + (f" --threads {args.torch_threads}" if args.torch_threads else "")
    run_dir = base / tuned["output_dir"]
    held = run_dir.is_dir() and any(run_dir.iterdir())
    use = (
        f"train the single-task baselines with it: {polytask} compare "
        f"{multi if multi.is_file() else config_path} --baseline-config {chosen}"
        if args.single_task
        else f"train it and score the test rows once: {polytask} train {chosen}"
        + (f" --overwrite (its output_dir, {tuned['output_dir']}, holds an earlier run)"
           if held else "")
    )  # fmt: skip
    console.print(
        f"best: {json.dumps(best)} (CV Δm {gain}%)\nconfig: {chosen}\nresults: {results}\n{use}"
    )


def _check_best(chosen: Path, config_path: Path, config: RunConfig, raw: Any) -> None:
    """Refuse a --best file that is a folder, in a missing folder, the config itself or a file
    it reads, or in another folder when the config's relative paths would then point
    elsewhere."""
    from polytask.cli._config_io import parse_config

    if chosen.is_dir():
        raise ValueError(f"--best {chosen} is a folder: give a file name, e.g. "
                         f"{chosen / (config_path.stem + '.best.yaml')}")  # fmt: skip
    if not chosen.resolve().parent.is_dir():
        raise ValueError(f"--best {chosen}: no folder {chosen.parent}; make it first")
    reads = {"config": str(config_path)}
    for value in _strings(dataclasses.asdict(config)):
        if len(value) < 4096 and Path(value).is_file():
            reads.setdefault(f"file {value}", value)
    for what, given in reads.items():
        if chosen.exists() and os.path.samefile(chosen, given):
            raise ValueError(
                f"--best {chosen} is the {what} this command reads: writing the best config "
                "there would replace it; give another file"
            )
    if chosen.resolve().parent != config_path.resolve().parent:
        try:
            moved = parse_config(raw, base=chosen.resolve().parent) != config
        except (ValueError, OSError):  # e.g. tasks made from a column of a file not there
            moved = True
        if moved:
            raise ValueError(
                f"--best {chosen}: {config_path}'s relative paths (data, output_dir) are read "
                f"from its folder, {config_path.resolve().parent}, and would point elsewhere "
                "from another folder: write the best config beside it (a file name there), or "
                "make the config's paths absolute"
            )


def _strings(value: Any) -> Iterator[str]:
    """Every string inside nested dicts, lists and tuples."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


RUN_ANALYSIS = "run_analysis"
"""Where a finished run's analysis goes when its analysis/ holds `analyze CONFIG`'s."""


def _config_analysis(out: Path) -> bool:
    """Whether `out` holds `polytask analyze CONFIG`'s results (its own training run)."""
    return (out / "run").is_dir() and (out / "analysis.json").is_file()


def _analyze_command(run: Path) -> str:
    """The command that analyses the finished run in `run` (another folder for its results
    when the default one holds the config's analysis)."""
    taken = _config_analysis(run / "analysis")
    return f"polytask analyze {run}" + (f" --out {run / RUN_ANALYSIS}" if taken else "")


def cmd_analyze(args: argparse.Namespace, console: Console) -> None:
    from polytask.analysis._analyze import analyze, analyze_run
    from polytask.cli._render import relations_summary, relations_tables

    target = Path(args.target)
    if target.is_file() and target.name == "relations.json":  # the run folder's own file
        target = target.parent
    if target.is_dir():
        given = [f for f, v in (("--seed", args.seed), ("--affinity-every", args.affinity_every))
                 if v is not None]  # fmt: skip
        if given:
            raise ValueError(
                f"{' and '.join(given)} set how a config is trained; {target} is a finished "
                "run: analyse its config to measure afresh"
            )
        out = Path(args.out) if args.out else target / "analysis"
        if not args.out and _config_analysis(out):  # beside the config's, as train's hint says
            out = target / RUN_ANALYSIS
            _status(args, f"{target / 'analysis'} holds `polytask analyze CONFIG`'s results: "
                    f"this finished run's analysis goes to {out}")  # fmt: skip
        if _config_analysis(out):
            raise ValueError(
                f"{out} holds `polytask analyze CONFIG`'s results (its own training in "
                f"{out / 'run'}, with affinity): give --out DIR to analyse this finished run "
                "beside them"
            )
        args.run_dir = out
        result = analyze_run(target, args.max_groups)
    else:
        from polytask.cli._config_io import load_config

        config = _quieted(args, load_config(args.target))
        folder = Path(config.output_dir)
        if not args.out and _recorded_differs(folder, config):  # its report would show ours
            raise ValueError(
                f"{folder} holds the results of another config (its config: {COMPARED}): give "
                "--out DIR for this analysis, or set output_dir to this config's own folder"
            )
        out = Path(args.out) if args.out else folder / "analysis"
        args.run_dir = out
        from polytask.analysis._analyze import check_task_count

        check_task_count(config)  # before the data is read
        data = _load_data(args, config)
        _status(args, f"training once to measure conflict and affinity, into {out / 'run'}")
        every = args.affinity_every or 5
        result = analyze(config, data, args.max_groups, args.seed or 0, every, out / "run")
    written = result.write(out)
    for table in relations_tables(result.relations, result.grouping, result.basis):
        console.print(table)
    console.print(relations_summary(result.relations, result.grouping, from_run=target.is_dir()))
    console.print(f"written: {', '.join(str(p) for p in written)}")


def _check_output(output: str, inputs: dict[str, str]) -> None:
    """Refuse an output path that is a directory or one of the command's own input files."""
    path = Path(output)
    if path.is_dir():
        raise ValueError(f"-o {output} is a directory: give a file name, e.g. {path / 'p.csv'}")
    for what, given in inputs.items():
        same = path.exists() and Path(given).exists() and os.path.samefile(path, given)
        if same or path.resolve() == Path(given).resolve():
            raise ValueError(
                f"-o {output} is the {what} this command reads: writing there would overwrite "
                "it; give another output file"
            )


def _ids_as_written(predictions: pd.DataFrame, ids: Sequence[str], data: str) -> None:
    """A CSV's id columns as its cells spell them (pandas reads a column of ids with a blank
    cell as floats: 17 written 17.0, ids beyond 2**53 rounded into each other's)."""
    if not ids or Path(data).is_dir() or not str(data).lower().endswith((".csv", ".csv.gz")):
        return
    import pandas as pd

    written = pd.read_csv(data, usecols=list(ids), dtype=str, keep_default_na=False)
    if len(written) == len(predictions):
        for column in ids:
            predictions[column] = written[column].replace("", None).to_numpy()


def cmd_predict(args: argparse.Namespace, console: Console) -> None:
    if not Path(args.data).is_dir():  # a folder of audio or image files is read as a whole
        require_file(args.data, "data file")  # before the slower model load
    if args.output:
        _check_output(args.output, {"checkpoint": args.checkpoint, "data file": args.data})
    from polytask.app import FittedModel
    from polytask.app._data import predict_frame
    from polytask.app._outputs import file_columns, files_folder, json_columns, write_predictions

    fitted = FittedModel.load(args.checkpoint)
    _status(args, f"predicting the rows of {args.data}")
    frame, root = predict_frame(fitted.preprocessor, args.data)
    if args.root is not None:  # as the config's images.root / audio.root
        root = Path(args.root)
        if not root.is_dir():
            raise ValueError(f"--root {args.root}: no such folder (the folder the manifest's "
                             "file paths are relative to)")  # fmt: skip
    ids = args.id_column
    if not ids and Path(args.data).is_dir():  # a folder's files: which row is which file
        ids = list(frame.columns[:1])
    predictions = fitted.predict(
        frame,
        id_columns=ids,
        tasks=args.tasks,
        root=root,  # a manifest's paths are relative to its folder, or to --root
        where=args.data,
    )
    _ids_as_written(predictions, ids, args.data)
    sequential = [t.name for t in fitted.tasks if t.kind_spec.sequential]
    predictions = json_columns(predictions, [c for c in sequential if c in predictions])
    files = file_columns(predictions)
    if files and not args.output:
        raise ValueError(
            f"the predictions of {', '.join(files)} are a map or a list per image, written to "
            "files beside the CSV: give -o OUT.csv"
        )
    if args.output:  # whole or not at all: a full disk leaves no partial file
        write_predictions(predictions, args.output)
        also = f" and their {', '.join(files)} to {files_folder(args.output)}" if files else ""
        console.print(f"wrote {len(predictions)} rows to {args.output}{also}")
    else:
        predictions.to_csv(sys.stdout, index=False)


def task_list(text: str) -> list[str]:
    """`--tasks a,b`: task names, each once, none empty."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of task names")
    return list(dict.fromkeys(names))


def _at_least(low: int, why: str = "") -> Callable[[str], int]:
    """An argparse type: an integer >= `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}{why}, got {value}")
        return value

    return parse


def _output_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """-v / -q, accepted before the subcommand and after it (`polytask train -v cfg.yaml`)."""
    kept = argparse.SUPPRESS if not top else False  # after it: set only when given
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=kept,
        help="also log info lines (e.g. each step's cost)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=kept,
        help="no status or progress lines (what is being read or trained, epochs); results, "
        "warnings and errors still show",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polytask", description="Multi-task learning on PyTorch.")
    parser.add_argument("--version", action="version", version=f"polytask {__version__}")
    _output_options(parser, top=True)
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module or .py file first (repeatable): your own balancers, task kinds, "
        "architectures, registered as docs/extending.md shows, for the config and the model",
    )
    _threads_option(parser, top=True)
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (by default freed blocks are kept for the next step, "
        "which makes CPU steps with per-task gradients about 10%% faster)",
    )
    common = argparse.ArgumentParser(add_help=False)
    _output_options(common, top=False)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", parents=[common], help="train MTL and single-task models on built-in data"
    )
    demo.add_argument("--seeds", type=_at_least(1), default=3, help="number of seeds (default 3)")
    demo.add_argument(
        "--n",
        type=_at_least(DEMO_MIN_CUSTOMERS, " (the plan task labels 1 customer in 12)"),
        default=4000,
        help=f"customers to generate (default 4000, at least {DEMO_MIN_CUSTOMERS})",
    )
    demo.add_argument(
        "--epochs", type=_at_least(1), default=20, help="epochs per model (default 20)"
    )
    demo.add_argument(
        "--out", default="runs/demo",
        help="run folder (default runs/demo); an earlier demo there is replaced",
    )  # fmt: skip
    demo.add_argument(
        "--overwrite", action="store_true",
        help="replace the --out folder's comparison or run even when it is not a demo's",
    )  # fmt: skip
    demo.add_argument(
        "--no-classic", dest="classic", action="store_false",
        help="skip the classic baselines (logistic and ridge regression, gradient boosting: "
        "most of the demo's time on a busy machine)",
    )  # fmt: skip
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser(
        "train", parents=[common], help="train a multi-task model from a YAML config"
    )
    train.add_argument("config", help="YAML config file")
    train.add_argument("--out", help="run folder (overrides output_dir)")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in the run folder (if any), exactly",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in the run folder (its checkpoints, model and metrics)",
    )
    train.set_defaults(func=cmd_train)

    compare = sub.add_parser(
        "compare", parents=[common], help="MTL vs single-task baselines over seeds"
    )
    compare.add_argument("config", help="YAML config file")
    compare.add_argument(
        "--seeds", type=_at_least(1), default=3, help="number of seeds (default 3)"
    )
    compare.add_argument("--out", help="run folder (overrides output_dir)")
    compare.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the comparison of another config in the run folder (its results and "
        "seed folders)",
    )
    compare.add_argument(
        "--no-classic",
        dest="classic",
        action="store_false",
        help="skip the classic baselines (a ridge or logistic regression per task, pooled "
        "linear, gradient boosting, a random forest per task for tasks made from a column: "
        "scikit-learn, settings by CV or out-of-bag scores on the training rows)",
    )
    compare.add_argument(
        "--keep-models",
        action="store_true",
        help="save every model of the plain comparison (seedS/mtl/model.pt, "
        "seedS/stl_TASK/model.pt), e.g. to serve a task's single-task model where sharing "
        "harms it",
    )
    compare.add_argument(
        "--baseline-config",
        metavar="FILE",
        help="train the single-task models with this config's model and training settings (the "
        "same data and tasks), e.g. tuned for them by polytask tune --single-task",
    )
    compare.add_argument(
        "--architectures",
        help="comma-separated architectures to compare side by side (e.g. hard_sharing,mmoe,ple), "
        "each with the config's balancer and budget, against one single-task model per task",
    )
    compare.add_argument(
        "--label-fraction",
        metavar="TASK=F[,F...]",
        help="learning curve of TASK's test metric when only a fraction of its training labels "
        "is kept (e.g. plan=0.05,0.1,0.25,1), multi-task vs single-task",
    )
    compare.add_argument(
        "--groups",
        metavar="auto|A,B/C",
        help="train the tasks in groups, one model per group, against one model for all and "
        "one per task: 'auto' chooses the groups from the measured task affinity, or give them "
        "(tasks by commas, groups by slashes: churn,ltv/plan)",
    )
    compare.add_argument(
        "--max-groups",
        type=_at_least(1),
        help="at most this many models for --groups auto (default 2)",
    )
    compare.add_argument(
        "--affinity-every",
        type=_at_least(1),
        help="steps between task-affinity measurements of --groups auto (default 5; each "
        "costs a forward per task)",
    )
    compare.set_defaults(func=cmd_compare)

    tune_cmd = sub.add_parser(
        "tune",
        parents=[common],
        help="search settings by cross-validation on the training rows (Optuna)",
    )
    tune_cmd.add_argument("config", help="YAML config file")
    tune_cmd.add_argument("--trials", type=_at_least(1), default=20, help="trials (default 20)")
    tune_cmd.add_argument(
        "--folds", type=_at_least(2), default=3,
        help="folds of the training rows when the split file has no train_cv_fold (default 3)",
    )  # fmt: skip
    tune_cmd.add_argument(
        "--space", help="YAML search space: dotted paths of the config, each {log: [lo, hi]}, "
        "{range: [lo, hi]}, {int: [lo, hi]} or {choice: [...]} (default: learning rate, weight "
        "decay, and the architecture's dropout, hidden, coupling, covariance or shrinkage, each "
        "model.blend member's weight; a forest's leaf size and share of columns; see "
        "docs/guide/cli.md)",
    )  # fmt: skip
    tune_cmd.add_argument("--out", help="folder for tune.json (default OUTPUT_DIR/tune)")
    tune_cmd.add_argument(
        "--best", help="where to write the best config (default CONFIG.best.yaml beside it, "
        "CONFIG.single.yaml with --single-task)",
    )  # fmt: skip
    tune_cmd.add_argument(
        "--overwrite", action="store_true",
        help="replace an earlier tune's best config and results (else refused before the search)",
    )  # fmt: skip
    tune_cmd.add_argument(
        "--single-task", action="store_true",
        help="tune the single-task baselines (one model per task) by the same protocol; use the "
        "result with polytask compare CONFIG --baseline-config CONFIG.single.yaml",
    )  # fmt: skip
    tune_cmd.set_defaults(func=cmd_tune)

    analyze = sub.add_parser(
        "analyze",
        parents=[common],
        help="which tasks belong together: gradient conflict, task affinity, suggested groups",
    )
    analyze.add_argument(
        "target",
        help="YAML config (trains the model once, measuring) or a run folder of `polytask "
        "train` (reads its relations.json)",
    )
    analyze.add_argument(
        "--out", help="folder for the matrices and heatmaps (default OUTPUT_DIR/analysis)"
    )
    analyze.add_argument(
        "--max-groups", type=_at_least(1), default=2, help="at most this many models (default 2)"
    )
    analyze.add_argument("--seed", type=int, help="training seed for a config (default 0)")
    analyze.add_argument(
        "--affinity-every",
        type=_at_least(1),
        help="steps between task-affinity measurements (default 5; each costs a forward per task)",
    )
    analyze.set_defaults(func=cmd_analyze)
    add_report_parser(sub, common)  # and --no-report on train and compare

    predict = sub.add_parser(
        "predict", parents=[common], help="predict every task for the rows of a CSV file"
    )
    predict.add_argument("checkpoint", help="model.pt written by `polytask train`")
    predict.add_argument(
        "data",
        help="CSV file with the feature columns (or an image manifest: image paths; for a text "
        "model a CSV / JSON lines table of texts, or a .txt file of one text per line (a "
        "model trained on CoNLL reads .txt and .conll in CoNLL layout); for an "
        "audio model a manifest or a folder of audio files)",
    )
    predict.add_argument(
        "-o", "--output", help="write CSV here instead of stdout (not over the input files)"
    )
    predict.add_argument(
        "--id-column",
        action="append",
        default=[],
        metavar="COLUMN",
        help="a column of the data to copy into the predictions (e.g. a customer id), first; "
        "repeat for several (a folder of images or audio files: its file paths by default)",
    )
    predict.add_argument(
        "--tasks",
        type=task_list,
        metavar="A,B",
        help="predict only these tasks (comma-separated; default: every task)",
    )
    predict.add_argument(
        "--root",
        metavar="FOLDER",
        help="the folder an image or audio manifest's file paths are relative to (default: the "
        "manifest's own folder; as images.root / audio.root in the config)",
    )
    predict.set_defaults(func=cmd_predict)
    add_serving_parsers(sub, common, task_list)
    add_adapt_parsers(sub, common)
    for command in sub.choices.values():
        _threads_option(command, top=False)
    return parser


def _threads_option(parser: argparse.ArgumentParser, top: bool) -> None:
    """--threads N, before the subcommand and after it (except serve's own, per worker)."""
    if not top and "--threads" in parser._option_string_actions:
        return
    parser.add_argument(
        "--threads",
        dest="torch_threads",
        type=_at_least(1),
        default=None if top else argparse.SUPPRESS,
        metavar="N",
        help="PyTorch's and numpy's BLAS threads (default: one per core); on a machine busy "
        "with other work, 1 can make small models' steps many times faster (threads that wait "
        "for each other)",
    )


class _LowerLevelName(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


@contextlib.contextmanager
def _log_to_stderr(verbose: bool) -> Iterator[None]:
    """polytask's warnings (and with -v its info lines) as `warning: ...` on stderr."""
    logger = logging.getLogger("polytask")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowerLevelName())
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(handler.level, old_level or logging.WARNING))
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _starting(args: argparse.Namespace) -> str:
    """The first status line, printed before torch loads (a few seconds)."""
    if args.command in ("predict", "export", "serve", "adapt", "edit"):
        return f"loading the model from {args.checkpoint}"
    if args.command == "demo":
        return f"preparing the demo ({args.n} customers, {args.seeds} seed(s))"
    if args.command in ("analyze", "report"):
        return f"reading {args.target}"
    return f"reading {args.config}"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; Ctrl-C anywhere, before a command's own handling too, is one line."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from polytask._launch import launched_rank, launched_world_size  # no torch yet

    follower = launched_rank() != 0  # another process of a torchrun launch: rank 0 reports
    if follower:
        args.quiet, args.no_report = True, True
        logging.getLogger("polytask").setLevel(logging.ERROR)  # warnings: rank 0's
    if launched_world_size() > 1 and args.command != "train":
        if follower:
            return EXIT_USAGE
        print(
            f"error: only `polytask train` runs under torchrun; run `polytask {args.command}` "
            "as one process",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.imports:
        from polytask._plugins import import_extensions

        try:
            import_extensions(args.imports)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USAGE
    _status(args, _starting(args))
    if args.torch_threads is not None:
        import torch
        from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

        torch.set_num_threads(args.torch_threads)
        # numpy's BLAS too (the balancers' solvers): its default threads spin between calls,
        # stealing from the next step (UPGrad's solve at K = 139: 43–94 ms at one thread,
        # 189–569 ms at OpenBLAS's default, in a review on this 2-core machine)
        threadpool_limits(limits=args.torch_threads)  # held for the process, as torch's
    elif args.command in TRAINING_COMMANDS and (busy := _busy_machine()):
        _status(args, busy)
    if not args.system_malloc:
        retain_freed_memory()
    from polytask.cli._render import make_console
    from polytask.cli._warnings import data_warnings_to_stderr

    console = make_console(stderr=args.command == "predict" and not args.output)
    if follower:
        console = make_console(file=io.StringIO())
    with (
        _log_to_stderr(args.verbose),
        command_line(args.command),
        terminate_as_interrupt(),
        data_warnings_to_stderr(),
    ):
        return _dispatch(args, console, say=not follower)


def _outputs(args: argparse.Namespace) -> tuple[list[Path], str]:
    """Where the command writes, and the option that moves it."""
    if args.command == "predict":
        return ([Path(args.output)] if args.output else []), "-o"
    out = getattr(args, "run_dir", None) or getattr(args, "out", None)
    return ([Path(out)] if out else []), "--out"


@contextlib.contextmanager
def _explained(args: argparse.Namespace) -> Iterator[None]:
    """The OS's and pydantic's errors as one sentence each: the path that is not writable or
    readable, the disk that is full, the value that is wrong (no error codes, no URLs)."""
    from pydantic import ValidationError

    from polytask.cli._config_io import format_validation_error

    try:
        yield
    except ValidationError as err:
        raise ValueError(format_validation_error(err, root=None)) from None
    except (BrokenPipeError, DiskFullError):
        raise
    except OSError as err:
        raise _os_error(err, args) from None


def _os_error(err: OSError, args: argparse.Namespace) -> OSError:
    """`err` as a sentence naming the path, and for the command's outputs the flag to change."""
    outputs, option = _outputs(args)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):  # a write() failing has no file name
        where = err.filename or (outputs[0] if outputs else None)
        if where is not None:
            return disk_full(Path(os.fsdecode(where)), atomic=False)
        return DiskFullError(
            "cannot write the output: no space left on its disk or quota", Path("-")
        )
    if err.filename is None:
        return err
    path = Path(os.fsdecode(err.filename))
    ours = any(path == o or o in path.parents or path in o.parents for o in outputs)
    if ours and err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OSError(
            f"{path} is not writable ({err.strerror}): choose another place with {option}"
        )
    if ours and err.errno in (errno.EEXIST, errno.ENOTDIR) and option == "--out":
        file = next((p for p in (path, *path.parents) if p.is_file()), path)
        return OSError(f"{file} is a file, not a folder: {option} needs a folder (a run folder)")
    return OSError(f"cannot access {path}: {err.strerror}")


def _sentence(err: Exception) -> str:
    """The error's message; a KeyError's bare key (a lookup that failed inside polytask) as a
    sentence."""
    if not isinstance(err, KeyError):
        return str(err)
    key = err.args[0] if err.args else None
    if isinstance(key, str) and " " in key:
        return key  # a KeyError raised with a message
    return (
        f"polytask found no entry {key!r} where it expected one (an internal error); please "
        "report it with the command and config that caused it"
    )


def _dispatch(args: argparse.Namespace, console: Console, say: bool = True) -> int:
    """Run the command; an error it explains is one line on stderr (none from the other
    processes of a torchrun launch, `say=False`: the main process says it) and an exit code."""
    from polytask.train._distributed import ProcessFailed
    from polytask.train._guards import TrainingDiverged
    from polytask.train._run_folder import RunFolderError

    def tell(message: str) -> None:
        if say:
            print(message, file=sys.stderr)

    try:
        with _explained(args):
            args.func(args, console)
    except DiskFullError as err:  # not bad input: the machine ran out of space
        tell(f"error: {err}")
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, KeyError, OSError) as err:  # our errors all explain themselves
        tell(f"error: {_sentence(err)}")
        return EXIT_USAGE
    except RunFolderError as err:  # the folder holds another run, or is in use
        tell(f"error: {err}")
        return EXIT_USAGE
    except (TrainingDiverged, ProcessFailed) as err:  # not bad input: the run itself failed
        tell(f"error: {err}")
        return 1
    except Terminated:  # SIGTERM; the Trainer has said what it left to --resume from
        tell("terminated (SIGTERM)")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        tell("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
