"""`polytask adapt` (a new task from few labels, and its k-shot curve) and `polytask edit`
(remove or rename tasks of a saved model). The input checkpoint is only ever read."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from polytask._files import require_file
from polytask.cli._serve import _positive

if TYPE_CHECKING:
    import pandas as pd

    from polytask.adapt import AdaptResult, KShotCurve
    from polytask.app import FittedModel
    from polytask.train._evaluate import TaskMetrics

STRATEGY_HELP = "head_only (default: the trained model stays frozen), finetune, l2sp"


def _task_spec(text: str) -> tuple[str, str]:
    """`--task NAME:KIND`."""
    name, sep, kind = text.partition(":")
    if not sep or not name or not kind:
        raise argparse.ArgumentTypeError(f"expected NAME:KIND (e.g. plan:multiclass), got {text!r}")
    return name.strip(), kind.strip()


def _assignment(text: str) -> tuple[str, str]:
    """`KEY=VALUE` (strategy parameters, renames)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _param(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--param {key}={text}: expected a number") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers like 5,10,20, got {text!r}"
        ) from None
    if ks[0] < 1:
        raise argparse.ArgumentTypeError(f"every k must be at least 1, got {text!r}")
    return ks


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `adapt` and `edit` sub-commands."""
    adapt = sub.add_parser(
        "adapt",
        parents=[common],
        help="add a task to a trained model and fit it from few labelled rows (or print its "
        "k-shot curve with --curve)",
    )
    adapt.add_argument("checkpoint", help="model.pt written by `polytask train` (only read)")
    adapt.add_argument(
        "--task", type=_task_spec, required=True, metavar="NAME:KIND", help="e.g. plan:multiclass"
    )
    adapt.add_argument("--data", required=True, help="CSV with the model's features and the target")
    adapt.add_argument(
        "--target",
        action="append",
        metavar="COLUMN",
        help="the target column (default: the task's name); repeat for a multilabel task",
    )
    adapt.add_argument(
        "--strategy",
        action="append",
        metavar="NAME",
        help=f"how the new task is fitted: {STRATEGY_HELP}; with --curve, repeat to compare "
        "several (default there: head_only and l2sp)",
    )
    adapt.add_argument(
        "--param",
        type=_assignment,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a strategy parameter, e.g. strength=0.1 for l2sp",
    )
    adapt.add_argument(
        "--init",
        action="append",
        choices=("auto", "fresh", "mean", "meta"),
        help="where the new head starts: auto (default: the meta head init of a model trained "
        "with training.meta_learning, else fresh), fresh, mean (of the old heads of its kind), "
        "meta; with --curve, repeat to compare",
    )
    adapt.add_argument("--steps", type=_positive, default=300, help="optimiser steps (300)")
    adapt.add_argument("--lr", type=_number, default=1e-2, help="learning rate (0.01)")
    adapt.add_argument("--batch-size", type=_positive, default=256, help="rows per step (256)")
    adapt.add_argument("--seed", type=int, default=0, help="seed of the new head and batches")
    adapt.add_argument(
        "--eval-data",
        help="CSV of held-out rows: the old tasks' metrics before and after adapting, and the "
        "new task's (default: the checkpoint's own test split when its data can be read)",
    )
    adapt.add_argument(
        "--out", help="where to write the adapted model (default: CHECKPOINT_DIR/model-NAME.pt)"
    )
    adapt.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    curve = adapt.add_argument_group("k-shot curve (--curve: measure, write no model)")
    curve.add_argument(
        "--curve", action="store_true", help="print the new task's metric as k labelled rows grow"
    )
    curve.add_argument(
        "--ks", type=_ks, default=[5, 10, 20, 50], metavar="K,K", help="k values (5,10,20,50)"
    )
    curve.add_argument("--repeats", type=_positive, default=5, help="draws per k (5)")
    curve.add_argument(
        "--compare-with",
        action="append",
        default=[],
        metavar="CHECKPOINT",
        help="another trained model to adapt on the same draws (e.g. one trained without "
        "meta-learning); repeatable",
    )
    adapt.set_defaults(func=cmd_adapt)

    edit = sub.add_parser("edit", parents=[common], help="remove or rename tasks of a saved model")
    edit.add_argument("checkpoint", help="model.pt written by `polytask train` (only read)")
    edit.add_argument(
        "--remove", action="append", default=[], metavar="TASK", help="drop a task; repeatable"
    )
    edit.add_argument(
        "--rename",
        type=_assignment,
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="rename a task (its predictions' columns follow); repeatable",
    )
    edit.add_argument(
        "--out", help="where to write the model (default: CHECKPOINT_DIR/model-edited.pt)"
    )
    edit.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    edit.set_defaults(func=cmd_edit)


def _output(args: argparse.Namespace, default_name: str) -> Path:
    """The model file to write: never a file the command reads, never an existing file unless
    --overwrite."""
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / default_name
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give a file name, e.g. {out / 'model.pt'}")
    inputs = {
        "the checkpoint": args.checkpoint,
        "the --data file": getattr(args, "data", None),
        "the --eval-data file": getattr(args, "eval_data", None),
    }
    for what, given in inputs.items():
        if given is None:
            continue
        source = Path(given)
        same = out.exists() and source.exists() and os.path.samefile(out, source)
        if same or out.resolve() == source.resolve():
            raise ValueError(
                f"--out {out} is {what} this command reads; it is never overwritten: give "
                "another file"
            )
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists: give another --out, or --overwrite to replace it")
    return out


def cmd_adapt(args: argparse.Namespace, console: Console) -> None:
    require_file(args.checkpoint, "checkpoint")
    require_file(args.data, "data file")
    if args.eval_data:
        require_file(args.eval_data, "evaluation data file")
    strategies = args.strategy or (["head_only", "l2sp"] if args.curve else ["head_only"])
    inits = args.init or ["auto"]
    if (len(strategies) > 1 or len(inits) > 1) and not args.curve:
        raise ValueError("give one --strategy and --init (several are compared with --curve)")
    name, kind = args.task
    from polytask.adapt import AdaptConfig, adapt, kshot_curve
    from polytask.adapt._edit import check_new_task
    from polytask.app import FittedModel
    from polytask.app._encoding import tabular_encoding
    from polytask.data._tabular import read_csv
    from polytask.tasks import Task
    from polytask.tasks._columns import check_columns
    from polytask.tasks._registry import kind_named

    target = None
    if args.target:
        target = args.target[0] if len(args.target) == 1 else tuple(args.target)
    spec = kind_named(kind)
    if spec.dense or spec.sequential:  # adapt adds heads to models of table rows
        raise ValueError(
            f"--task {name}:{kind}: a {kind} task predicts per position of an image or a "
            "sequence and needs a model of images, text or audio; adapt adds tasks to models "
            "of table rows: declare it in the training config instead"
        )
    try:
        task = Task(name=name, kind=kind, target=target)
    except ValueError as err:
        from pydantic import ValidationError

        from polytask._validation import describe_validation_error

        said = describe_validation_error(err) if isinstance(err, ValidationError) else err
        columns = "" if target is not None else (
            "; give its target column(s) with --target COL (once per column)"
        )  # fmt: skip
        raise ValueError(f"--task {name}:{kind}: {said}{columns}") from None
    if task.kind_spec.derives_targets:
        raise ValueError(
            f"--task {name}:{kind}: a {kind} task learns from the inputs alone, with no labels "
            "to fit from few rows; add it in the training config (auxiliary tasks) instead"
        )
    from polytask.adapt.strategies._registry import strategy_for

    given = {k: _param(k, v) for k, v in args.param}
    config = AdaptConfig(
        strategy=strategy_for(strategies, given) if given else strategies[0],
        init=inits[0],
        params=given,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    out = None if args.curve else _output(args, f"model-{name}.pt")
    fitted = FittedModel.load(args.checkpoint)
    pre = tabular_encoding(fitted.preprocessor, "adapt")  # refused before reading its data

    def read(path: Path, labels: bool = True) -> pd.DataFrame:
        """A data file, its missing feature (or, with `labels`, target) columns refused naming
        the file."""
        frame = read_csv(path)
        check_columns(frame, [*pre.numeric, *pre.categorical], "feature columns", str(path))
        if labels:
            check_columns(frame, task.target_columns, f"task {name!r}: target columns", str(path))
        return frame

    data = read(args.data)
    # evaluation rows may label only some tasks (the old ones); a curve scores the new one
    eval_data = read(args.eval_data, labels=args.curve) if args.eval_data else None
    if args.curve:
        others = {str(p): FittedModel.load(p) for p in args.compare_with}
        label = str(args.checkpoint)
        _print_status(args, f"k-shot curve of {name!r}: ks {args.ks}, {args.repeats} draws each")
        curve = kshot_curve(
            fitted,
            task,
            data,
            ks=args.ks,
            repeats=args.repeats,
            strategies=strategies,
            config=config,
            inits=inits,
            eval_data=eval_data,
            others=others,
            label=label,
            seed=args.seed,
        )
        console.print(curve_table(curve))
        return
    if eval_data is None:
        eval_data = _own_test_rows(args.checkpoint)
    check_new_task(fitted, task)  # refused before the status line says it is being fitted
    _print_status(args, f"fitting {name!r} ({kind}) with {config.strategy}")
    result = adapt(fitted, task, data, config, eval_data)
    assert out is not None
    result.fitted.save(out)
    console.print(adapt_table(result, fitted))
    console.print(f"wrote the adapted model ({', '.join(result.fitted.model.task_names)}) to {out}")


def cmd_edit(args: argparse.Namespace, console: Console) -> None:
    require_file(args.checkpoint, "checkpoint")
    if not args.remove and not args.rename:
        raise ValueError("nothing to do: give --remove TASK and/or --rename OLD=NEW")
    out = _output(args, "model-edited.pt")
    from polytask.adapt import remove_tasks, rename_tasks
    from polytask.app import FittedModel

    both = sorted({old for old, _ in args.rename} & set(args.remove))
    if both:
        raise ValueError(f"--remove and --rename both name {both}: give one or the other")
    fitted = FittedModel.load(args.checkpoint)
    if args.rename:
        olds = [old for old, _ in args.rename]
        twice = sorted({o for o in olds if olds.count(o) > 1})
        if twice:
            raise ValueError(f"--rename names {twice} more than once")
        fitted = rename_tasks(fitted, dict(args.rename))
    if args.remove:
        renamed = dict(args.rename)
        fitted = remove_tasks(fitted, [renamed.get(n, n) for n in args.remove])
    fitted.save(out)
    console.print(f"wrote the model with tasks {', '.join(fitted.model.task_names)} to {out}")


def _print_status(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _own_test_rows(checkpoint: str) -> Any:
    """The test rows of the run that wrote `checkpoint`, when its data can still be read (a
    single table or the built-in generator); None otherwise."""
    from polytask.app import RunConfig
    from polytask.app._data import load_frame, make_split
    from polytask.tasks import Task
    from polytask.train._checkpoint import load_checkpoint

    _, meta = load_checkpoint(checkpoint)
    saved = meta.get("config")
    if not saved or saved.get("data", {}).get("sources"):
        return None
    try:
        tasks = tuple(Task(**t) for t in meta["tasks"])
        config = RunConfig(data=saved["data"], tasks=tasks)
        frame = load_frame(config)
        return frame.iloc[make_split(config, len(frame), frame=frame).test]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def adapt_table(result: AdaptResult, before: FittedModel) -> Table:
    """The old tasks' primary metrics before and after, their largest raw output change, and
    the new task's metric; the caption says what the change is in, which old task got worse,
    and why a figure is missing."""
    from polytask.cli._render import format_value

    table = Table(
        title=f"Adapting {result.task!r} ({result.strategy}, {result.init} head, "
        f"{result.rows} rows)"
    )
    for col in ("task", "metric", "before", "after", "largest raw output change"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    notes = []
    for task in (t for t in before.tasks if not t.auxiliary):
        primary = task.primary.name
        change = result.old_change.get(task.name, math.nan)
        table.add_row(
            task.name,
            primary,
            _value(result.old_before, task.name, primary, format_value),
            _value(result.old_after, task.name, primary, format_value),
            "0 (unchanged)" if change == 0 else format_value(change),
        )
        worse = _worse_pct(result, task.name, primary, task.primary.higher_is_better)
        if worse > WORSE_PCT:
            notes.append(
                f"⚠ {task.name}: {primary} worse "
                + (f"by {worse:.0f}%" if math.isfinite(worse) else "(from 0)")
                + " after adapting "
                f"({result.strategy}); --strategy head_only keeps the old tasks' outputs as "
                "they were"
            )
    new = next(t for t in result.fitted.tasks if t.name == result.task)
    table.add_row(
        f"{result.task} (new)",
        new.primary.name,
        "—",
        _value(result.new_metrics, result.task, new.primary.name, format_value),
        "—",
    )
    notes.append(
        "largest raw output change: of each old task's head output on the adaptation rows, "
        "before the sigmoid or softmax (logits), regression in standardised units (× the "
        "target's std for its own units)"
    )
    if not result.old_before:
        notes.append(
            "no evaluation rows label the old tasks (--eval-data, else the run's test split): "
            "their metrics before and after are not shown"
        )
    if result.task not in result.new_metrics:
        notes.append(f"{result.task} is not scored: give --eval-data rows that label it")
    table.caption = Text("\n".join(notes), justify="left")
    return table


WORSE_PCT = 5.0
"""An old task whose primary metric gets worse than this (%) by adapting is flagged."""


def _worse_pct(result: AdaptResult, task: str, metric: str, higher_is_better: bool) -> float:
    """How much worse (%) `task`'s `metric` is after adapting; NaN where not measured."""
    try:
        before = float(result.old_before[task][metric])
        after = float(result.old_after[task][metric])
    except (KeyError, TypeError, ValueError):
        return math.nan
    if not (math.isfinite(before) and math.isfinite(after)):
        return math.nan
    lost = before - after if higher_is_better else after - before
    if before == 0:  # e.g. an error of 0 before: any loss is a change beyond any percentage
        return math.inf if lost > 0 else 0.0
    return 100 * lost / abs(before)


