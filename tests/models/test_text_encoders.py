"""Text encoders: the `transformer` encoder's sequence representation (padding invariance, the
mask channel, all-padding rows, its refusals), hard sharing on it learning and its exact
gradient modes equal to per-task autograd; the optional `hf` encoder on a tiny local BERT."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from polytask import Task, make_balancer
from polytask.balancers import GradientInfo, GramianBalancer
from polytask.data._source import Batch
from polytask.gradients import plan_gradients
from polytask.models import InputShape, MultiTaskModel, build_model
from polytask.models.encoders import (
    ENCODERS,
    Features,
    TransformerEncoder,
    build_encoder,
    encoder_params,
    split_mask,
)
from polytask.models.encoders._transformer import sinusoids
from polytask.train import task_losses, train_step

SHAPE = InputShape((32,), vocab_size=50)
SMALL = {"width": 16, "depth": 2, "heads": 2, "ff_mult": 2}


def _ids(lengths: list[int], length: int | None = None, seed: int = 0) -> torch.Tensor:
    """Rows of random ids in 4..49 of the given lengths, PAD_ID 0 after them."""
    g = torch.Generator().manual_seed(seed)
    width = length or max(lengths)
    x = torch.randint(4, 50, (len(lengths), width), generator=g)
    return x.masked_fill(torch.arange(width) >= torch.tensor(lengths)[:, None], 0)


def _encoder(**params: object) -> TransformerEncoder:
    torch.manual_seed(0)
    encoder = build_encoder("transformer", SHAPE, **{**SMALL, **params})
    assert isinstance(encoder, TransformerEncoder)
    return encoder


# -- the representation -------------------------------------------------------------------


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_a_row_alone_and_padded_among_longer_rows_gives_the_same_outputs(positions):
    encoder = _encoder(positions=positions).eval()
    batch = _ids([5, 12, 9, 3], seed=1)
    z = encoder(batch)
    assert z.shape == (4, 12, 17)
    assert encoder.features == Features(16, sequence=True)
    for i, length in enumerate([5, 12, 9, 3]):
        alone = encoder(batch[i : i + 1, :length])
        torch.testing.assert_close(z[i : i + 1, :length], alone, rtol=1e-5, atol=1e-5)
        # padding: features exactly zero, mask 0; real positions: mask 1
        h, mask = split_mask(z[i])
        assert mask.tolist() == [True] * length + [False] * (12 - length)
        assert torch.equal(h[length:], torch.zeros(12 - length, 16))
        assert bool((h[:length].abs().sum(-1) > 0).all())
    # more padding than the batch needs changes nothing either
    wider = torch.cat([batch, torch.zeros(4, 8, dtype=torch.long)], dim=1)
    torch.testing.assert_close(encoder(wider)[:, :12], z)


def test_an_all_padding_row_gives_zeros_and_finite_gradients_not_nan():
    encoder = _encoder(dropout=0.1).train()
    x = _ids([6, 0, 4])
    z = encoder(x)
    assert torch.isfinite(z).all()
    assert torch.equal(z[1], torch.zeros(6, 17))
    z.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)
    assert torch.isfinite(encoder(torch.zeros(2, 3, dtype=torch.long))).all()  # every row
    assert encoder(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0, 17)  # no token at all


def test_sinusoidal_positions_are_the_fixed_table_not_a_parameter():
    table = sinusoids(3, 4)
    # position p, channel pair i: sin / cos of p / 10000^(2i/4)
    expected = torch.tensor(
        [[0.0, 1.0, 0.0, 1.0], [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
         [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)]]
    )  # fmt: skip
    torch.testing.assert_close(table, expected)
    fixed, learned = _encoder(positions="sinusoidal"), _encoder()
    count = sum(p.numel() for p in learned.parameters()) - sum(
        p.numel() for p in fixed.parameters()
    )
    assert count == 32 * 16  # the learned table: max_length × width
    assert not any("position" in k for k in fixed.state_dict())


def test_token_embeddings_are_scaled_and_pad_embeds_to_zero():
    encoder = _encoder(dropout=0.0).eval()
    embed = encoder.net[0]
    x = torch.tensor([[7, 0]])
    out = embed(x)
    expected = embed.tokens.weight[7] * 4.0 + embed.position[0]  # √16 = 4
    torch.testing.assert_close(out[0, 0, :16], expected)
    torch.testing.assert_close(out[0, 1, :16], embed.position[1])
    assert out[0, :, 16].tolist() == [1.0, 0.0]


# -- refusals -----------------------------------------------------------------------------


def test_a_plain_shape_without_vocabulary_size_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"InputShape\(\(32,\), vocab_size=V\)"):
        build_encoder("transformer", (32,))
    with pytest.raises(ValueError, match=r"takes token ids: input_shape must be \(max_length,\)"):
        build_encoder("transformer", InputShape((3, 8, 8), vocab_size=50))
    with pytest.raises(ValueError, match="width 16 must be a multiple of heads 3"):
        build_encoder("transformer", SHAPE, width=16, heads=3)
    with pytest.raises(ValueError, match="positions"):
        build_encoder("transformer", SHAPE, positions="rotary")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.rand(2, 5), r"integer token ids of shape \(N, L\).*torch.float32"),
        (torch.ones(2, 5, dtype=torch.bool), "integer token ids"),
        (torch.ones(2, 3, 4, dtype=torch.long), r"shape \(2, 3, 4\)"),
        (torch.tensor([[4, 50]]), r"token id 50 is outside the vocabulary \[0, 50\)"),
        (torch.tensor([[4, -1]]), r"token id -1 is outside the vocabulary"),
        (torch.ones(1, 33, dtype=torch.long), r"at most max_length 32 tokens, got 33"),
    ],
)
def test_bad_token_batches_are_refused_naming_the_problem(x, message):
    with pytest.raises(ValueError, match=message):
        _encoder()(x)


def test_int32_ids_are_accepted():
    encoder = _encoder().eval()
    x = _ids([3, 5])
    torch.testing.assert_close(encoder(x.int()), encoder(x))


def test_the_registry_lists_the_text_encoders_and_their_parameters():
    assert {"transformer", "hf"} <= set(ENCODERS)
    assert set(encoder_params("transformer")) == {
        "width", "depth", "heads", "ff_mult", "dropout", "positions"
    }  # fmt: skip
    assert set(encoder_params("hf")) == {"path", "freeze"}


# -- hard sharing on text ------------------------------------------------------------------

TASKS = [Task("share", "regression"), Task("long", "binary")]


def _model(**params: object) -> MultiTaskModel:
    model = build_model(
        "hard_sharing", SHAPE, TASKS, encoder="transformer",
        encoder_params={**SMALL, **params}, seed=0,
    )  # fmt: skip
    assert isinstance(model, MultiTaskModel)
    return model


def _text_batch(n: int = 16, seed: int = 0) -> Batch:
    """Rows of 4..20 tokens: `share` is the fraction of ids below 20 (a mean over the real
    tokens), `long` whether the row has more than 12 tokens."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 21, (n,), generator=g).tolist()
    x = _ids(lengths, seed=seed)
    real = x != 0
    share = ((x < 20) & real).sum(1) / real.sum(1)
    long = (torch.tensor(lengths) > 12).float()
    return Batch(x, {"share": 4 * (share - 0.5), "long": long})


