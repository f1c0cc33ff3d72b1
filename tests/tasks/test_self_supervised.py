"""Self-supervised task kinds: what they derive from a batch, NT-Xent against a hand
computation, the auxiliary flag, and a user's own kind through the same protocol."""

from __future__ import annotations

import math
from typing import ClassVar

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from polytask import TaskData, TrainConfig, Trainer, hard_sharing_mlp
from polytask.data import TabularPreprocessor
from polytask.tasks import (
    KINDS,
    Derived,
    Metric,
    SelfSupervisedKind,
    Task,
    reported_tasks,
    standard_losses,
)
from polytask.tasks._kinds._contrastive import nt_xent


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_reconstruction_masks_a_share_of_the_values_and_targets_only_those():
    task = Task("rec", "reconstruction", kind_params={"mask_rate": 0.25, "features": 50})
    x = torch.randn(400, 50)
    made = task.kind_spec.derive(task, x, _gen())
    masked = ~torch.isnan(made.target)
    assert masked.float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert bool((made.inputs[masked] == 0).all())  # replaced by the training mean (0)
    assert torch.equal(made.inputs[~masked], x[~masked])  # the rest untouched
    assert torch.equal(made.target[masked], x[masked])  # the target: the original values
    # the loss counts the masked entries only: a perfect guess there is 0 whatever elsewhere
    guess = torch.where(masked, x, torch.full_like(x, 100.0))
    assert task.compute_loss(guess, made.target).item() == 0.0
    again = task.kind_spec.derive(task, x, _gen())
    assert torch.equal(again.inputs, made.inputs)  # the same generator draws the same mask


def test_denoising_adds_noise_of_the_set_std_and_targets_the_clean_values():
    task = Task("den", "denoising", kind_params={"noise_std": 0.3, "features": 20})
    x = torch.randn(2000, 20)
    made = task.kind_spec.derive(task, x, _gen())
    assert (made.inputs - x).std().item() == pytest.approx(0.3, rel=0.03)
    assert torch.equal(made.target, x)


def test_contrastive_views_are_two_per_row_with_shared_ids():
    task = Task("con", "contrastive")
    for x in (torch.randn(6, 10), torch.rand(6, 3, 8, 8)):  # features, images (N, C, H, W)
        made = task.kind_spec.derive(task, x, _gen())
        assert made.inputs.shape == (12, *x.shape[1:])
        assert made.target.tolist() == [0, 1, 2, 3, 4, 5] * 2
        assert not torch.equal(made.inputs[:6], made.inputs[6:])  # two different views
    image = torch.rand(4, 1, 8, 8)
    flipped = Task("f", "contrastive", kind_params={"flip": 1.0, "crop_scale": 1.0})
    view = flipped.kind_spec.view(flipped, image, _gen())
    assert view.shape == image.shape and bool(torch.isfinite(view).all())


def _padded_ids(g: torch.Generator) -> torch.Tensor:
    """Rows of [BOS] and 2-11 token ids (4..99) padded with 0, as text batches are."""
    ids = torch.randint(4, 100, (200, 12), generator=g)
    ids[:, 0] = 1
    lengths = torch.randint(3, 13, (200, 1), generator=g)
    return torch.where(torch.arange(12) < lengths, ids, torch.zeros_like(ids))


def test_contrastive_views_of_token_ids_drop_tokens_and_keep_padding():
    # token ids got float noise cast back to int64: every view all padding (0), silently
    task = Task("con", "contrastive", kind_params={"mask_rate": 0.25})
    x = _padded_ids(_gen(1))
    made = task.kind_spec.derive(task, x, _gen())
    assert made.inputs.dtype == torch.int64
    for view in made.inputs.split(len(x)):
        kept = view != 0
        assert bool((view[kept] == x[kept]).all())  # a token is kept as it is, or dropped
        assert not bool(kept[x == 0].any())  # padding stays padding
        assert torch.equal(view[:, 0], x[:, 0])  # the first token ([BOS], [CLS]) stays
        words = x != 0
        words[:, 0] = False
        dropped = (~kept & words).sum() / words.sum()
        assert float(dropped) == pytest.approx(0.25, abs=0.03)
    assert not torch.equal(made.inputs[: len(x)], made.inputs[len(x) :])


def test_self_supervised_views_keep_nan_padding_of_clips():
    # waveforms padded with NaN after each clip's end: padding turned into real zero samples
    g = _gen(2)
    x = torch.randn(50, 40, generator=g)
    ends = torch.randint(5, 41, (50, 1), generator=g)
    x = torch.where(torch.arange(40) < ends, x, torch.full_like(x, float("nan")))
    pad = torch.isnan(x)
    con = Task("con", "contrastive", kind_params={"mask_rate": 0.5, "noise_std": 0.0})
    rec = Task("rec", "reconstruction", kind_params={"mask_rate": 0.5, "features": 40})
    for task in (con, rec):
        made = task.kind_spec.derive(task, x, _gen())
        for view in made.inputs.split(len(x)):
            assert torch.equal(torch.isnan(view), pad), task.kind  # every clip keeps its length
            assert float((view[~pad] == 0).float().mean()) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("kind", ["reconstruction", "denoising"])
def test_predicting_input_values_of_token_ids_is_refused(kind):
    task = Task("aux", kind, kind_params={"features": 12})
    with pytest.raises(ValueError, match=r"inputs are token ids.*'contrastive' task"):
        task.kind_spec.derive(task, _padded_ids(_gen()), _gen())