def _value(metrics: TaskMetrics, task: str, metric: str, fmt: Any) -> str:
    if task not in metrics:
        return "—"
    value = metrics[task][metric]
    reason = getattr(value, "reason", None)
    return f"n/a: {reason}" if reason else fmt(float(value))


def curve_table(curve: KShotCurve) -> Table:
    """Methods by k: mean ± std of the new task's primary metric over the draws; best in bold."""
    import numpy as np

    from polytask.cli._render import format_mean_std

    better = "higher" if curve.higher_is_better else "lower"
    table = Table(
        title=f"k-shot curve of {curve.task!r}: {curve.metric} on {curve.eval_rows} held-out "
        f"rows ({better} is better), k drawn from {curve.pool_rows} rows"
    )
    ks = [k for k in curve.ks if any(k in r for r in curve.results.values())]
    table.add_column("method")
    for k in ks:
        table.add_column(f"k={k}", justify="right")
    for method, by_k in curve.results.items():
        cells = []
        for k in ks:
            if k not in by_k:
                cells.append("—")
                continue
            spread = float(np.std(by_k[k])) if len(by_k[k]) > 1 else math.nan  # one draw
            text = format_mean_std(float(np.mean(by_k[k])), spread)
            cells.append(f"[bold]{text}[/bold]" if curve.best(k) == method else text)
        table.add_row(method, *cells)
    return table
