"""Gradient conflict and task affinity: formulas against hand-computed values, agreement of the
probe with the engine's Gramian, and a monitored run training exactly as an unmonitored one."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.data._tensors import Batch
from polytask.models import MultiTaskNet
from polytask.train import Callback, TaskRelations
from polytask.train._relations import (
    RELATIONS_FILE,
    ConflictStats,
    cosine_matrix,
    lookahead_affinity,
    probe_gradients,
    probe_gramian,
)
from polytask.train._step import train_step


def test_cosine_matrix_against_hand_values():
    g = np.array([[4.0, 2.0, -2.0], [2.0, 1.0, -1.0], [-2.0, -1.0, 4.0]])
    cos = cosine_matrix(g)
    # |g0| = 2, |g1| = 1, |g2| = 2
    assert cos[0, 1] == pytest.approx(1.0)
    assert cos[0, 2] == pytest.approx(-0.5)
    assert cos[1, 2] == pytest.approx(-0.5)
    zero = cosine_matrix(np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert math.isnan(zero[0, 1])  # a zero gradient has no direction


def test_conflict_stats_mean_share_ratio_and_trend_by_hand():
    stats = ConflictStats(2)
    # gradients (2, 0) and (c, s) with |g1| = 1: cosines 0.5, -0.5, 0.9 at t = 0, 0.5, 1
    for t, c in ((0.0, 0.5), (0.5, -0.5), (1.0, 0.9)):
        s = math.sqrt(1 - c * c)
        j = np.array([[2.0, 0.0], [c, s]])
        stats.add(j @ j.T, np.array([True, True]), t)
    assert stats.cos.mean()[0, 1] == pytest.approx((0.5 - 0.5 + 0.9) / 3)
    assert stats.conflict.mean()[0, 1] == pytest.approx(1 / 3)
    assert math.exp(stats.log_ratio.mean()[0, 1]) == pytest.approx(2.0)  # |g0| / |g1|
    # least-squares slope of (0, .5), (.5, -.5), (1, .9): cov / var
    t, c = np.array([0, 0.5, 1]), np.array([0.5, -0.5, 0.9])
    slope = ((t - t.mean()) * (c - c.mean())).sum() / ((t - t.mean()) ** 2).sum()
    assert stats.trend()[0, 1] == pytest.approx(slope)
    assert stats.measurements == 3


def test_a_pair_with_an_unlabelled_task_is_not_measured():
    stats = ConflictStats(3)
    j = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # task 2 unlabelled: zero row
    stats.add(j @ j.T, np.array([True, True, False]), 0.0)
    assert stats.cos.count[0, 1] == 1 and stats.cos.count[0, 2] == 0
    assert stats.cos.mean()[0, 1] == pytest.approx(0.0)


class ScalarNet(MultiTaskNet):
    """z = w·x with one shared weight; each task's output is z itself (no head parameters)."""

    def __init__(self, tasks, w=0.0):
        super().__init__()
        self._init_tasks(tasks)
        self.trunk = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.trunk.weight.fill_(w)

    def forward(self, x):
        z = self.trunk(x).squeeze(-1)
        return {t.name: z for t in self.tasks}

    def shared_parameters(self):
        return self.trunk.parameters()

    def task_parameters(self, name):
        return iter(())


def test_lookahead_affinity_against_hand_computed_values():
    tasks = [Task("a", "regression"), Task("b", "regression")]
    model = ScalarNet(tasks)
    batch = Batch(torch.ones(1, 1), {"a": torch.tensor([1.0]), "b": torch.tensor([3.0])})
    shared = list(model.shared_parameters())
    probe = probe_gradients(model, tasks, batch, shared)
    # L_a = (0 - 1)^2 = 1, L_b = 9; g_a = 2(0 - 1) = -2, g_b = -6
    assert probe.losses.tolist() == pytest.approx([1.0, 9.0])
    assert [float(g) for g in probe.grads[0].flatten()] == pytest.approx([-2.0, -6.0])
    z = lookahead_affinity(model, tasks, batch, shared, probe, lr=0.1)
    # a step on a: w = 0.2 -> L_a = 0.64, L_b = 7.84; on b: w = 0.6 -> L_a = 0.16, L_b = 5.76
    expected = [[1 - 0.64, 1 - 7.84 / 9], [1 - 0.16, 1 - 5.76 / 9]]
    assert z == pytest.approx(np.array(expected))
    assert float(model.trunk.weight.detach()) == 0.0  # the lookahead leaves the model as it was
    gram = probe_gramian(probe)
    assert gram.flatten().tolist() == pytest.approx([4.0, 12.0, 12.0, 36.0])


