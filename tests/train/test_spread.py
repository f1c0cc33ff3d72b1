"""Spread steps: gradient accumulation and the float16 loss scale give the update of one
float32 step on the whole batch, for loss-weighting and gradient balancers in every mode."""

import pytest
import torch
from torch import Tensor

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.data._tensors import Batch
from polytask.models import ARCHITECTURES
from polytask.train._precision import LossScale
from polytask.train._spread import Spread
from polytask.train._step import plan_gradients, train_step

TASKS = [Task("a", "regression"), Task("b", "multiclass", num_classes=3), Task("c", "binary")]
STAGES = [Task("c", "binary"), Task("e", "binary")]


def _batch(n: int = 24, seed: int = 0) -> Batch:
    """A batch whose tasks label different rows, so the pieces' label counts differ."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, generator=g)
    a[::3] = float("nan")
    b = torch.randint(0, 3, (n,), generator=g)
    b[1::4] = -100
    c = torch.randint(0, 2, (n,), generator=g).float()
    c[n // 2 :][::2] = float("nan")
    e = torch.randint(0, 2, (n,), generator=g).float()
    e[::5] = float("nan")
    return Batch(torch.randn(n, 6, generator=g), {"a": a, "b": b, "c": c, "e": e})


def _grads(
    balancer: str,
    spread: Spread | None,
    mode: str = "auto",
    architecture: str = "hard_sharing",
    dropout: float = 0.0,
) -> list[Tensor]:
    torch.manual_seed(0)
    tasks = STAGES if architecture == "aitm" else TASKS  # AITM: a funnel of binary stages
    if architecture == "hard_sharing":
        # one dropout layer: its masks of the pieces, drawn in turn, are the whole batch's
        hidden = (10,) if dropout else (10, 8)
        model = hard_sharing_mlp(6, tasks, hidden=hidden, dropout=dropout)
    else:
        model = ARCHITECTURES[architecture]([f"x{i}" for i in range(6)], tasks)
    config = TrainConfig(batch_size=24, gradient_mode=mode, progress=False)
    chosen = make_balancer(balancer)
    chosen.setup(model.task_names)
    plan = plan_gradients(model, chosen, config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keeps the parameters to compare
    train_step(model, chosen, optimizer, _batch(), tasks, plan, spread=spread)
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


BALANCERS = ["ew", "uncertainty", "gls", "upgrad", "mgda", "pcgrad", "nash_mtl"]


@pytest.mark.parametrize("balancer", BALANCERS)
def test_accumulated_micro_batches_give_the_whole_batch_gradient(balancer: str):
    """Three micro-batches (uneven label counts) make the one-batch update: the losses are
    weighted by each piece's labelled rows, and gradient balancers combine the summed J."""
    whole = _grads(balancer, None)
    pieces = _grads(balancer, Spread(accumulate=3))
    for w, p in zip(whole, pieces, strict=True):
        torch.testing.assert_close(p, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("balancer", ["ew", "famo", "upgrad"])
def test_accumulation_draws_the_whole_batch_dropout_masks(balancer: str):
    """Found by review: with dropout, a loss weighting's micro-batches forwarded twice (the
    losses, then the backward) and the second pass drew new masks, so its update was 0.02 off
    the one-batch update after one step (the weights read one set of masks, the gradient
    another). Both passes now draw the first pass's masks, as the gradient methods' one pass
    does."""
    whole = _grads(balancer, None, dropout=0.3)
    pieces = _grads(balancer, Spread(accumulate=3), dropout=0.3)
    for w, p in zip(whole, pieces, strict=True):
        torch.testing.assert_close(p, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("architecture", "balancer"),
    [("mmoe", "ew"), ("mmoe", "upgrad"), ("soft_sharing", "ew"), ("soft_sharing", "gls"),
     ("aitm", "ew"), ("aitm", "upgrad")],
)  # fmt: skip
def test_accumulation_holds_without_one_shared_representation_and_with_penalties(
    architecture: str, balancer: str
):
    """Models whose heads read no single representation (the whole graph's Jacobian) and models
    with a penalty (soft sharing's coupling on the weights, AITM's calibration on the batch's
    outputs): the micro-batches still make the whole batch's update."""
    whole = _grads(balancer, None, architecture=architecture)
    pieces = _grads(balancer, Spread(accumulate=3), architecture=architecture)
    for w, p in zip(whole, pieces, strict=True):
        torch.testing.assert_close(p, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("balancer", "mode"),
    [("ew", "auto"), ("uncertainty", "auto"), ("upgrad", "jacobian"), ("upgrad", "gramian"),
     ("mgda", "representation"), ("upgrad", "last_layer"), ("upgrad", "subsample"),
     ("pcgrad", "jacobian"), ("upgrad", "sketch")],
)  # fmt: skip
def test_a_loss_scale_is_divided_out_of_every_gradient(balancer: str, mode: str):
    """The same step at loss scale 1024 (float32, so no rounding) gives the unscaled update:
    each mode unscales the per-task blocks before the balancer and the rest afterwards."""
    plain = _grads(balancer, None, mode)
    scaled = _grads(balancer, Spread(scale=LossScale(init=1024.0)), mode)
    for a, b in zip(plain, scaled, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_accumulation_refuses_what_cannot_sum_micro_batches():
    model = hard_sharing_mlp(6, TASKS, hidden=(10, 8))
    with pytest.raises(ValueError, match="use jacobian"):
        Trainer(model, make_balancer("upgrad"),
                TrainConfig(accumulate=2, gradient_mode="subsample", progress=False))  # fmt: skip
    with pytest.raises(ValueError, match=r"without training\.accumulate"):
        Trainer(model, make_balancer("auto_lambda"), TrainConfig(accumulate=2, progress=False))
    # its own gradients cannot be summed; jacobian would make it mgda: name mgda, or not spread
    with pytest.raises(
        ValueError, match=r"defined on the representation .* \(as mgda_ub becomes mgda\)"
    ):
        Trainer(model, make_balancer("mgda_ub"), TrainConfig(accumulate=2, progress=False))


def test_accumulation_plans_the_jacobian_it_holds_and_heeds_max_jacobian_mb():
    """Found by a scale trial: with accumulate the log said 'gramian mode, holding 3,168
    floats; J would take 0 MB > max_jacobian_mb' while the step held all of J."""
    model = hard_sharing_mlp(6, TASKS, hidden=(10, 8))
    floats = 3 * sum(p.numel() for p in model.shared_parameters())
    config = TrainConfig(accumulate=2, gradient_mode="gramian", progress=False)
    trainer = Trainer(model, make_balancer("upgrad"), config)
    assert (trainer.plan.mode, trainer.plan.held_floats) == ("jacobian", floats)
    assert "training.accumulate holds J, not gramian's share" in trainer.plan.describe()
    alone = Trainer(model, make_balancer("upgrad"), TrainConfig(gradient_mode="gramian",
                                                                 progress=False))  # fmt: skip
    assert alone.plan.mode == "gramian"
    with pytest.raises(
        ValueError,
        match=r"accumulate sums the whole Jacobian .* above "
        r"training\.max_jacobian_mb \(0\.0001\)",
    ):
        Trainer(model, make_balancer("upgrad"),
                TrainConfig(accumulate=2, max_jacobian_mb=1e-4, progress=False))  # fmt: skip


def _data(n: int = 256, seed: int = 0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    w = torch.randn(6, generator=g)
    y = x @ w
    targets = {
        "a": y + 0.1 * torch.randn(n, generator=g),
        "b": (y > 0.5).long() + (y > -0.5).long(),
        "c": (x[:, 0] > 0).float(),
    }
    return TaskData(x, targets)


def _train(balancer: str = "upgrad", **settings: object) -> list[Tensor]:
    torch.manual_seed(0)
    model = hard_sharing_mlp(6, TASKS, hidden=(16, 16))
    config = TrainConfig(epochs=None, steps=12, batch_size=64, lr=1e-2, progress=False, **settings)  # type: ignore[arg-type]
    trainer = Trainer(model, make_balancer(balancer), config)
    if trainer.loss_scale is not None:  # no overflow at the first step: every step is taken
        trainer.loss_scale.value = 2.0**10
    trainer.fit(_data())
    assert trainer.loss_scale is None or trainer.loss_scale.overflows == 0
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("balancer", ["ew", "upgrad"])
@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_mixed_precision_training_stays_close_to_float32(precision: str, balancer: str):
    """Autocast changes only the forward pass's rounding: after a dozen steps the weights stay
    within 1% of the float32 run's (float16 with its loss scale)."""
    full = _train(balancer)
    mixed = _train(balancer, precision=precision)
    moved = sum(float((m - f).norm()) for m, f in zip(mixed, full, strict=True))
    size = sum(float(f.norm()) for f in full)
    assert moved / size < 0.01


def test_float16_overflow_halves_the_scale_and_skips_the_step():
    scale = LossScale(init=2.0**16, growth_interval=2)
    assert scale.overflow() and scale.value == 2.0**15
    scale.finite_step()
    scale.finite_step()
    assert scale.value == 2.0**16 and scale.overflows == 1
    tiny = LossScale(init=2.0**-14)
    assert not tiny.overflow()  # cannot shrink further: a real divergence


def test_precision_is_checked_up_front():
    assert TrainConfig(precision=16).precision == "16"
    assert TrainConfig(precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="precision must be 32, bf16 or 16"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="accumulate must be at least 1"):
        TrainConfig(accumulate=0)


def _boxes_and_poses() -> list[tuple[Task, Tensor, Tensor]]:
    """A detection and a keypoints task, 4 labelled images, objects only in the first two."""
    torch.manual_seed(0)
    det = Task("det", "detection", kind_params={"classes": ["a", "b"], "stride": 4})
    boxes = torch.full((4, 1, 5), -1.0)
    boxes[0, 0] = torch.tensor([2.0, 2.0, 10.0, 10.0, 0.0])
    boxes[1, 0] = torch.tensor([4.0, 4.0, 12.0, 12.0, 1.0])
    pose = Task("pose", "keypoints", kind_params={"num_keypoints": 2})
    points = torch.tensor([[[0.0, 0.0, -1.0]] * 2] * 4).unsqueeze(1)  # (4, 1, 2, 3): none
    points[0, 0] = torch.tensor([[4.0, 4.0, 2.0], [8.0, 8.0, 2.0]])
    points[1, 0] = torch.tensor([[6.0, 2.0, 2.0], [10.0, 6.0, 1.0]])
    return [(det, boxes, torch.randn(4, 6, 4, 4)), (pose, points, torch.randn(4, 7, 4, 4))]


@pytest.mark.parametrize("case", [0, 1], ids=["detection", "keypoints"])
def test_split_batches_of_object_losses_sum_to_the_whole_batch_loss(case):
    """Losses divided by the objects (at least 1 where an image is labelled): a piece of
    labelled images without objects was counted as one object, so two pieces gave 2/3 of
    the whole batch's loss and gradient (accumulate, torchrun), and evaluation's loss moved
    with the batch size."""
    from polytask.train._evaluate import evaluate
    from polytask.train._spread import _split, _Whole

    task, target, out = _boxes_and_poses()[case]
    out.requires_grad_(True)
    whole = task.compute_loss(out, target)
    pieces = _split(Batch(torch.zeros(4, 1), {task.name: target}), 2)
    parts = _Whole(pieces, [task], None)
    summed = sum(parts.losses(i, {task.name: o})[0] for i, o in enumerate(out.tensor_split(2)))
    torch.testing.assert_close(summed, whole)

    class Fixed(torch.nn.Module):  # the same outputs at any batch size
        task_names = (task.name,)

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            return {task.name: out.detach()[x[:, 0].long()]}

    data = TaskData(torch.arange(4.0)[:, None], {task.name: target})
    losses = [
        evaluate(Fixed(), [task], data, size, torch.device("cpu"))[task.name]["loss"]
        for size in (1, 2, 4)
    ]
    assert losses == pytest.approx([float(whole.detach())] * 3, rel=1e-6)
