"""The training step in representation mode keeps linear heads' gradients factored."""

import pytest
import torch
from torch import Tensor

from polytask import Task, TrainConfig, hard_sharing_mlp, make_balancer
from polytask.data._tensors import Batch
from polytask.gradients import backward, record_segments, split_features
from polytask.train._step import GradientPlan, plan_gradients, task_losses, train_step

TASKS = [Task("a", "regression"), Task("b", "multiclass", num_classes=3), Task("c", "binary")]


def _batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, generator=g)
    targets = {
        "a": torch.randn(16, generator=g),
        "b": torch.randint(0, 3, (16,), generator=g),
        "c": torch.randint(0, 2, (16,), generator=g).float(),
    }
    return Batch(x, targets)


def _planned_and_reference(mode: str) -> tuple[GradientPlan, list[Tensor], list[Tensor]]:
    """The grads of one planned `train_step` in `mode`, and those of `backward` on split
    leaves of an ordinary (tracked) forward, the reference."""
    torch.manual_seed(0)
    model = hard_sharing_mlp(6, TASKS, hidden=(10, 8))
    config = TrainConfig(batch_size=16, gradient_mode=mode, progress=False)
    plan = plan_gradients(model, make_balancer("upgrad"), config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the parameters to compare
    batch = _batch()
    train_step(model, make_balancer("upgrad"), optimizer, batch, TASKS, plan)
    planned = [p.grad.clone() for p in model.parameters()]

    model.zero_grad(set_to_none=True)
    segments = None
    if mode == "gramian":  # tracked: the reference takes autograd's batched backwards
        z, segments = record_segments(model.trunk_blocks() or [], batch.x)
    else:
        z = model.representation(batch.x)
    task_z = split_features(z, len(TASKS))
    losses = task_losses(model.heads_forward(task_z), batch, TASKS)
    backward(losses, list(model.shared_parameters()), make_balancer("upgrad"), mode=mode,  # type: ignore[arg-type]
             features=z, task_features=task_z, segments=segments)  # fmt: skip
    return plan, planned, [p.grad for p in model.parameters()]


def test_representation_step_uses_factored_heads_and_matches_split_leaves():
    plan, factored, reference = _planned_and_reference("representation")
    assert plan.held_floats == (1 + 3 + 1) * (16 + 8)  # (B, Σo) and (Σo, d), not K × B × d
    for f, r in zip(factored, reference, strict=True):
        torch.testing.assert_close(f, r, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["jacobian", "gramian"])
def test_exact_step_walks_a_plain_mlp_trunk_and_matches_autograd(mode: str):
    """The planned walk (trunk forward without autograd) gives the batched backward's update."""
    plan, walked, reference = _planned_and_reference(mode)
    assert plan.walk and "walked by hand" in plan.describe()
    for w, r in zip(walked, reference, strict=True):
        torch.testing.assert_close(w, r, rtol=1e-5, atol=1e-7)


def test_jacobian_step_keeps_autograd_where_the_walk_cannot_go():
    config = TrainConfig(batch_size=16, gradient_mode="jacobian", progress=False)
    dropout = hard_sharing_mlp(6, TASKS, hidden=(10, 8), dropout=0.2)
    assert not plan_gradients(dropout, make_balancer("upgrad"), config).walk
    representation = TrainConfig(batch_size=16, gradient_mode="representation", progress=False)
    plain = hard_sharing_mlp(6, TASKS, hidden=(10, 8))
    assert not plan_gradients(plain, make_balancer("upgrad"), representation).walk


@pytest.mark.parametrize(
    ("balancer", "mode"), [("upgrad", "subsample"), ("auto_lambda", "jacobian"), ("ew", "jacobian")]
)
def test_a_step_counts_its_batch_once_in_batchnorms_running_statistics(balancer, mode):
    # subsample's probe forward and a bilevel balancer's validation forward updated them too:
    # rows counted twice, validation rows folded into the statistics the model evaluates with
    from torch import nn

    from polytask import MultiTaskModel

    tasks = [Task("a", "regression"), Task("b", "regression")]

    def model() -> MultiTaskModel:
        torch.manual_seed(0)
        trunk = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6))
        return MultiTaskModel(trunk, tasks, trunk_out_dim=6).double()

    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 5, generator=g, dtype=torch.float64)
    x[:16] += 3.0  # subsample's probe rows differ from the batch
    batch = Batch(x, {"a": x[:, 0], "b": x[:, 1]})
    val_x = torch.randn(16, 5, generator=g, dtype=torch.float64) + 5.0
    val = Batch(val_x, {"a": val_x[:, 0], "b": val_x[:, 1]})
    stepped, once = model(), model()
    made = make_balancer(balancer)
    made.setup(stepped.task_names)
    plan = plan_gradients(stepped, made, TrainConfig(batch_size=48, gradient_mode=mode,
                                                     subsample_size=16))  # fmt: skip
    sgd = torch.optim.SGD(stepped.parameters(), lr=0.0)
    train_step(stepped, made, sgd, batch, tasks, plan, val_batch=val)
    once.train()
    once(batch.x)  # the step's own forward: the batch counted once
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(stepped.trunk[1], name), getattr(once.trunk[1], name))


