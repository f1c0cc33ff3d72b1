"""Meta-training episodes interleaved with multi-task training.

Ordinary multi-task steps go on as always; after every `every`-th step an episode runs: pick a
training task (at random, from the learner's own seeded generator), draw a support set of
`support` of its labelled training rows, and from (shared parameters θ, the meta head init φ of
the task's kind and output size) take `inner_steps` SGD steps of size `inner_lr` on that task's
loss, giving (θ′, φ′). The method (`outer`) then moves θ and φ towards what adapts well. The
real heads are never changed by an episode; φ lives in `Trainer.meta_init`, so it is saved in
every checkpoint and travels with the model (`FittedModel.meta_init`).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor
from torch.func import functional_call

from polytask.data._tensors import TaskData
from polytask.tasks._task import Task
from polytask.train._callbacks import Callback
from polytask.train.meta._init import MetaInit, mean_task_parameters, meta_init_key

if TYPE_CHECKING:
    from polytask.models._base import MultiTaskNet
    from polytask.train._loop import Trainer
    from polytask.train._step import StepResult

log = logging.getLogger("polytask")
Steps = Annotated[int, Field(ge=1)]
Rate = Annotated[float, Field(gt=0)]
SEED_OFFSET = 4099
"""The learner's generator is seeded with the run's seed plus this (its own stream)."""


@dataclass
class Episode:
    """One episode's task, rows and parameters: `names` (state-dict names of the shared
    parameters, then the task's own), `start` (θ, φ) and `adapted` (θ′, φ′)."""

    task: Task
    names: list[str]
    start: list[Tensor]
    adapted: list[Tensor]
    query_x: Tensor
    query_y: Tensor


