"""Sampling schedules: empirical frequencies match their formulas, collation marks missing
labels, a resumed sampler continues the exact sequence, one joint source is the plain loop."""

import io

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from polytask.data._sampler import MultiSourceSampler
from polytask.data._schedules import Annealed, make_schedule
from polytask.data._tensors import TaskData

SIZES = {"big": 900, "mid": 300, "tiny": 30}


def _sources() -> dict[str, TaskData]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for i, (name, n) in enumerate(SIZES.items()):
        x = torch.randn(n, 3, generator=g) + i
        target = torch.randint(0, 3, (n,), generator=g) if name == "mid" else torch.randn(n)
        out[name] = TaskData(x, {name: target})
    return out


def _counts(schedule: str, steps: int, epochs: int = 1, **params) -> np.ndarray:
    """How often each source was drawn in `steps` steps (the plans only: gathering the rows,
    which the other tests check, would double the time and not change the counts)."""
    sampler = MultiSourceSampler(_sources(), make_schedule(schedule, **params), 16, 0, epochs)
    for _ in range(steps):
        sampler.draw()
    return sampler.counts


@pytest.mark.parametrize(
    ("schedule", "params", "weights"),
    [
        ("uniform", {}, [1, 1, 1]),
        ("proportional", {}, [900, 300, 30]),
        ("temperature", {"temperature": 2.0}, [900**0.5, 300**0.5, 30**0.5]),
        ("temperature", {"temperature": 4.0}, [900**0.25, 300**0.25, 30**0.25]),
    ],
)
def test_frequencies_match_the_formula(schedule, params, weights):
    counts = _counts(schedule, 6000, **params)
    p = np.array(weights, dtype=float) / np.sum(weights)
    assert chisquare(counts, p * counts.sum()).pvalue > 1e-3


def test_annealed_alpha_and_frequencies_per_epoch():
    assert [Annealed.alpha(e, 5) for e in range(5)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    sampler = MultiSourceSampler(_sources(), make_schedule("annealed"), 16, 0, epochs=5)
    per_epoch = sampler.steps_per_epoch  # Σ ⌈n_i / 16⌉ = 57 + 19 + 2
    assert per_epoch == 78
    counts = []
    for _ in range(5):
        before = sampler.counts.copy()
        for _ in range(per_epoch):
            sampler.next_batch()
        counts.append(sampler.counts - before)
    first, last = np.sum(counts[:1], 0), np.sum(counts[-1:], 0)
    assert first[2] < last[2]  # the tiny source gains as α falls
    sizes = np.array(list(SIZES.values()), dtype=float)
    p_last = sizes**0.2 / (sizes**0.2).sum()
    np.testing.assert_allclose(sampler.probabilities(), p_last)


def test_round_robin_and_joint():
    assert list(_counts("round_robin", 9)) == [3, 3, 3]
    sampler = MultiSourceSampler(_sources(), make_schedule("joint"), 16, 0)
    batch = sampler.next_batch()
    assert len(batch.x) == 48 and sampler.steps_per_epoch == 57
    # rows of other sources are missing for each task: NaN, or -100 for class labels
    assert torch.isnan(batch.targets["big"][16:]).all()
    assert (batch.targets["mid"][:16] == -100).all() and (batch.targets["mid"][16:32] >= 0).all()
    assert not torch.isnan(batch.targets["tiny"][32:]).any()


def test_a_single_joint_source_walks_like_the_plain_loop():
    g = torch.Generator().manual_seed(1)
    data = TaskData(torch.randn(50, 2, generator=g), {"a": torch.randn(50), "b": torch.randn(50)})
    sampler = MultiSourceSampler({"all": data}, make_schedule("joint"), 16, seed=5)
    plain = torch.Generator().manual_seed(5)
    expected = [b for _ in range(3) for b in data.batches(16, shuffle=True, generator=plain)]
    for want in expected:
        got = sampler.next_batch()
        assert torch.equal(got.x, want.x) and torch.equal(got.targets["b"], want.targets["b"])


@pytest.mark.parametrize("schedule", ["temperature", "dynamic", "round_robin", "joint"])
def test_resumed_sampler_continues_the_same_sequence(schedule):
    sampler = MultiSourceSampler(_sources(), make_schedule(schedule), 16, 3, epochs=4)
    for step in range(37):  # mid-epoch
        sampler.next_batch()
        if schedule == "dynamic" and step == 20:
            sampler.schedule.update(np.array([1.0, 2.0, 3.0]))
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)
    buffer.seek(0)
    resumed = MultiSourceSampler(_sources(), make_schedule(schedule), 16, 3, epochs=4)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(60):
        a, b = sampler.next_batch(), resumed.next_batch()
        assert torch.equal(a.x, b.x)
    np.testing.assert_array_equal(sampler.counts, resumed.counts)


def test_dynamic_draws_more_from_the_source_that_learns_slowest():
    schedule = make_schedule("dynamic", temperature=1.0, gamma=1.0)
    sizes = np.array([100, 100, 100])
    np.testing.assert_allclose(schedule.probabilities(sizes, 0, 1), [1 / 3] * 3)
    schedule.update(np.array([2.0, 2.0, 2.0]))  # the first window fixes the start
    schedule.update(np.array([0.5, 1.0, 2.0]))  # ratios 0.25, 0.5, 1
    np.testing.assert_allclose(schedule.probabilities(sizes, 0, 1), np.array([1, 2, 4]) / 7)