def test_subsample_names_the_tasks_no_probe_row_labels():
    tasks = [Task("a", "regression"), Task("b", "regression")]
    model = hard_sharing_mlp(5, tasks, hidden=(8,), seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 5, generator=g)
    b = x[:, 1].clone()
    b[:20] = float("nan")  # b labelled on rows 20-47 only: none of the 16 probe rows
    balancer = make_balancer("upgrad")
    balancer.setup(model.task_names)
    plan = plan_gradients(model, balancer, TrainConfig(batch_size=48, gradient_mode="subsample",
                                                       subsample_size=16))  # fmt: skip
    sgd = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.warns(
        UserWarning, match=r"no probe row \(the batch's first 16\) labels task\(s\) \['b'\]"
    ):
        train_step(model, balancer, sgd, Batch(x, {"a": x[:, 0], "b": b}), tasks, plan)


def test_mgda_ub_on_an_architecture_without_one_representation_says_it_runs_as_mgda():
    from polytask.models import build_model

    tasks = [Task("a", "regression"), Task("b", "regression")]
    mmoe = build_model("mmoe", [f"x{i}" for i in range(4)], tasks, seed=0)
    balancer = make_balancer("mgda_ub")
    with pytest.warns(UserWarning, match=r"MGDAUpperBound is defined on the representation .* "
                      r"\(mgda_ub as mgda\)"):  # fmt: skip
        plan = plan_gradients(mmoe, balancer, TrainConfig(batch_size=8))
    assert plan.method.name != "representation"


@pytest.mark.parametrize("trunk", ["layer_twice", "net_of_a_custom_forward"])
def test_a_trunk_whose_blocks_are_not_it_is_not_walked_nor_segmented(trunk: str):
    """A layer applied twice (a per-block walk overwrote its first use's gradient), or a trunk
    whose `net` is not its whole forward (segments ran `net` alone: another function), has no
    trunk_blocks: auto takes autograd's Jacobian, and gramian mode is refused."""
    from torch import nn

    from polytask import MultiTaskModel

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.full((6,), 1.5))
            self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh())

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.net(x * self.scale)
            return out

    torch.manual_seed(0)
    if trunk == "layer_twice":
        layer = nn.Linear(8, 8)
        body: nn.Module = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), layer, nn.Tanh(), layer)
    else:
        body = Scaled()
    model = MultiTaskModel(body, TASKS, trunk_out_dim=8)
    assert model.trunk_blocks() is None
    with pytest.raises(ValueError, match="holding each of its parameters in one block"):
        plan_gradients(model, make_balancer("mgda"), TrainConfig(gradient_mode="gramian"))
    plan = plan_gradients(model, make_balancer("mgda"), TrainConfig(batch_size=16))
    assert not plan.walk
    batch = _batch()
    train_step(model, make_balancer("mgda"), torch.optim.SGD(model.parameters(), lr=0.0), batch,
               TASKS, plan)  # fmt: skip
    got = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])
    model.zero_grad(set_to_none=True)  # the reference: autograd's Jacobian of the whole graph
    shared = list(model.shared_parameters())
    losses = task_losses(model(batch.x), batch, TASKS)
    backward(losses, shared, make_balancer("mgda"), mode="jacobian")
    want = torch.cat([p.grad.reshape(-1) for p in shared])
    assert want.abs().sum() > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