class MetaLearner(Callback):
    """Runs an episode after every `every`-th training step; subclasses say how the outer
    update moves (θ, φ) from an episode (`outer`)."""

    name: ClassVar[str]

    def __init__(
        self,
        every: Steps = 4,
        inner_steps: Steps = 5,
        inner_lr: Rate = 0.05,
        outer_lr: Rate = 0.1,
        support: Steps = 10,
    ) -> None:
        self.every, self.inner_steps, self.support = every, inner_steps, support
        self.inner_lr, self.outer_lr = inner_lr, outer_lr
        self.generator = torch.Generator()
        self.episodes = self.skipped = 0
        self._rows: dict[str, tuple[Tensor, Tensor]] = {}
        self._best: MetaInit | None = None

    query_rows: ClassVar[bool] = False
    """Whether `outer` reads query rows (drawn apart from the support rows where there are
    enough)."""

    def setup(self, model: MultiTaskNet) -> MetaInit:
        """The meta head init to start from: per kind and output size, the mean of those tasks'
        heads. Refuses a model whose tasks of one group have differently shaped heads."""
        return mean_task_parameters(model)

    def begin(self, trainer: Trainer, state: dict[str, Any] | None) -> None:
        """At the start of `fit`: each task's labelled training rows, and the generator seeded
        from the run's seed, or the state a checkpoint saved (an exact resume)."""
        assert trainer.sampler is not None
        self._rows = {}
        for task in trainer.tasks:
            if task.kind_spec.derives_targets:
                continue  # a self-supervised task has no labels of its own to adapt to
            xs, ys = [], []
            for data in trainer.sampler.sources.values():
                if not isinstance(data, TaskData):
                    raise ValueError(
                        "meta_learning draws its episodes from the training rows in memory: "
                        "train on in-memory data (TaskData), not a streamed source"
                    )
                if task.name in data.targets:
                    target = data.targets[task.name]
                    keep = task.mask(target)
                    keep = keep if keep.dim() == 1 else keep.reshape(len(keep), -1).any(1)
                    xs.append(data.x[keep])
                    ys.append(target[keep])
            if xs and sum(len(x) for x in xs):
                self._rows[task.name] = (
                    torch.cat(xs).to(trainer.device),
                    torch.cat(ys).to(trainer.device),
                )
        short = {t: len(x) for t, (x, _) in self._rows.items() if len(x) <= self.support}
        small = {t: len(x) - self.support for t, (x, _) in self._rows.items()
                 if self.support < len(x) < 2 * self.support}  # fmt: skip
        if small and self.query_rows:
            shown = ", ".join(f"{t} {n}" for t, n in list(small.items())[:5])
            log.warning(
                "meta_params.support is %d rows, but %d task(s) have fewer than %d labelled "
                "training rows, so their queries hold fewer rows than their support (%s query "
                "rows): lower support, or read their query gradients as noisier",
                self.support, len(small), 2 * self.support, shown,
            )  # fmt: skip
        if short:
            shown = ", ".join(f"{t} {n}" for t, n in list(short.items())[:5])
            log.warning(
                "meta_params.support is %d rows, as many as or more than the labelled training "
                "rows of %d task(s) (%s): their episodes adapt on all their rows%s; lower "
                "support to the few rows a new task will have", self.support, len(short), shown,
                " and query those same rows" if self.query_rows else "",
            )  # fmt: skip
        self.generator.manual_seed(trainer.config.seed + SEED_OFFSET)
        self.episodes = self.skipped = 0
        self._best = None
        if state is not None:
            self.load_state_dict(state)

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if trainer.step % self.every == 0 and self._rows:
            self.episode(trainer)

    def episode(self, trainer: Trainer) -> None:
        """One episode on a task drawn at random, with support (and query) rows drawn from its
        labelled training rows; a non-finite one is skipped and counted (skipped/meta)."""
        names = list(self._rows)
        pick = int(torch.randint(len(names), (1,), generator=self.generator))
        task = next(t for t in trainer.tasks if t.name == names[pick])
        x, y = self._rows[task.name]
        order = torch.randperm(len(x), generator=self.generator).to(x.device)
        support, rest = order[: self.support], order[self.support :]
        query = (rest if len(rest) else order)[: self.support] if self.query_rows else support
        init = trainer.meta_init[meta_init_key(task)]
        if self.run_episode(trainer.model, init, task, (x[support], y[support]),
                            (x[query], y[query])):  # fmt: skip
            self.episodes += 1
            return
        self.skipped += 1
        trainer.skipped["meta"] = trainer.skipped.get("meta", 0) + 1
        log.warning(
            "step %d: a meta-learning episode on %r went non-finite; its update is skipped "
            "(lower meta_params.inner_lr)", trainer.step, task.name,
        )  # fmt: skip

    def run_episode(
        self,
        model: MultiTaskNet,
        init: Sequence[Tensor],
        task: Task,
        support: tuple[Tensor, Tensor],
        query: tuple[Tensor, Tensor],
    ) -> bool:
        """From (θ: the model's trainable shared parameters, φ: `init`, the meta head init of
        `task`'s group), `inner_steps` SGD steps on `task`'s loss on the `support` rows, then
        the outer update of θ and φ in place. The model's own heads are not changed. False (and
        nothing changed) when the update is not finite."""
        shared = [p for p in model.shared_parameters() if p.requires_grad]
        param_names = {id(p): n for n, p in model.named_parameters()}
        own = [param_names[id(p)] for p in model.task_parameters(task.name)]
        episode = Episode(
            task,
            [param_names[id(p)] for p in shared] + own,
            [p.detach() for p in shared] + [t.detach() for t in init],
            [],
            *query,
        )
        fast = [t.clone().requires_grad_(True) for t in episode.start]
        for _ in range(self.inner_steps):
            grads = self.gradients(model, episode, fast, *support)
            fast = [(f - self.inner_lr * g).detach().requires_grad_(True)
                    for f, g in zip(fast, grads, strict=True)]  # fmt: skip
        episode.adapted = fast
        moves = self.outer(model, episode)
        if not all(bool(torch.isfinite(m).all()) for m in moves):
            return False
        with torch.no_grad():
            for target, move in zip([*shared, *init], moves, strict=True):
                target.add_(move)
        return True

    def gradients(
        self, model: MultiTaskNet, episode: Episode, params: Sequence[Tensor], x: Tensor, y: Tensor
    ) -> list[Tensor]:
        """∇ of the episode task's loss on (x, y) with respect to `params` (zeros where a
        parameter does not reach it)."""
        buffers = {n: b.clone() for n, b in model.named_buffers()}  # batch norm stays put
        values = dict(zip(episode.names, params, strict=True))
        output = functional_call(model, {**values, **buffers}, (x,), strict=False)
        loss = episode.task.compute_loss(output[episode.task.name], y)
        grads = torch.autograd.grad(loss, list(params), allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]

    @abstractmethod
    def outer(self, model: MultiTaskNet, episode: Episode) -> list[Tensor]:
        """How much to add to each of (θ, φ) (in `episode.names` order) after an episode."""
        raise NotImplementedError

    def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        """Keep the meta init of the evaluation whose weights the stopper may restore."""
        stopper = trainer.stopper
        if stopper is not None and stopper.restore_best and stopper.best_step == trainer.step:
            self._best = {k: [t.detach().clone() for t in v] for k, v in trainer.meta_init.items()}

    def on_fit_end(self, trainer: Trainer) -> None:
        """With the best weights restored, the meta init of that evaluation comes with them."""
        stopper = trainer.stopper
        if stopper is not None and stopper.restore_best and self._best is not None:
            for key, tensors in self._best.items():
                for target, value in zip(trainer.meta_init[key], tensors, strict=True):
                    target.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "episodes": self.episodes,
                "skipped": self.skipped, "best": self._best}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.episodes, self.skipped = int(state["episodes"]), int(state["skipped"])
        self._best = state["best"]
