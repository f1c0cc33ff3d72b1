"""The Trainer: a short joint-training loop with validation, early stopping and hooks."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polytask._audience import cli_command, for_user
from polytask._signals import Terminated
from polytask._validation import checked
from polytask.balancers._base import Balancer, BilevelBalancer
from polytask.balancers._equal import EqualWeights
from polytask.data._loader import WindowLoader
from polytask.data._sampler import (
    MultiSourceSampler,
    check_scored,
    merge_sources,
    sources_for,
)
from polytask.data._schedules import make_schedule
from polytask.data._sequences import SequenceSource
from polytask.data._source import DataSource
from polytask.data._tensors import Batch, TaskData
from polytask.gradients._auxiliary import auxiliary_aware, auxiliary_mode_refusal
from polytask.models._base import MultiTaskNet
from polytask.tasks._task import Task
from polytask.train._alerts import DegradationAlert
from polytask.train._callbacks import (
    Callback,
    Checkpointer,
    EarlyStopping,
    ProgressDisplay,
    latest_checkpoint,
)
from polytask.train._compile import compile_model
from polytask.train._config import TrainConfig
from polytask.train._derived import auxiliary_logs, derive_batch, step_generator
from polytask.train._device import resolve_device
from polytask.train._distributed import (
    ProcessFailed,
    join_processes,
    peer_failure,
    process_device,
)
from polytask.train._evaluate import (
    TaskMetrics,
    evaluate,
    flatten,
    predict_raw,
    predict_source,
)
from polytask.train._guards import GradientMonitor, NonFiniteError, TrainingDiverged
from polytask.train._lbfgs import (
    FullBatchLBFGS,
    batch_refusal,
    lbfgs_refusal,
    lbfgs_step,
    lbfgs_warning,
    refit_refusal,
)
from polytask.train._param_groups import parameter_groups
from polytask.train._precision import LossScale
from polytask.train._relations import RELATIONS_FILE, RelationsMonitor, TaskRelations
from polytask.train._run_folder import RunLock
from polytask.train._selection import check_selection, make_stopper
from polytask.train._spread import Spread, accumulated_plan, spread_refusal
from polytask.train._state import load_state, resume_state, run_settings, save_state
from polytask.train._step import StepResult, plan_gradients, train_step
from polytask.train._window import Window, WindowSummary
from polytask.train.loggers._registry import run_loggers
from polytask.train.lr._base import LRScheduling, lr_logs
from polytask.train.meta._init import MetaInit
from polytask.train.meta._registry import make_meta_learner

log = logging.getLogger("polytask")
WEIGHT_FIT_EVERY = 16
"""Steps between effective-weight fits of coordinate-wise methods (logged window means)."""

OPTIMIZERS: dict[str, Any] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """The optimizer `name`, with its fused kernel where this torch and the parameters' device
    and dtype allow it: on CPU a fused AdamW step is several times faster than the per-tensor
    ones (the speed benchmark's MLP, one thread: 0.62 ms against 2.4 ms foreach and 3.0 ms a
    loop), and it computes the same update."""
    if name == "lbfgs":  # full batch, one group, weight decay as an L2 term (see _lbfgs)
        return FullBatchLBFGS(groups, lr)
    cls = OPTIMIZERS[name]
    try:
        return cls(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # fused kernel unsupported here
        return cls(groups, lr=lr)


def _check_parameters_split(model: MultiTaskNet) -> None:
    """Refuse trainable parameters in neither `shared_parameters()` nor any task's
    `task_parameters(name)` (a model of one's own): a gradient balancer updates only those
    two sets, so such a parameter would stay frozen without a word (a loss weighting's plain
    backward trains it)."""
    listed = {id(p) for p in model.shared_parameters()}
    for name in model.task_names:
        listed.update(id(p) for p in model.task_parameters(name))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in listed]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        )
        raise ValueError(
            f"{type(model).__name__}: trainable parameters in neither shared_parameters() nor "
            f"any task's task_parameters(): {shown}. A gradient balancer updates those two "
            "sets only, so these would never train: list each in one of them (or set "
            "requires_grad False to freeze it)"
        )


def _check_metric_packages(tasks: Sequence[Task]) -> None:
    """Refuse a reported task whose metric needs a package that is not installed, naming the
    install command and the task's other metrics."""
    for task in tasks:
        if task.auxiliary:
            continue
        metrics = task.metric_objects()
        for metric in metrics:
            install = metric.missing_package()
            if install is not None and metric.needs is not None:
                others = [m.name for m in metrics if m.missing_package() is None]
                instead = f", or choose other metrics (metrics: {others})" if others else ""
                raise ValueError(
                    f"task {task.name!r}: its metric {metric.name} needs {metric.needs[0]}, "
                    f"which is not installed: {install}{instead}"
                )


class Trainer:
    """Trains a multi-task model (any `MultiTaskNet`) on all its tasks jointly.

    Each step asks the balancer to combine the task losses; each epoch (or `eval_every` steps)
    ends a balancer window, evaluates on the validation data and runs the callbacks.
    """

    @checked
    def __init__(
        self,
        model: MultiTaskNet,
        balancer: Balancer | None = None,
        config: TrainConfig | None = None,
        callbacks: Sequence[Callback] = (),
        run_dir: str | Path | None = None,
        description: str = "training",
        run_meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        cfg = self.config
        device = resolve_device(cfg.device)
        self.processes = join_processes(cfg.dist_backend, cfg.dist_timeout_s, device)
        """This process's place among the processes of a torchrun launch (None: alone)."""
        self.device = process_device(device, self.processes)
        main = self.processes is None or self.processes.main
        self.model = model.to(self.device)
        self.tasks = model.tasks
        _check_metric_packages(self.tasks)  # before any step, not at the first evaluation
        self.balancer = auxiliary_aware(  # the balancer itself unless auxiliary_gradients asks
            balancer if balancer is not None else EqualWeights(),
            [t.name for t in self.tasks if t.auxiliary],
            self.config.auxiliary_gradients,
        )
        self.balancer.setup(model.task_names)
        self.balancer.to(self.device)
        params = parameter_groups(model, self.config)
        params.append({"params": list(self.balancer.parameters()), "weight_decay": 0.0})
        self.optimizer = make_optimizer(
            self.config.optimizer, [g for g in params if g["params"]], self.config.lr
        )
        self.plan = plan_gradients(self.model, self.balancer, self.config)
        if self.plan.method.per_task:
            _check_parameters_split(self.model)
        refusal = auxiliary_mode_refusal(cfg.auxiliary_gradients, self.plan.method, model.tasks)
        if refusal is not None:
            raise ValueError(refusal)
        self.loss_scale = LossScale() if cfg.precision == "16" else None
        """The float16 loss scale (`precision: 16`), saved in checkpoints."""
        self.spread = Spread(self.processes, str(cfg.precision), self.loss_scale, cfg.accumulate,
                             cfg.seed)  # fmt: skip
        refusal = spread_refusal(self.plan, self.balancer, self.spread)
        if refusal is None and isinstance(self.optimizer, FullBatchLBFGS):
            refusal = lbfgs_refusal(cfg, self.model, self.balancer, self.plan, self.spread.plain)
            warning = None if type(model).grown else lbfgs_warning(cfg)
            if refusal is None and main and warning is not None:
                log.warning("%s", warning)
        if refusal is None:
            refusal = refit_refusal(model, cfg)
        if refusal is not None:
            raise ValueError(refusal)
        self.plan = accumulated_plan(self.plan, self.model, self.spread, cfg.max_jacobian_mb)
        if not self.spread.plain:  # its steps record the trunk with autograd (see _spread)
            self.plan = dataclasses.replace(self.plan, walk=False)
        if self.config.compile:  # refused here, before training, where the mode cannot use it
            if not self.spread.plain and self.plan.method.per_task:
                raise ValueError(
                    "training.compile does not work with a gradient balancer's per-task "
                    "gradients over processes, micro-batches or a float16 loss scale: drop "
                    "compile, or train in one process in float32 or bf16 without accumulate"
                )
            log.info("%s", compile_model(self.model, self.balancer, self.plan))
        meta = self.config.meta_learning
        if meta and self.processes is not None:
            raise ValueError(
                "training.meta_learning runs its episodes in one process: it does not work under "
                "torchrun yet; meta-train in one process"
            )
        self.meta = make_meta_learner(meta, **self.config.meta_params) if meta else None
        """Meta-training episodes (`config.meta_learning`), run as a callback during `fit`."""
        self.meta_init: MetaInit = self.meta.setup(self.model) if self.meta else {}
        """The meta head init per "kind:out_features" that meta-training learns (empty
        without it): saved in checkpoints; where a new task's head starts
        (`polytask.train.meta.initial_task_parameters`)."""
        self._monitor = GradientMonitor(self.model)
        self.lr_schedule = LRScheduling.of(cfg)
        """Runs `config.lr_schedule` during `fit` (None: a constant learning rate)."""
        alone = self.processes is None  # the probes would read one process's rows only
        if not alone and main and (cfg.affinity_every or cfg.conflict_every) is not None:
            # conflict_every is on by default: said, not warned of, when it is the only one
            say = log.warning if cfg.affinity_every is not None else log.info
            say(
                "training.affinity_every and conflict_every are off under torchrun: the "
                "probes would read one process's rows (no conflict/ or affinity/ logs, no "
                "relations.json); measure task relations in one process"
            )
        self.relations = RelationsMonitor(
            model.task_names,
            cfg.conflict_every if alone else None,
            cfg.affinity_every if alone else None,
            cfg.lookahead_lr or cfg.lr,
        )
        """Measures gradient conflict and task affinity during `fit` (see `TaskRelations`)."""
        self.task_relations: TaskRelations | None = None
        """How the tasks related over the training so far (set when `fit` ends)."""
        self.sampler: MultiSourceSampler | None = None
        self.skipped: dict[str, int] = {}
        """Steps skipped for a non-finite loss or gradient, per task (or "shared")."""
        self.resumed: dict[str, Any] = {}
        """States a loaded checkpoint hands to the next `fit` (sampler, early stopping, RNG)."""
        self.stopper: EarlyStopping | None = None
        self.run_dir = Path(run_dir) if run_dir is not None and main else None
        """Where the run's files go; None on every process but the main one."""
        self.description = description
        """What this training is, in progress lines and warnings ("seed 0 STL churn")."""
        self.unresumable: str | None = None
        """Why the run this training is part of cannot be resumed (a member of an ensemble
        trained one after another), said instead of the resume command when interrupted."""
        self.callbacks: list[Callback] = list(callbacks)
        if self.config.progress and main:
            self.callbacks.append(ProgressDisplay(description))
        if main:
            self.callbacks += run_loggers(self.run_dir, cfg.loggers, cfg.logger_params)
        self.step = self.epoch = self.best_step = self.total_steps = self.eval_every = 0
        """`step`: steps taken; `epoch`: the epoch of the latest step, counted from 1 (0 before
        the first) as in metrics.csv, progress lines and checkpoints."""
        self._last_rows = 0  # rows of this process's last training batch
        self.interrupted = False
        """Whether the last `fit` was stopped by Ctrl-C or SIGTERM (its end says nothing of
        a final model)."""
        self.should_stop = False
        self.history: list[dict[str, float]] = []
        self.selected: dict[str, dict[str, Any]] = {}
        """With `selection: per_task`, the evaluation serving each task (step, epoch, by what)."""
        self.alerts: list[dict[str, Any]] = []
        """Degradation alerts raised so far (see `TrainConfig.degradation_window`)."""
        self.run_meta: dict[str, Any] = dict(run_meta or {})
        """Extra settings recorded in checkpoints and compared on resume (JSON-serialisable):
        the CLI passes its whole config."""
        self.checkpoint_meta: dict[str, Any] = {}
        """Metadata written into every checkpoint but not compared on resume (JSON-
        serialisable): `polytask.app.fit` puts the data encoding here, so that any checkpoint
        of its runs (step-*.pt, best.pt) can predict."""

    @checked
    def fit(
        self,
        train: DataSource | Mapping[str, DataSource],
        val: DataSource | Mapping[str, DataSource] | None = None,
    ) -> list[dict[str, float]]:
        """Train; returns the evaluation history (one dict of logs per window).

        `train` is one data set, or several (name → data, each labelling some of the tasks:
        e.g. one per task), drawn from by `config.schedule`; `val` likewise (several are
        evaluated together, each task on the rows that label it)."""
        devices = [self.device] if self.device.type == "cuda" else []
        lock = RunLock(self.run_dir) if self.run_dir is not None else nullcontext()
        with lock, torch.random.fork_rng(devices=devices):  # dropout draws stay local
            torch.manual_seed(self.config.seed)
            return self._fit(train, val)

    def check_data(
        self,
        train: DataSource | Mapping[str, DataSource],
        val: DataSource | Mapping[str, DataSource] | None = None,
    ) -> None:
        """Refuse what `fit` would refuse about these data sets and settings before its first
        step (e.g. L-BFGS batches smaller than the training rows, a selection metric no task
        has), without training: so that a run can be refused before its folder is touched."""
        sampler = self._sampler(train)
        if val is not None:
            merged = merge_sources(val) if isinstance(val, Mapping) else val
            self._check_scored(merged, "the validation data")
        check_selection(self.config, self.tasks, val is not None)
        if self.lr_schedule is not None:
            self.lr_schedule.check(self.tasks, self._steps(sampler), val is not None)

    def _steps(self, sampler: MultiSourceSampler) -> int:
        """The run's steps: `steps`, else `epochs` of the sampler's batches."""
        cfg = self.config
        return cfg.steps if cfg.steps is not None else (cfg.epochs or 0) * sampler.steps_per_epoch

    def _sampler(self, train: DataSource | Mapping[str, DataSource]) -> MultiSourceSampler:
        """The sampler of the training batches (refused for L-BFGS unless one batch a step)."""
        cfg = self.config
        given = dict(train) if isinstance(train, Mapping) else {"train": train}
        derived = [t.name for t in self.tasks if t.kind_spec.derives_targets]
        sources = sources_for(given, self.model.task_names, every_row=derived)
        self._check_tensors(sources)
        schedule = make_schedule(cfg.schedule, **cfg.schedule_params)
        if len(sources) == 1 and not schedule.joint:
            log.warning(
                "training.schedule %r picks which data source each step draws from, and this "
                "run has one (one table labelling every task): it trains as 'joint'. Give each "
                "task its own source (data.sources; Trainer.fit({task: data, ...})) to sample "
                "tasks", cfg.schedule,
            )  # fmt: skip
        sampler = MultiSourceSampler(sources, schedule, cfg.batch_size, cfg.seed, cfg.epochs or 1)
        if isinstance(self.optimizer, FullBatchLBFGS):
            sizes = [int(n) for n in sampler.sizes]
            refused = batch_refusal(sampler.steps_per_epoch, cfg.batch_size, sizes)
            if refused is not None:
                raise ValueError(refused)
        return sampler

    def _fit(
        self,
        train: DataSource | Mapping[str, DataSource],
        val: DataSource | Mapping[str, DataSource] | None,
    ) -> list[dict[str, float]]:
        cfg = self.config
        if self.step > 0 and not self.resumed:
            raise RuntimeError(
                f"this Trainer has trained already (to step {self.step}), and fit() starts a "
                "run: make a new Trainer for another run (Trainer(model, config) continues "
                "from the model's present weights), or keep checkpoints (run_dir) and "
                "Trainer.resume them with more epochs to train on"
            )
        sampler = self._sampler(train)
        if val is None:  # with validation data, make_stopper below checks the monitor
            check_selection(cfg, self.tasks, validated=False)
        derived = [t.name for t in self.tasks if t.kind_spec.derives_targets]
        if val is not None:  # several sets evaluated as one; one is read in batches each time
            val = merge_sources(val) if isinstance(val, Mapping) else val
            self._check_scored(val, "the validation data")
        if self.processes is not None:  # every process draws the global batch, keeps its share
            sampler.share = self.processes.share
        self.sampler = sampler
        per_epoch = sampler.steps_per_epoch
        self.total_steps = self._steps(sampler)
        sampler.epochs = -(-self.total_steps // per_epoch)  # what the annealed schedule spans
        self.eval_every = eval_every = cfg.eval_every or per_epoch
        self.stopper = None
        if val is not None:
            self.stopper = make_stopper(cfg, self.tasks)  # joint or per-task selection
        callbacks = [*self.callbacks, *([self.stopper] if self.stopper else [])]
        if self.lr_schedule is not None:  # before the stopper and the checkpoints
            callbacks.insert(len(self.callbacks), self.lr_schedule)
        if self.meta is not None:  # after the stopper: it keeps the init of the best weights
            callbacks.append(self.meta)
        if val is not None and cfg.degradation_window is not None:
            callbacks.append(DegradationAlert(self.tasks, cfg.degradation_window, cfg.selection))
        if self.run_dir is not None and (cfg.keep_last or cfg.keep_best):
            best = self.stopper if cfg.keep_best else None
            callbacks.append(Checkpointer(self.run_dir / "checkpoints", cfg.keep_last, best))
        resumed, self.resumed = self.resumed, {}
        if resumed.get("early_stopping") is not None and self.stopper is not None:
            self.stopper.load_state_dict(resumed["early_stopping"])
            if self.stopper.exhausted:  # the run had stopped early: nothing more to train
                self.should_stop = True
                log.warning(
                    "the resumed run had stopped early at step %d (no better validation "
                    "value for `patience` evaluations): nothing to train", self.step
                )  # fmt: skip
        if resumed and not self.should_stop and self.step >= self.total_steps:
            log.warning(
                "the resumed run had already taken all its %d steps: nothing to train (raise "
                "the number of epochs or steps to train it longer)", self.total_steps
            )  # fmt: skip
        if resumed.get("rng") is not None:
            torch.set_rng_state(resumed["rng"])
        if resumed.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(resumed["cuda_rng"], self.device)
        if resumed.get("sampler") is not None:
            sampler.load_state_dict(resumed["sampler"])
        if resumed.get("relations") is not None:
            self.relations.load_state_dict(resumed["relations"])
        if resumed.get("loss_scale") is not None and self.loss_scale is not None:
            self.loss_scale.load_state_dict(resumed["loss_scale"])
        if self.meta is not None:
            self.meta.begin(self, resumed.get("meta"))
        if self.processes is not None:  # start from the main process's weights everywhere
            held = [*self.model.parameters(), *self.model.buffers(), *self.balancer.parameters()]
            self.processes.broadcast_([t.data for t in held])
        if self.lr_schedule is not None:
            self.lr_schedule.begin(self, resumed.get("lr_schedule"), val is not None)
        for cb in callbacks:
            cb.on_fit_start(self)
        window = Window()
        val_batches = self._val_batches(val, cfg.seed + 1)
        log.info("%s: %s", type(self.balancer).__name__, self.plan.describe())
        batches = self._batches(sampler)
        if type(self.model).grown and self.step > 0:  # a resumed grown model: it is done
            self.should_stop = True
        try:
            while self.step < self.total_steps and not self.should_stop:
                self.epoch = self.step // per_epoch + 1  # counted from 1, as users see it
                batch = next(batches).to(self.device)
                self._last_rows = int(batch.x.shape[0])  # this process's share
                derive = None
                if derived and self.spread.plain:  # a generator only where needed
                    batch = derive_batch(batch, self.tasks, step_generator(cfg.seed, self.step))
                elif derived:  # each piece of a spread step derives its own rows
                    derive = self._derive_piece(self.step)
                started = time.perf_counter()
                try:
                    if isinstance(self.optimizer, FullBatchLBFGS):
                        result = lbfgs_step(self.model, self.balancer, self.optimizer, batch,
                                            self.tasks, self._monitor)  # fmt: skip
                    else:
                        result = train_step(
                            self.model,
                            self.balancer,
                            self.optimizer,
                            batch,
                            self.tasks,
                            self.plan,
                            next(val_batches).to(self.device) if val_batches else None,
                            cfg.grad_clip,
                            self._monitor,
                            fit_weights=self._fits_weights(eval_every)
                            or self.relations.due(self.step + 1),
                            spread=self.spread,
                            step=self.step,
                            derive=derive,
                        )
                except NonFiniteError as err:  # skips the step, or stops with the weights kept
                    if not self._overflowed(err):
                        self._non_finite(err, batch)
                    sampler.observe(None)
                    self.step += 1
                else:
                    if self.loss_scale is not None:
                        self.loss_scale.finite_step()
                    seconds = time.perf_counter() - started
                    window.add(result, seconds)
                    # (read from the device only for a schedule that needs them)
                    sampler.observe(
                        self._measured(result) if sampler.schedule.reads_losses else None
                    )
                    self.step += 1
                    if derive is not None and self.relations.due(self.step):
                        # micro-batches derived their own rows: the probe derives the batch's
                        # (it read the placeholder targets of the self-supervised tasks)
                        batch = derive_batch(batch, self.tasks, step_generator(cfg.seed, self.step))
                    self.relations.after_step(
                        self.step, self.total_steps, self.model, self.tasks, batch,
                        result.gramian, result.labelled, self.plan.method.name, seconds,
                    )  # fmt: skip
                    for cb in callbacks:
                        cb.on_step_end(self, result)
                # a skipped step ends its window too: its evaluation and checkpoint are kept
                if self.step % eval_every == 0 or self.step == self.total_steps:
                    self._end_window(window.close(self.model.task_names), val, callbacks)
                    if type(self.model).grown and self.step < self.total_steps:
                        log.info(
                            "%s was grown in its first step; the %d steps left would change "
                            "nothing: stopped (set training.epochs: 1)",
                            type(self.model).__name__, self.total_steps - self.step,
                        )  # fmt: skip
                        self.should_stop = True
            self.epoch = -(-self.step // per_epoch)  # the epoch of the last step taken
            self._summarise_relations()
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM under the CLI (`Terminated`)
            self.interrupted = True
            if self.processes is None or self.processes.main:  # the main process says it
                log.warning("%s", self._interrupted(stop))
            raise
        except RuntimeError as err:
            if self.processes is None or not peer_failure(err):
                raise
            raise ProcessFailed(self._peer_gone(err)) from None
        finally:
            batches.close()  # stops data workers
            for cb in callbacks:
                cb.on_fit_end(self)
        return self.history

    def _measured(self, result: StepResult) -> dict[str, float]:
        """A step's loss of each reported task it labelled (NaN otherwise), for the sampler's
        per-source losses: an auxiliary task's loss is no measure of how far a task is."""
        assert result.labelled is not None
        kept = result.labelled.tolist()
        return {
            t.name: float(v) if on and not t.auxiliary else math.nan
            for t, v, on in zip(self.tasks, result.losses.tolist(), kept, strict=True)
        }

    def _summarise_relations(self) -> None:
        """Keep the run's task relations, log them, and write them into the run folder."""
        self.task_relations = self.relations.summary()
        if self.task_relations is None:
            return
        log.debug("%s", self.task_relations.describe())  # the CLI prints it
        if self.run_dir is not None:
            self.task_relations.save(self.run_dir / RELATIONS_FILE)

    def _batches(self, sampler: MultiSourceSampler) -> Generator[Batch, None, None]:
        """Training batches, drawn one evaluation window at a time (see `WindowLoader`)."""
        loader = WindowLoader(sampler, self.config.num_workers, self.device.type == "cuda")
        try:
            while True:
                left = self.total_steps - self.step
                yield from loader.window(min(self.eval_every - self.step % self.eval_every, left))
        finally:
            loader.close()

    def _peer_gone(self, err: RuntimeError) -> str:
        """What a failed collective (another process stopped) left behind, and how to go on."""
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = f"another process of this torchrun job stopped at step {self.step} ({first})"
        checkpoints = self.run_dir / "checkpoints" if self.run_dir is not None else None
        newest = latest_checkpoint(checkpoints) if checkpoints is not None else None
        if newest is None:
            return f"{where}; see that process's error above"
        how_to = for_user("Trainer.resume(run_dir) before fit",
                          f"`{self._launcher()}polytask train CONFIG --resume`")  # fmt: skip
        return f"{where}; the newest checkpoint is {newest}: {how_to} continues from it"

    def _interrupted(self, stop: KeyboardInterrupt) -> str:
        """What a Ctrl-C (or SIGTERM) left behind, and how to continue."""
        how = "terminated" if isinstance(stop, Terminated) else "interrupted"
        where = f"{how} at step {self.step} of {self.total_steps}"
        command = cli_command()
        if command not in (None, "train"):  # compare and demo train several models afresh
            return f"{where}; `polytask {command}` does not resume: run it again"
        if self.unresumable is not None:  # a member of an ensemble or blend
            return f"{where}; {self.unresumable}"
        newest = latest_checkpoint(self.run_dir / "checkpoints") if self.run_dir else None
        if newest is None and self.run_dir is not None and self.config.keep_last >= 1:
            first = self.eval_every or self.total_steps
            return (
                f"{where}; no checkpoint yet, nothing to resume from: the first is written at "
                f"the end of the first evaluation window (step {first}; each epoch, or "
                "training.eval_every steps)"
            )
        if newest is None:
            return f"{where}; no checkpoint was written, nothing to resume from" + for_user(
                " (give a run folder and keep_last >= 1)", " (set training.keep_last >= 1)"
            )
        how_to = for_user(
            "Trainer.resume(run_dir) before fit",
            f"`{self._launcher()}polytask train CONFIG --resume` (with the --out it used)",
        )
        return f"{where}; the newest checkpoint is {newest}: {how_to} continues from it exactly"

    def _launcher(self) -> str:
        """How this run was started, for the command that resumes it: under torchrun on one
        machine `torchrun --nproc-per-node N -m ` (on several, torchrun as it was launched);
        '' for one process."""
        if self.processes is None:
            return ""
        world = self.processes.world_size
        if os.environ.get("LOCAL_WORLD_SIZE", str(world)) != str(world):
            return "torchrun (launched as before) -m "
        return f"torchrun --nproc-per-node {world} -m "

    def _derive_piece(self, step: int) -> Callable[[Batch, int], Batch]:
        """How piece i of a spread step makes its self-supervised rows: from a generator of its
        own (training seed, step, process, piece)."""
        rank = self.processes.rank if self.processes is not None else 0
        pieces = self.config.accumulate

        def derive(piece: Batch, i: int) -> Batch:
            seed = self.config.seed + 1 + rank * pieces + i
            return derive_batch(piece, self.tasks, step_generator(seed, step))

        return derive

    def _overflowed(self, err: NonFiniteError) -> bool:
        """Whether a non-finite gradient is a float16 overflow: the loss scale is halved and the
        step skipped (as torch's GradScaler does), not counted as a divergence."""
        if self.loss_scale is None or err.what != "gradient" or not self.loss_scale.overflow():
            return False
        log.debug("step %d: float16 overflow; loss scale now %g", self.step + 1,
                  self.loss_scale.value)  # fmt: skip
        return True

    def _fits_weights(self, eval_every: int) -> bool:
        """Whether this step fits the logged effective weights of a coordinate-wise method:
        every `WEIGHT_FIT_EVERY`-th step and each window's last, not every step (two passes
        over J that only feed the log)."""
        nxt = self.step + 1
        return self.step % WEIGHT_FIT_EVERY == 0 or nxt % eval_every == 0 or nxt == self.total_steps

    def _non_finite(self, err: NonFiniteError, batch: Batch) -> None:
        """Apply `config.on_nonfinite` to a step whose loss or gradient was NaN or infinite
        (caught before the optimizer step, so the weights are still the last good ones)."""
        where = f"step {self.step + 1}: non-finite {err.what} in {err.tasks}"
        sources = self.sampler.sources.values() if self.sampler is not None else ()
        tensors = all(isinstance(s, TaskData) for s in sources)
        if tensors and batch.x.is_floating_point() and batch.x.ndim == 2:  # rows of numbers
            bad = (~torch.isfinite(batch.x)).any(dim=0).nonzero().flatten().tolist()
            if bad:  # not the learning rate: the inputs
                raise TrainingDiverged(
                    f"{where}: the batch's inputs hold NaN or infinite values (columns "
                    f"{bad[:10]} of x): fill or drop them before training (the table "
                    "preprocessor, TabularPreprocessor, fills missing numbers)"
                ) from None
        if self.config.on_nonfinite == "skip":
            for task in err.tasks:
                self.skipped[task] = self.skipped.get(task, 0) + 1
            log.warning("%s; step skipped (training.on_nonfinite: skip)", where)
            return
        kept = ""
        if self.run_dir is not None:
            kept = f"; the last good weights are in {self.save(self.run_dir / 'last_good.pt')}"
        raise TrainingDiverged(
            f"{where}{kept}. Lower training.lr, set training.grad_clip, check that task's "
            "labels, or set training.on_nonfinite: skip to step over such batches"
        ) from None

    def _val_batches(self, val: DataSource | None, seed: int) -> Iterator[Batch] | None:
        """An endless stream of validation batches, one per step, for balancers that need
        them: pass p over the rows in an order drawn from (seed, p), so that a resumed run
        reads the batches from where the stopped one was (from the start, its balancer's
        weights drifted from the uninterrupted run's)."""
        if not isinstance(self.balancer, BilevelBalancer):
            return None
        if val is None:
            raise ValueError(
                f"{type(self.balancer).__name__} learns its weights on validation data: "
                + for_user(
                    "pass val to fit()",
                    "give the split a validation part (data.split.val_fraction > 0)",
                )
            )
        size = self.config.batch_size
        first, offset = divmod(self.step, -(-len(val) // size))

        def passes() -> Iterator[Batch]:
            for p in itertools.count(first):
                batches = val.batches(size, shuffle=True, generator=step_generator(seed, p))
                yield from itertools.islice(batches, offset if p == first else 0, None)

        return passes()

    def _end_window(
        self, window: WindowSummary, val: DataSource | None, callbacks: Sequence[Callback]
    ) -> None:
        self.balancer.epoch_end()
        logs: dict[str, float] = {"step": self.step, "epoch": self.epoch}  # ints in metrics.csv
        names = self.model.task_names
        train_losses = window.losses
        measured = window.measured  # NaN where no step labelled the task, not 0
        logs.update({f"train/{t}/loss": float(v) for t, v in zip(names, measured, strict=True)})
        reported = torch.tensor([not t.auxiliary for t in self.tasks])  # auxiliary: not summed
        logs["train/loss"] = float(measured[reported.to(measured.device)].nansum())
        logs["time/step_ms"] = window.step_ms
        logs.update(lr_logs(self))
        weights = window.weights
        labelled = (window.labelled > 0).to(self.device)
        if weights is None and not bool(labelled.any()):  # every step of the window skipped
            weights = torch.full((len(names),), math.nan)
            logs["train/loss"] = math.nan
        elif weights is None:  # a loss weighting's weights at the window's losses, as a step
            # on the tasks the window labelled (the others' 0 is no loss: GLS's and STCH's
            # weights read 0, FAMO's all on them)
            with self.balancer.labelled_tasks(labelled):
                weights = self.balancer.weights(train_losses.to(self.device)).detach()
        logs.update({f"weight/{t}": float(w) for t, w in zip(names, weights, strict=True)})
        logs.update(self._diagnostics())  # e.g. expert usage on the last training batch
        logs.update(window.grad_norms)
        logs = auxiliary_logs(logs, self.tasks)  # auxiliary tasks' under auxiliary/TASK/...
        logs.update(self.relations.window_logs())
        logs.update({f"skipped/{t}": n for t, n in self.skipped.items()})  # counts: ints
        if self.sampler is not None and len(self.sampler.names) > 1:
            self.sampler.schedule.update(self.sampler.source_losses())
            probs = self.sampler.probabilities()
            logs.update(
                {f"sample/{n}": float(p) for n, p in zip(self.sampler.names, probs, strict=True)}
            )
        if val is not None:
            logs.update(flatten(self.evaluate(val), "val"))
        self.history.append(logs)
        for cb in callbacks:
            cb.on_eval_end(self, logs)

    def _diagnostics(self) -> dict[str, float]:
        """The model's diagnostics of the last training batch, under torchrun the mean of
        every process's share weighted by its rows (each process saw only its own rows; one
        without rows in that batch has none to say)."""
        values = self.model.diagnostics()
        if self.processes is None or not values:
            return values
        local = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        rows = float(self._last_rows) if bool(torch.isfinite(local).all()) else 0.0
        total = torch.cat([torch.nan_to_num(local) * rows, local.new_tensor([rows])])
        self.processes.sum_(total)
        mean = total[:-1] / total[-1] if float(total[-1]) > 0 else torch.full_like(local, math.nan)
        return dict(zip(values, mean.tolist(), strict=True))

    @checked
    def evaluate(
        self, data: DataSource | Mapping[str, DataSource], summaries: bool = False
    ) -> TaskMetrics:
        """Per-task loss and metrics on `data` (regression metrics in original units); several
        data sets are evaluated together, each task on the rows that label it. `summaries`:
        also the task mean and pooled metrics of tasks made from one column, and a multilabel
        task's per-label metrics (`evaluate`)."""
        rows = merge_sources(data) if isinstance(data, Mapping) else data
        self._check_scored(rows, "the data to evaluate")
        return evaluate(
            self.model, self.tasks, rows, self.config.batch_size * 4, self.device, self.processes,
            summaries,
        )  # fmt: skip

    def _check_tensors(self, sources: Mapping[str, DataSource]) -> None:
        """Refuse a task none of whose training rows is labelled (all NaN or -100) in data
        held as tensors: it would train on nothing and score NaN, without a word; and float
        inputs of another precision than the model's (torch's message names neither)."""
        weights = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        for name, source in sources.items():
            x = source.x if isinstance(source, TaskData) else None
            if x is not None and x.is_floating_point() and weights and x.dtype != weights:
                raise ValueError(
                    f"the inputs x of {name!r} are {x.dtype} and the model's weights "
                    f"{weights} (torch.from_numpy keeps NumPy's float64): give x as "
                    f"x.to({weights}), or the model the inputs' precision"
                )
        for source in sources.values():
            if isinstance(source, TaskData):
                self.model.check_targets(source.targets)
        for task in self.tasks:
            holding = [s for s in sources.values() if task.name in s.target_like]
            tensors = [s for s in holding if isinstance(s, TaskData)]
            if not holding or len(tensors) < len(holding):
                continue
            if not any(bool(task.mask(s.targets[task.name]).any()) for s in tensors):
                raise ValueError(
                    f"task {task.name!r} has no labelled row in the training data (its targets "
                    "are all NaN or -100): give it labelled rows, or leave the task out"
                )

    def _check_scored(self, data: DataSource, what: str) -> None:
        """`check_scored` for the tasks whose targets come from the data."""
        named = [t.name for t in self.tasks if not t.auxiliary and not t.kind_spec.derives_targets]
        check_scored(data, named, what)

    @checked
    def predict(self, x: Tensor | DataSource) -> dict[str, Tensor]:
        """Per-task predictions of inputs `x` or of a data source's rows (tensors, images read
        a batch at a time): probabilities for classification, regression in the targets'
        encoded units (standardised where the data's `target_scale` says so: multiply by its
        std and add its mean for the original units, as `evaluate`'s metrics are); auxiliary
        tasks make none. Texts and audio: `FittedModel.predict`, which decodes their tokens."""
        if isinstance(x, SequenceSource):
            raise TypeError(
                "Trainer.predict takes tensors, table rows and images; texts and audio are "
                "decoded by FittedModel.predict(frame) (tags per word, transcripts)"
            )
        bs = self.config.batch_size * 4
        raw = (predict_raw(self.model, x, bs, self.device) if isinstance(x, Tensor)
               else predict_source(self.model, x, bs, self.device))  # fmt: skip
        return {t.name: t.predict(raw[t.name]) for t in self.tasks if not t.auxiliary}

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Checkpoint model, optimizer, balancer, sampler, early-stopping and RNG state with
        JSON metadata (step, epoch, history) and `meta`."""
        return save_state(self, path, meta)

    def run_settings(self) -> dict[str, Any]:
        """What makes this run this run (recorded in checkpoints, compared on resume)."""
        return run_settings(self)

    def resume(self, run_dir: str | Path, strict: bool = True) -> Path | None:
        """Load the newest checkpoint in RUN_DIR/checkpoints (None when there is none), so
        that `fit` continues exactly where that run stopped. A checkpoint of a different run
        (other settings than length, device, workers, display, checkpoint policy) is refused,
        naming the differences; `strict=False` loads it anyway with a warning."""
        return resume_state(self, run_dir, strict)

    def load(self, path: str | Path, strict: bool = True) -> dict[str, Any]:
        """Restore model, optimizer and balancer state; returns the metadata. Mismatched
        settings or versions are explained (see `resume`)."""
        return load_state(self, path, strict)