def test_hard_sharing_on_the_transformer_learns_a_sequence_regression():
    model = _model(dropout=0.0)
    assert model.features == Features(16, sequence=True)
    balancer = make_balancer("ew")
    balancer.setup([t.name for t in TASKS])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = _text_batch(64)
    losses = []
    for _ in range(40):
        result = train_step(model, balancer, optimizer, batch, TASKS)
        losses.append(float(result.losses[0]))
    assert losses[-1] < 0.5 * losses[0], losses


def _grads(mode: str, balancer: GramianBalancer) -> list[torch.Tensor]:
    """The shared parameters' gradients after one train_step in `mode` (weights kept)."""
    model = _model(dropout=0.0)
    balancer.setup([t.name for t in TASKS])
    plan = plan_gradients(model, balancer, mode, batch_size=16)
    assert plan.mode == mode
    train_step(model, balancer, torch.optim.SGD(model.parameters(), lr=0.0), _text_batch(), TASKS,
               plan)  # fmt: skip
    return [p.grad.clone() for p in model.shared_parameters()]


def _per_task(model: MultiTaskModel) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """Each task's loss and its gradient of the shared parameters, by plain autograd."""
    batch = _text_batch()
    model.train()
    losses = task_losses(model(batch.x), batch, TASKS)
    shared = list(model.shared_parameters())
    grads = [list(torch.autograd.grad(loss, shared, retain_graph=True)) for loss in losses]
    return losses.detach(), grads


