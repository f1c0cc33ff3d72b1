"""A run stopped mid-way and resumed ends bit-identical to the uninterrupted one, for every
balancer with state: GradNorm, ExcessMTL, MetaBalance, MoCo and DB-MTL size theirs at the
first step and could not be resumed at all (a size mismatch blamed the settings), and the
bilevel ones (auto_lambda, moml, forum) read their validation batches from the start again,
drifting from the uninterrupted run's weights (found by an outside review)."""

import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.balancers import BALANCERS
from polytask.train import Callback

TASKS = [Task("a", "regression"), Task("b", "regression")]
STATEFUL = sorted(
    n for n in BALANCERS
    if n not in ("fixed", "krum", "trimmed_mean")  # fixed needs weights; the others 3+ tasks
    and (make_balancer(n).state_dict() or BALANCERS[n].updates_state)
)  # fmt: skip


def _data(n: int, seed: int) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return TaskData(x, {"a": x[:, 0] + 0.1 * x[:, 1], "b": x[:, 2] - x[:, 0]})


def _trainer(name: str, run_dir: object = None, stop_at: int | None = None) -> Trainer:
    class Stop(Callback):
        def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
            trainer.should_stop = trainer.step == stop_at

    config = TrainConfig(steps=9, eval_every=3, batch_size=16, lr=1e-2, seed=1, progress=False,
                         conflict_every=None, patience=None)  # fmt: skip
    model = hard_sharing_mlp(5, TASKS, hidden=(8,), seed=0)
    return Trainer(model, make_balancer(name), config, run_dir=run_dir,
                   callbacks=[Stop()] if stop_at else [])  # fmt: skip


def test_the_list_holds_the_balancers_that_were_found_not_to_resume():
    assert {"gradnorm", "excess_mtl", "metabalance", "moco", "db_mtl"} <= set(STATEFUL)
    assert {"auto_lambda", "moml", "forum", "famo", "dwa"} <= set(STATEFUL)


@pytest.mark.parametrize("name", STATEFUL)
def test_a_resumed_run_ends_bit_identical(tmp_path, name):
    data, val = _data(64, 0), _data(40, 1)
    whole = _trainer(name)
    whole.fit(data, val)
    _trainer(name, tmp_path, stop_at=6).fit(data, val)
    resumed = _trainer(name, tmp_path)
    assert resumed.resume(tmp_path) is not None and resumed.step == 6
    resumed.fit(data, val)
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    for key, value in whole.balancer.state_dict().items():
        assert torch.equal(value, resumed.balancer.state_dict()[key]), (name, key)


def test_a_resume_with_other_balancer_parameters_is_refused_through_the_python_api(tmp_path):
    from polytask.train._checkpoint import CheckpointError

    data, val = _data(64, 0), _data(40, 1)
    config = TrainConfig(steps=3, eval_every=3, progress=False, conflict_every=None)
    model = hard_sharing_mlp(5, TASKS, hidden=(8,), seed=0)
    Trainer(model, make_balancer("dwa", temperature=2.0), config, run_dir=tmp_path).fit(data, val)
    other = Trainer(hard_sharing_mlp(5, TASKS, hidden=(8,), seed=0),
                    make_balancer("dwa", temperature=50.0), config)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"balancer_params\.temperature: 2\.0 → 50\.0"):
        other.resume(tmp_path)
    same = Trainer(hard_sharing_mlp(5, TASKS, hidden=(8,), seed=0),
                   make_balancer("dwa", temperature=2.0), config)  # fmt: skip
    assert same.resume(tmp_path) is not None


def test_a_checkpoint_from_before_balancer_parameters_were_recorded_still_resumes():
    from polytask.train._checkpoint import run_differences

    saved = {"balancer": "DynamicWeightAverage", "training": {"lr": 0.1}}
    current = {**saved, "balancer_params": {"temperature": 2.0}}
    assert run_differences(saved, current) == []
    changed = {**saved, "balancer_params": {"temperature": 3.0}}
    assert run_differences(current, changed) == ["balancer_params.temperature: 2.0 → 3.0"]


def test_a_resume_with_other_task_or_wrapped_balancer_settings_is_refused(tmp_path):
    """Found by review: through the Python API only the task names were compared, and under
    auxiliary gradients the wrapper's parameters, not the wrapped balancer's: another loss,
    primary metric or CAGrad c resumed without a word."""
    from polytask.train._checkpoint import CheckpointError

    tasks = [*TASKS, Task("x", "regression", auxiliary=True)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    data = TaskData(x, {"a": x[:, 0], "b": x[:, 1], "x": x[:, 2]})

    def trainer(tasks=tasks, c=0.4):
        config = TrainConfig(steps=3, eval_every=3, progress=False, conflict_every=None,
                             auxiliary_gradients="gated")  # fmt: skip
        model = hard_sharing_mlp(5, tasks, hidden=(8,), seed=0)
        return Trainer(model, make_balancer("cagrad", c=c), config)

    first = trainer()
    first.run_dir = tmp_path
    first.fit(data, data)
    with pytest.raises(CheckpointError, match=r"balancer_params\.inner\.c: 0\.4 → 0\.9"):
        trainer(c=0.9).resume(tmp_path)
    huber = [Task("a", "regression", loss="huber"), *tasks[1:]]
    with pytest.raises(CheckpointError, match=r"task_settings\.a\.loss: None → 'huber'"):
        trainer(huber).resume(tmp_path)
    assert trainer().resume(tmp_path) is not None


def test_a_checkpoint_from_before_task_settings_were_recorded_still_resumes():
    from polytask.train._checkpoint import run_differences

    saved = {"tasks": ["a"], "balancer_params": {"rule": "gated"}}
    current = {
        **saved,
        "task_settings": {"a": {"loss": None}},
        "balancer_params": {"rule": "gated", "inner": {"class": "CAGrad", "c": 0.4}},
    }
    assert run_differences(saved, current) == []
    changed = {**current, "task_settings": {"a": {"loss": "huber"}}}
    assert run_differences(current, changed) == ["task_settings.a.loss: None → 'huber'"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (its generator)")
def test_a_resumed_gpu_run_draws_the_same_dropout_masks_and_random_weights(tmp_path):
    """Found by review: only the CPU generator was saved, and fit re-seeds the GPU's, so a
    resumed GPU run drew step 1's dropout masks (and RLW's weights) again."""

    def trainer(run_dir=None, stop_at=None):
        class Stop(Callback):
            def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
                trainer.should_stop = trainer.step == stop_at

        config = TrainConfig(steps=9, eval_every=3, batch_size=16, lr=1e-2, seed=1,
                             progress=False, patience=None, device="cuda")  # fmt: skip
        model = hard_sharing_mlp(5, TASKS, hidden=(8,), dropout=0.3, seed=0)
        return Trainer(model, make_balancer("rlw"), config, run_dir=run_dir,
                       callbacks=[Stop()] if stop_at else [])  # fmt: skip

    data, val = _data(64, 0), _data(40, 1)
    whole = trainer()
    whole.fit(data, val)
    trainer(tmp_path, stop_at=6).fit(data, val)
    resumed = trainer(tmp_path)
    assert resumed.resume(tmp_path) is not None and resumed.step == 6
    resumed.fit(data, val)
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