def test_lookahead_affinity_of_a_teacher_forced_head_reads_the_same_loss_after_the_step():
    """A seq2seq head is fed its targets for the loss before the lookahead step; the loss after
    it must be the same teacher-forced loss (free-running, every task's step read as ln V)."""
    import copy

    from polytask.models import MultiTaskModel
    from polytask.models._teacher import teaching
    from polytask.train._step import task_losses
    from tests.tasks.test_seq2seq import TokenEncoder, copy_data

    torch.manual_seed(0)
    params = {"max_length": 8, "layers": 1, "heads": 2, "dropout": 0.0}
    tasks = [Task(n, "seq2seq", num_classes=10, kind_params=params) for n in ("copy", "rev")]
    model = MultiTaskModel(TokenEncoder(10, 5, 32), tasks)
    forward, backward = copy_data(32, 0), copy_data(32, 0, reverse=True)
    batch = Batch(forward.x, {"copy": forward.targets["out"], "rev": backward.targets["out"]})
    shared = [p for p in model.shared_parameters() if p.requires_grad]
    probe = probe_gradients(model, tasks, batch, shared)
    z = lookahead_affinity(model, tasks, batch, shared, probe, lr=0.05)

    def losses(m):
        m.eval()
        with torch.no_grad(), teaching(m, batch.targets):
            out = m(batch.x)
        return task_losses(out, batch, tasks, [t.mask(batch.targets[t.name]) for t in tasks])

    before = losses(model).double()
    for i in range(2):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            trainable = [p for p in moved.shared_parameters() if p.requires_grad]
            for p, g in zip(trainable, probe.grads, strict=True):
                p -= 0.05 * g[i]
        assert z[i] == pytest.approx((1 - losses(moved).double() / before).numpy(), abs=1e-6)
    assert z[0, 0] > 0 and z[1, 1] > 0  # a task's own step lowers its loss


def test_affinity_leaves_out_an_unlabelled_task():
    tasks = [Task("a", "regression"), Task("b", "regression")]
    model = ScalarNet(tasks)
    batch = Batch(torch.ones(1, 1), {"a": torch.tensor([1.0]), "b": torch.tensor([math.nan])})
    shared = list(model.shared_parameters())
    probe = probe_gradients(model, tasks, batch, shared)
    z = lookahead_affinity(model, tasks, batch, shared, probe, lr=0.1)
    assert z[0, 0] == pytest.approx(0.36)
    assert np.isnan(z[0, 1]) and np.isnan(z[1, 0]) and np.isnan(z[1, 1])


