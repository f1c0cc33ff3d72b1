"""The `polytask` command line: demo, train, compare, predict."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console

from polytask._version import __version__
from polytask.analysis._architectures import compare_architectures
from polytask.analysis._baselines import compare_with_single_task
from polytask.analysis._scarcity import label_fraction_curve
from polytask.app import FittedModel, RunConfig, fit, load_prepared
from polytask.cli._config_io import load_config
from polytask.cli._demo import demo_config
from polytask.cli._render import (
    architecture_table,
    comparison_table,
    curve_table,
    make_console,
    metrics_table,
)
from polytask.cli._warnings import data_warnings_to_stderr
from polytask.data._tabular import read_csv
from polytask.models import ARCHITECTURES
from polytask.train._allocator import retain_freed_memory
from polytask.train._guards import TrainingDiverged
from polytask.train._run_folder import RunFolderError, RunLock

EXIT_USAGE = 2


def _compare(config: RunConfig, seeds: int, console: Console) -> None:
    data = load_prepared(config)
    out = Path(config.output_dir)
    result = compare_with_single_task(config, data, list(range(seeds)), run_dir=out)
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "compare.json")
    console.print(comparison_table(result))
    console.print(f"results: {out / 'compare.json'}")


def cmd_demo(args: argparse.Namespace, console: Console) -> None:
    config = demo_config(n=args.n, epochs=args.epochs, output_dir=args.out)
    console.print(
        "[bold]polytask demo[/bold]: synthetic customers; tasks churn (binary), lifetime value "
        "(regression) and plan (3 classes, 8% labelled); one shared model vs one model per task"
    )
    _compare(config, args.seeds, console)


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    """The YAML config, with `--out` overriding its output_dir."""
    config = load_config(args.config)
    return dataclasses.replace(config, output_dir=args.out) if args.out else config


RUN_FILES = ("model.pt", "best.pt", "last_good.pt", "metrics.csv", "metrics.json",
             "test_metrics.json")  # fmt: skip
"""What a training run writes into its folder besides checkpoints/."""


def _claim(out: Path, resume: bool, overwrite: bool, console: Console) -> None:
    """Make `out` this run's: refuse another run's files unless resuming or overwriting, and say
    what a resume continues."""
    if resume and overwrite:
        raise ValueError("give --resume (continue the run in the folder) or --overwrite, not both")
    checkpoints = sorted((out / "checkpoints").glob("step-*.pt"))
    found = [out / name for name in RUN_FILES if (out / name).exists()]
    if overwrite:
        for path in [*checkpoints, *found]:
            path.unlink()
        if checkpoints or found:
            console.print(f"--overwrite: removed the earlier run's files from {out}")
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


def cmd_train(args: argparse.Namespace, console: Console) -> None:
    config = _config_from_args(args)
    out = Path(config.output_dir)
    with RunLock(out):  # one training process per folder, for the whole command
        data = load_prepared(config)  # bad data is reported first, before the folder
        _claim(out, args.resume, args.overwrite, console)
        fitted = fit(config, data, run_dir=out, resume=args.resume)
        assert fitted.trainer is not None
        test = fitted.trainer.evaluate(data.test)
        (out / "test_metrics.json").write_text(json.dumps(test, indent=2))
        path = fitted.save(out / "model.pt")
    console.print(metrics_table(test, "Test metrics", fitted.tasks))
    console.print(
        f"checkpoint: {path}\nmetrics: {out / 'metrics.csv'}, {out / 'test_metrics.json'}"
    )


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
    if args.label_fraction and args.architectures:
        raise ValueError("give --label-fraction or --architectures, not both")
    if args.label_fraction:
        task, fractions = _label_fractions(args.label_fraction)
        data = load_prepared(config)
        out = Path(config.output_dir)
        seeds = list(range(args.seeds))
        curve = label_fraction_curve(config, data, task, fractions, seeds, run_dir=out)
        out.mkdir(parents=True, exist_ok=True)
        curve.to_json(out / "label_fraction.json")
        console.print(curve_table(curve))
        console.print(f"results: {out / 'label_fraction.json'}")
        return
    if not args.architectures:
        _compare(config, args.seeds, console)
        return
    names = [a.strip() for a in args.architectures.split(",") if a.strip()]
    unknown = [a for a in names if a not in ARCHITECTURES]
    if unknown:
        raise ValueError(f"--architectures: unknown {unknown}; choose from {sorted(ARCHITECTURES)}")
    data = load_prepared(config)
    out = Path(config.output_dir)
    result = compare_architectures(config, data, names, list(range(args.seeds)), run_dir=out)
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "architectures.json")
    console.print(architecture_table(result))
    console.print(f"results: {out / 'architectures.json'}")


def cmd_predict(args: argparse.Namespace, console: Console) -> None:
    fitted = FittedModel.load(args.checkpoint)
    predictions = fitted.predict(read_csv(args.data), id_columns=args.id_column)
    if args.output:
        predictions.to_csv(args.output, index=False)
        console.print(f"wrote {len(predictions)} rows to {args.output}")
    else:
        predictions.to_csv(sys.stdout, index=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polytask", description="Multi-task learning on PyTorch.")
    parser.add_argument("--version", action="version", version=f"polytask {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also log info lines (e.g. each step's cost)"
    )
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (by default freed blocks are kept for the next step, "
        "which makes CPU steps with per-task gradients about 10%% faster)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train MTL and single-task models on built-in data")
    demo.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    demo.add_argument("--n", type=int, default=4000, help="customers to generate (default 4000)")
    demo.add_argument("--epochs", type=int, default=20, help="epochs per model (default 20)")
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train a multi-task model from a YAML config")
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

    compare = sub.add_parser("compare", help="MTL vs single-task baselines over seeds")
    compare.add_argument("config", help="YAML config file")
    compare.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    compare.add_argument("--out", help="run folder (overrides output_dir)")
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
    compare.set_defaults(func=cmd_compare)

    predict = sub.add_parser("predict", help="predict every task for the rows of a CSV file")
    predict.add_argument("checkpoint", help="model.pt written by `polytask train`")
    predict.add_argument("data", help="CSV file with the feature columns")
    predict.add_argument("-o", "--output", help="write CSV here instead of stdout")
    predict.add_argument(
        "--id-column",
        action="append",
        default=[],
        metavar="COLUMN",
        help="a column of the data to copy into the predictions (e.g. a customer id), first; "
        "repeat for several",
    )
    predict.set_defaults(func=cmd_predict)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seeds", 1) < 1:
        print("error: --seeds must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if not args.system_malloc:
        retain_freed_memory()
    console = make_console(stderr=args.command == "predict" and not args.output)
    with _log_to_stderr(args.verbose), data_warnings_to_stderr():
        return _dispatch(args, console)


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


def _dispatch(args: argparse.Namespace, console: Console) -> int:
    try:
        args.func(args, console)
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, KeyError, OSError) as err:  # our errors all explain themselves
        print(f"error: {_sentence(err)}", file=sys.stderr)
        return EXIT_USAGE
    except RunFolderError as err:  # the folder holds another run, or is in use
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as err:  # not bad input: the run itself failed
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