def test_reconstruction_draws_as_before_on_tabular_rows():
    # values that hold something everywhere: the mask is the generator's first draws, as it was
    task = Task("rec", "reconstruction", kind_params={"mask_rate": 0.3, "features": 7})
    x = torch.randn(30, 7)
    made = task.kind_spec.derive(task, x, _gen(5))
    assert torch.equal(~torch.isnan(made.target), torch.rand(30, 7, generator=_gen(5)) < 0.3)


def test_nt_xent_equals_a_hand_computation():
    """Two rows, two views each: projections at angles 0°, 90° (row 0, row 1) and 60°, 180°
    (their second views); τ = 0.5. For view i with partner j:
    ℓ_i = −log e^{s_ij/τ} / Σ_{k≠i} e^{s_ik/τ}, s the cosine similarity."""
    angles = torch.tensor([0.0, 90.0, 60.0, 180.0]) * math.pi / 180
    z = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * 3.0  # norms do not matter
    ids = torch.tensor([0.0, 1.0, 0.0, 1.0])
    cos = [[math.cos(a - b) for b in angles.tolist()] for a in angles.tolist()]
    partner = [2, 3, 0, 1]
    expected = []
    for i in range(4):
        others = sum(math.exp(cos[i][k] / 0.5) for k in range(4) if k != i)
        expected.append(-(cos[i][partner[i]] / 0.5 - math.log(others)))
    got = nt_xent(z, ids, temperature=0.5)
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    task = Task(
        "con", "contrastive", loss_params={"temperature": 0.5}, kind_params={"projection": 2}
    )
    assert task.compute_loss(z, ids).item() == pytest.approx(sum(expected) / 4, rel=1e-5)


def test_self_supervised_kinds_are_auxiliary_and_read_no_column():
    task = Task("rec", "reconstruction")
    assert task.auxiliary and task.target_columns == ()
    assert Task("ltv", "regression").auxiliary is False
    assert Task("ltv", "regression", auxiliary=True).auxiliary is True  # a labelled helper
    assert Task(**task.to_dict()) == task
    assert reported_tasks([task, Task("ltv", "regression")]) == [Task("ltv", "regression")]
    df = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [0.0, 1.0, 0.0], "y": [1.0, None, None]})
    pre = TabularPreprocessor.fit(df, ["a", "b"], [], [Task("y", "regression"), task])
    resolved = pre.resolve_tasks([task])[0]
    assert resolved.kind_params == {"features": 2} and resolved.out_features == 2
    assert pre.transform(df, [resolved]).targets["rec"].tolist() == [0.0, 0.0, 0.0]  # all rows


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "denoising", "auxiliary": False}, "always auxiliary: remove auxiliary: false"),
        ({"kind": "reconstruction", "target": "x0"}, "takes no target: remove it"),
        ({"kind": "reconstruction", "kind_params": {"mask_rate": 1.5}}, "mask_rate must be in"),
        ({"kind": "denoising", "kind_params": {"mask_rate": 0.1}}, "their parameters: noise_std"),
        ({"kind": "contrastive", "loss_params": {"temperature": 0}}, "temperature must be > 0"),
        ({"kind": "contrastive", "loss_params": {"tau": 1}}, "its parameters: ['temperature']"),
        ({"kind": "regression", "kind_params": {"a": 1}}, "their parameters: none"),
    ],
)
def test_bad_fields_are_refused_with_the_fix(fields, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Task("t", **fields)


def test_the_number_of_values_to_reconstruct_must_be_known_to_build_its_head():
    with pytest.raises(ValueError, match=r"kind_params=\{'features': D\}"):
        _ = Task("rec", "reconstruction").out_features


class SignKind(SelfSupervisedKind):
    """A user's own self-supervised kind: from each row with one value negated at random,
    tell which one (a toy, for the protocol)."""

    losses = standard_losses("cross_entropy")
    metrics: ClassVar = {
        "accuracy": Metric("accuracy", lambda y, p: float((p.argmax(1) == y).mean()), True)
    }
    params: ClassVar = {"features": 0}

    def out_features(self, task: Task) -> int:
        return int(self.param(task, "features"))

    def derive(self, task: Task, x: torch.Tensor, generator: torch.Generator | None) -> Derived:
        which = torch.randint(x.shape[1], (x.shape[0],), generator=generator)
        flipped = x.clone()
        flipped[torch.arange(len(x)), which] *= -1
        return Derived(flipped, which)


def test_a_users_own_self_supervised_kind_trains_through_the_protocol(monkeypatch):
    monkeypatch.setitem(KINDS, "sign", SignKind())
    torch.manual_seed(0)
    x = torch.randn(256, 4) + 3.0  # positive values: the negated one shows
    tasks = [Task("y", "regression"), Task("which", "sign", kind_params={"features": 4})]
    y = torch.where(torch.arange(256) < 16, x.sum(1), torch.tensor(float("nan")))
    model = hard_sharing_mlp(4, tasks, hidden=(16,), seed=0)
    trainer = Trainer(model, config=TrainConfig(epochs=30, batch_size=64, progress=False, lr=1e-2))
    history = trainer.fit(TaskData(x, {"y": y}))
    losses = [h["auxiliary/which/loss"] for h in history]
    assert losses[-1] < 0.5 * losses[0]  # it learned to tell which value was negated
    assert set(trainer.evaluate(TaskData(x, {"y": x.sum(1)}))) == {"y"}