def test_dynamic_ignores_a_source_that_a_window_did_not_draw():
    """Found by trying the schedules: an undrawn source's loss read 0 (clamped to 1e-12). In the
    first window it became the source's start, so once drawn its ratio was ~1e11 and it took
    every draw; later, its ratio fell to ~0 and it was never drawn again."""
    schedule = make_schedule("dynamic", temperature=1.0, gamma=1.0)
    sizes = np.array([100, 100, 100])
    schedule.update(np.array([2.0, np.nan, 1.0]))  # b not drawn: no start, ratio 1
    np.testing.assert_allclose(schedule.probabilities(sizes, 0, 1), [1 / 3] * 3)
    schedule.update(np.array([1.0, 4.0, np.nan]))  # b starts at 4; c keeps its ratio 1
    np.testing.assert_allclose(schedule.probabilities(sizes, 0, 1), np.array([0.5, 1, 1]) / 2.5)
    schedule.update(np.array([1.0, 2.0, 0.5]))  # ratios 0.5, 0.5, 0.5
    np.testing.assert_allclose(schedule.probabilities(sizes, 0, 1), [1 / 3] * 3)
    sampler = MultiSourceSampler(_sources(), make_schedule("uniform"), 16, 0)
    drawn = [sampler.draw()[0][0] for _ in range(40)]
    for step in range(len(drawn)):  # each step's loss counts for the source it drew
        sampler.observe({"big": 1.0 + step, "mid": np.nan, "tiny": 3.0})
    expected = [np.mean([1.0 + s for s, d in enumerate(drawn) if d == 0]), np.nan, 3.0]
    assert 2 in drawn and 1 in drawn  # `mid` drawn, its only task unmeasured: NaN, held
    np.testing.assert_array_equal(sampler.source_losses(), expected)
    assert np.isnan(sampler.source_losses()).all()  # a new window: nothing drawn yet


def test_temperature_probabilities_stay_finite_for_a_small_temperature():
    """T = 0.01 raised 900 to the 100th power (inf), and torch.multinomial failed with a
    traceback; NaN passed the check `T <= 0`."""
    sizes = np.array([900, 300, 30])
    for name in ("temperature", "dynamic"):
        p = make_schedule(name, temperature=0.01).probabilities(sizes, 0, 1)
        np.testing.assert_allclose(p, [1.0, 0.0, 0.0], atol=1e-12)
        with pytest.raises(ValueError, match="temperature"):
            make_schedule(name, temperature=float("nan"))
    for gamma in (float("nan"), float("inf")):  # inf: ratio**inf made the probabilities NaN
        with pytest.raises(ValueError, match="a finite gamma >= 0"):
            make_schedule("dynamic", gamma=gamma)
    p = make_schedule("temperature", temperature=3.0).probabilities(sizes, 0, 1)
    np.testing.assert_allclose(p, sizes ** (1 / 3) / (sizes ** (1 / 3)).sum())


def test_bad_schedules_are_refused():
    with pytest.raises(
        ValueError, match="unknown schedule 'temp'; allowed: annealed, dynamic, joint"
    ):
        make_schedule("temp")
    with pytest.raises(ValueError, match=r"has no parameter \['t'\]; its parameters: \['temp"):
        make_schedule("temperature", t=2)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_schedule("temperature", temperature=0)
    with pytest.raises(ValueError, match=r"data sources \['e'\] have no rows"):
        MultiSourceSampler({"e": TaskData(torch.zeros(0, 2), {"e": torch.zeros(0)})},
                           make_schedule("uniform"), 4)  # fmt: skip


def test_dynamic_and_annealed_frequencies_match_their_formulas():
    schedule = make_schedule("dynamic", temperature=2.0, gamma=1.0)
    schedule.update(np.array([1.0, 1.0, 1.0]))
    schedule.update(np.array([0.2, 0.5, 1.0]))
    sampler = MultiSourceSampler(_sources(), schedule, 16, 0)
    for _ in range(6000):
        sampler.draw()  # the counts only, as in _counts
    sizes = np.array(list(SIZES.values()), dtype=float)
    p = sizes**0.5 * np.array([0.2, 0.5, 1.0])
    p /= p.sum()
    assert chisquare(sampler.counts, p * 6000).pvalue > 1e-3
    # annealed, last of 3 epochs: α = 0.2 (one long epoch of small batches)
    sampler = MultiSourceSampler(_sources(), make_schedule("annealed"), 1, 0, epochs=3)
    per_epoch = sampler.steps_per_epoch
    for _ in range(2 * per_epoch):
        sampler.draw()
    before = sampler.counts.copy()
    for _ in range(per_epoch):
        sampler.draw()
    p = sizes**0.2 / (sizes**0.2).sum()
    assert chisquare(sampler.counts - before, p * per_epoch).pvalue > 1e-3


def test_an_unknown_schedule_far_from_every_name_says_how_to_add_one():
    with pytest.raises(ValueError, match=r"unknown schedule 'zz'; .*polytask --import MODULE"):
        make_schedule("zz")