def _regression(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    w = torch.randn(6, generator=g)
    y = torch.tanh(x @ w)
    noise = 0.1 * torch.randn(n, generator=g)
    return TaskData(x, {"a": y, "b": y + noise, "c": -y + noise})


TASKS = [Task("a", "regression"), Task("b", "regression"), Task("c", "regression")]


def test_probe_gramian_equals_the_engine_gramian_of_the_same_step():
    torch.manual_seed(0)
    model = hard_sharing_mlp(6, TASKS, hidden=(8,), seed=0)  # no dropout: eval = train
    data = _regression()
    batch = Batch(data.x[:32], {k: v[:32] for k, v in data.targets.items()})
    shared = [p for p in model.shared_parameters()]
    probed = probe_gramian(probe_gradients(model, TASKS, batch, shared))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    result = train_step(model, make_balancer("upgrad"), optimizer, batch, TASKS)
    assert result.gramian is not None
    torch.testing.assert_close(result.gramian, probed, rtol=1e-5, atol=1e-10)


def test_frozen_heads_of_opposite_targets_conflict():
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.randn(4)
    data = TaskData(x, {"a": y, "b": -y})
    tasks = [Task("a", "regression"), Task("b", "regression")]
    model = hard_sharing_mlp(4, tasks, hidden=(8,), seed=0)
    with torch.no_grad():  # identical frozen heads: opposite targets pull the trunk apart
        model.heads["b"].load_state_dict(model.heads["a"].state_dict())
    config = TrainConfig(epochs=2, batch_size=32, progress=False, conflict_every=2,
                         freeze=("a", "b"))  # fmt: skip
    trainer = Trainer(model, make_balancer("ew"), config)
    trainer.fit(data)
    relations = trainer.task_relations
    assert relations is not None and relations.conflict_measurements == 8
    assert relations.cosine[0, 1] < -0.9 and relations.conflict_share[0, 1] == 1.0


@pytest.mark.parametrize("balancer", ["ew", "upgrad", "pcgrad"])
def test_a_monitored_run_trains_exactly_as_an_unmonitored_one(balancer, tmp_path):
    data = _regression()
    runs = []
    for every, affinity, folder in ((None, None, None), (1, 3, tmp_path)):
        model = hard_sharing_mlp(6, TASKS, hidden=(8,), dropout=0.2, seed=0)
        config = TrainConfig(epochs=2, batch_size=32, progress=False, patience=None,
                             conflict_every=every, affinity_every=affinity)  # fmt: skip
        trainer = Trainer(model, make_balancer(balancer), config, run_dir=folder)
        trainer.fit(data, data)
        runs.append((trainer, torch.cat([p.flatten() for p in model.parameters()])))
    (plain, plain_weights), (watched, watched_weights) = runs
    assert torch.equal(plain_weights, watched_weights)
    assert plain.task_relations is None
    relations = watched.task_relations
    assert relations is not None and relations.conflict_measurements == 16
    assert relations.affinity is not None and relations.affinity_measurements == 5
    space = "shared parameters (probe)" if balancer == "ew" else "jacobian"
    assert relations.space == space
    saved = TaskRelations.load(tmp_path / RELATIONS_FILE)
    np.testing.assert_allclose(saved.cosine, relations.cosine)
    logs = watched.history[-1]
    assert -1 <= logs["conflict/cos_mean"] <= 1 and 0 <= logs["conflict/share"] <= 1
    assert logs["time/monitor_ms"] > 0 and "conflict/c/cos" in logs and "affinity/mean" in logs
    assert json.loads((tmp_path / RELATIONS_FILE).read_text())["tasks"] == ["a", "b", "c"]


class _StopAfter(Callback):
    """Ctrl-C right after step `step` (whose checkpoint is then on disk)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, result):
        if trainer.step == self.step + 1:
            raise KeyboardInterrupt


def test_relations_resume_exactly(tmp_path):
    data = _regression()

    def trainer(folder, callbacks=()):
        model = hard_sharing_mlp(6, TASKS, hidden=(8,), seed=0)
        config = TrainConfig(epochs=None, steps=24, eval_every=8, batch_size=32, progress=False,
                             patience=None, conflict_every=2, affinity_every=4)  # fmt: skip
        return Trainer(model, make_balancer("ew"), config, callbacks, run_dir=folder)

    straight = trainer(tmp_path / "straight")
    straight.fit(data, data)
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "split", [_StopAfter(16)]).fit(data, data)
    resumed = trainer(tmp_path / "split")
    assert resumed.resume(tmp_path / "split") is not None and resumed.step == 16
    resumed.fit(data, data)
    a, b = straight.task_relations, resumed.task_relations
    assert a is not None and b is not None
    assert a.conflict_measurements == b.conflict_measurements == 12
    assert a.affinity is not None and b.affinity is not None
    np.testing.assert_allclose(a.cosine, b.cosine, rtol=1e-6)
    np.testing.assert_allclose(a.affinity, b.affinity, rtol=1e-6)
    np.testing.assert_allclose(a.trend, b.trend, rtol=1e-6, atol=1e-9)


def test_monitor_settings_are_checked():
    with pytest.raises(ValueError, match="conflict_every must be at least 1"):
        TrainConfig(conflict_every=0)
    with pytest.raises(ValueError, match="lookahead_lr must be > 0"):
        TrainConfig(lookahead_lr=-1.0)


def test_many_tasks_are_not_probed_by_default():
    """A loss weighting over more than PROBE_TASKS tasks is not probed (K backwards each)."""
    from polytask.train._relations import PROBE_TASKS

    k = PROBE_TASKS + 1
    x = torch.randn(64, 4)
    tasks = [Task(f"t{i}", "regression") for i in range(k)]
    data = TaskData(x, {t.name: x[:, 0] * i for i, t in enumerate(tasks)})
    config = TrainConfig(epochs=1, batch_size=16, progress=False, conflict_every=1)
    trainer = Trainer(hard_sharing_mlp(4, tasks, hidden=(4,), seed=0), make_balancer("ew"), config)
    trainer.fit(data)
    assert trainer.task_relations is None
    with_affinity = TrainConfig(epochs=1, batch_size=16, progress=False, conflict_every=1,
                                affinity_every=2)  # fmt: skip
    model = hard_sharing_mlp(4, tasks, hidden=(4,), seed=0)
    trainer = Trainer(model, make_balancer("ew"), with_affinity)
    trainer.fit(data)
    assert trainer.task_relations is not None
    assert trainer.task_relations.conflict_measurements == 2  # at the affinity steps


def test_relation_sums_are_saved_as_tensors_and_older_list_states_still_load():
    stats = ConflictStats(3)
    stats.cos.add(np.array([[1.0, 0.5, np.nan], [0.5, 1.0, -0.2], [np.nan, -0.2, 1.0]]))
    state = stats.state()
    assert isinstance(state["cos"]["total"], torch.Tensor)  # not K² Python floats to pickle
    old = {k: v if k == "measurements" else {s: t.tolist() for s, t in v.items()}
           for k, v in state.items()}  # fmt: skip
    for saved in (state, old):
        again = ConflictStats(3)
        again.load(saved)
        np.testing.assert_array_equal(again.cos.mean(), stats.cos.mean())
        assert again.cos.total.dtype == np.float64
