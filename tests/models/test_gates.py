"""Gates: the smooth step's golden values, DSelect-k distributions and their sparsity."""

import pytest
import torch

from polytask import Task
from polytask.models import MMoE
from polytask.models._gates import DSelectKGate, smooth_step


def test_smooth_step_golden_values():
    # γ = 2: −2t³/8 + 3t/4 + ½; t = ½ → −1/32 + 3/8 + ½ = 0.84375
    t = torch.tensor([-5.0, -1.0, 0.0, 0.5, 1.0, 5.0])
    expected = torch.tensor([0.0, 0.0, 0.5, 0.84375, 1.0, 1.0])
    torch.testing.assert_close(smooth_step(t, 2.0), expected)


@pytest.mark.parametrize(("experts", "k"), [(4, 2), (5, 2), (8, 3), (1, 1)])
def test_dselect_weights_are_distributions(experts, k):
    torch.manual_seed(0)
    gate = DSelectKGate(6, experts, k=k)
    w = gate(torch.randn(10, 6))
    assert w.shape == (10, experts) and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(10))


def test_saturated_dselect_picks_at_most_k_experts():
    torch.manual_seed(0)
    gate = DSelectKGate(6, 8, k=2, gamma=0.1)
    with torch.no_grad():
        gate.decisions.weight.mul_(100.0)  # almost every smooth step at 0 or 1
    x = torch.randn(50, 6)
    w = gate(x)
    saturated = (gate.decisions(x).abs() >= 0.05).all(1)  # |t| ≥ γ/2 for every decision
    assert saturated.sum() > 40
    assert int((w[saturated] > 0).sum(1).max()) <= 2


def test_bad_dselect_settings():
    with pytest.raises(ValueError, match="1 <= k <= experts"):
        DSelectKGate(3, 4, k=5)
    with pytest.raises(ValueError, match="gate must be"):
        MMoE(3, [Task("a", "regression")], gate="top1")


def test_mmoe_with_dselect_gates_reports_usage():
    torch.manual_seed(0)
    tasks = [Task("a", "regression"), Task("b", "binary")]
    model = MMoE(6, tasks, num_experts=4, expert_hidden=(8,), gate="dselect", top_k=2)
    out = model(torch.randn(9, 6))
    assert out["a"].shape == (9,)
    for usage in model.expert_usage().values():
        torch.testing.assert_close(usage.sum(), torch.tensor(1.0))


def test_selector_entropy_golden_values_and_its_penalty():
    """Undecided bits (every step at ½): each selector is uniform over its 2³ codes, entropy
    log 8, summed over k = 2 selectors; decided bits: 0."""
    import math

    gate = DSelectKGate(3, 8, k=2)
    with torch.no_grad():
        gate.decisions.weight.zero_()
        gate.decisions.bias.zero_()
    assert gate.entropy() is None  # no forward yet
    gate(torch.randn(5, 3))
    assert float(gate.entropy()) == pytest.approx(2 * math.log(8), rel=1e-6)
    with torch.no_grad():
        gate.decisions.bias.fill_(3.0)  # past γ/2: every bit decided
    gate(torch.randn(5, 3))
    assert float(gate.entropy()) == pytest.approx(0.0, abs=1e-9)
    tasks = [Task("a", "regression"), Task("b", "binary")]
    model = MMoE(3, tasks, num_experts=8, expert_hidden=(4,), gate="dselect", gate_entropy=0.5)
    for g in model.gates.values():
        with torch.no_grad():
            g.decisions.weight.zero_()
            g.decisions.bias.zero_()
    model(torch.randn(4, 3))
    assert float(model.penalty()) == pytest.approx(0.5 * 2 * 2 * math.log(8), rel=1e-6)
    assert MMoE(3, tasks, gate="dselect").penalty() is None  # gate_entropy 0: off
    with pytest.raises(ValueError, match="the softmax gate has none: drop gate_entropy"):
        MMoE(3, tasks, gate_entropy=0.1)


def test_the_entropy_regulariser_drives_every_row_to_at_most_k_experts():
    """Without it nothing pushes the selectors' decisions to saturate (trained on customers,
    4-5 of 8 experts stayed in use per row at top_k 2); minimised alone, every row uses at
    most k."""
    torch.manual_seed(0)
    gate = DSelectKGate(5, 8, k=2)
    x = torch.randn(64, 5)
    assert int((gate(x) > 1e-6).sum(1).max()) > 2
    optimizer = torch.optim.Adam(gate.parameters(), lr=0.05)
    for _ in range(300):
        gate(x)
        optimizer.zero_grad()
        gate.entropy().backward()
        optimizer.step()
    assert int((gate(x) > 1e-6).sum(1).max()) <= 2