def test_the_exact_modes_apply_upgrad_to_the_per_task_gradients_by_autograd():
    losses, per_task = _per_task(_model(dropout=0.0))
    flat = torch.stack([torch.cat([g.reshape(-1) for g in task]) for task in per_task])
    c = make_balancer("upgrad").coefficients(
        GradientInfo(losses, gramian=(flat.double() @ flat.double().T))
    )
    assert not torch.allclose(c, c.new_ones(2))  # the tasks conflict enough to matter
    expected = [c[0].float() * a + c[1].float() * b for a, b in zip(*per_task, strict=True)]
    for mode in ("jacobian", "gramian"):
        got = _grads(mode, make_balancer("upgrad"))  # type: ignore[arg-type]
        scale = max(float(g.abs().max()) for g in expected)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


class _Sum(GramianBalancer):
    """Every task weighs 1 whatever its gradient: the exact modes must give the plain sum's."""

    def coefficients(self, info: GradientInfo) -> torch.Tensor:
        return torch.ones_like(info.losses)


def test_with_unit_weights_every_exact_mode_gives_the_plain_sums_gradient():
    _, per_task = _per_task(_model(dropout=0.0))
    expected = [a + b for a, b in zip(*per_task, strict=True)]
    for mode in ("jacobian", "gramian"):
        got = _grads(mode, _Sum())
        scale = max(float(g.abs().max()) for g in expected)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)
    # the embedding row of PAD_ID and of ids absent from the batch get no gradient
    names = [n for n, _ in _model().trunk.named_parameters()]
    embedding = got[names.index("net.0.tokens.weight")]
    seen = set(torch.unique(_text_batch().x).tolist()) - {0}
    unseen = [i for i in range(50) if i not in seen]
    assert 0 in unseen and len(unseen) > 1
    assert torch.equal(embedding[unseen], torch.zeros(len(unseen), 16))
    assert bool((embedding[sorted(seen)].abs().sum(1) > 0).all())


# -- hf, optional ----------------------------------------------------------------------------


def test_hf_missing_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers: ImportError
    with pytest.raises(ValueError, match=r"pip install 'polytask\[transformers\]'"):
        build_encoder("hf", SHAPE, path="anywhere")


def _bert(folder, pad: int = 0):  # type: ignore[no-untyped-def]
    """A tiny randomly initialised BertModel saved to `folder` (no download)."""
    transformers = pytest.importorskip(
        "transformers", reason="the hf encoder's tests need transformers (polytask[transformers])"
    )
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=40, pad_token_id=pad,
    )  # fmt: skip
    model = transformers.BertModel(config)
    model.save_pretrained(folder)
    return model


def test_hf_encoder_is_the_local_models_last_hidden_state_with_the_mask(tmp_path):
    bert = _bert(tmp_path).eval()
    encoder = build_encoder("hf", SHAPE, path=str(tmp_path)).eval()
    assert encoder.features == Features(32, sequence=True)
    x = _ids([6, 3, 0])
    z = encoder(x)
    assert z.shape == (3, 6, 33) and torch.isfinite(z).all()
    h, mask = split_mask(z)
    assert mask.tolist() == [[True] * 6, [True] * 3 + [False] * 3, [False] * 6]
    assert torch.equal(h[1, 3:], torch.zeros(3, 32)) and torch.equal(h[2], torch.zeros(6, 32))
    # each row: BERT's own output on that row alone, unpadded
    for i, length in enumerate([6, 3]):
        alone = bert(input_ids=x[i : i + 1, :length]).last_hidden_state
        torch.testing.assert_close(h[i : i + 1, :length], alone, rtol=1e-5, atol=1e-5)
    # trained with the heads unless frozen; the unused pooler is dropped
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    assert trainable and encoder.model.pooler is None
    frozen = build_encoder("hf", SHAPE, path=str(tmp_path), freeze=True).train()
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not frozen.model.training  # no dropout in a frozen backbone
    torch.testing.assert_close(frozen(x), z)


def test_hf_hard_sharing_takes_a_gradient_balancing_step(tmp_path):
    _bert(tmp_path)
    model = build_model(
        "hard_sharing", SHAPE, TASKS, encoder="hf", encoder_params={"path": str(tmp_path)}
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    train_step(model, make_balancer("upgrad"), optimizer, _text_batch(), TASKS)
    grads = [p.grad for p in model.shared_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_hf_refuses_other_pad_ids_hub_names_and_long_inputs(tmp_path):
    _bert(tmp_path / "roberta_like", pad=1)
    with pytest.raises(ValueError, match=r"pads with token id 1 \(config.pad_token_id\).*0"):
        build_encoder("hf", SHAPE, path=str(tmp_path / "roberta_like"))
    with pytest.raises(ValueError, match="local directory only"):
        build_encoder("hf", SHAPE, path="bert-base-uncased")
    _bert(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"max_length 64 exceeds the checkpoint's 40 positions"):
        build_encoder("hf", InputShape((64,), vocab_size=50), path=str(tmp_path / "bert"))
    with pytest.raises(ValueError, match="vocabulary has 99 token ids, the checkpoint's 50"):
        build_encoder("hf", InputShape((16,), vocab_size=99), path=str(tmp_path / "bert"))
    with pytest.raises(ValueError, match="token id 50 is outside"):
        build_encoder("hf", (16,), path=str(tmp_path / "bert"))(torch.tensor([[50]]))


@pytest.mark.parametrize("mode", ["representation", "last_layer", "subsample"])
def test_the_other_gradient_modes_step_a_transformer_trunk(mode):
    model = _model()
    balancer = make_balancer("upgrad")
    balancer.setup([t.name for t in TASKS])
    plan = plan_gradients(model, balancer, mode, batch_size=16)
    train_step(model, balancer, torch.optim.SGD(model.parameters(), lr=0.0), _text_batch(), TASKS,
               plan)  # fmt: skip
    grads = [p.grad for p in model.shared_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    with pytest.raises(ValueError, match="sketch"):
        plan_gradients(model, balancer, "sketch", batch_size=16)


def test_hf_takes_the_encoder_of_an_encoder_decoder_checkpoint(tmp_path):
    transformers = pytest.importorskip(
        "transformers", reason="the hf encoder's tests need transformers (polytask[transformers])"
    )
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=50, d_model=16, d_kv=8, d_ff=24, num_layers=1, num_heads=2, pad_token_id=0
    )
    t5 = transformers.T5Model(config).eval()
    t5.save_pretrained(tmp_path)
    encoder = build_encoder("hf", SHAPE, path=str(tmp_path)).eval()
    x = _ids([5, 2])
    h, mask = split_mask(encoder(x))
    assert h.shape == (2, 5, 16) and mask.sum(1).tolist() == [5, 2]
    alone = t5.get_encoder()(input_ids=x[1:, :2]).last_hidden_state
    torch.testing.assert_close(h[1:, :2], alone, rtol=1e-5, atol=1e-5)
    assert not any("decoder" in name for name, _ in encoder.named_parameters())
