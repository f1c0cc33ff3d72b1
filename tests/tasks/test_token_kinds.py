"""Token and sequence task kinds: per-token masked losses against hand-computed values, span F1
of BIO tags, tags aligned with sub-tokens and decoded back to words, sequence-level classes and
values on pooled sequences, and a small text model trained end to end through the Trainer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polytask import TaskData, TrainConfig, Trainer
from polytask.balancers import EqualWeights
from polytask.data import Batch
from polytask.models import MultiTaskModel
from polytask.models.encoders import Encoder, Features, join_mask
from polytask.tasks import (
    IGNORE_INDEX,
    KINDS,
    METRICS,
    SequenceKind,
    TargetFit,
    Task,
    TextRow,
    TokenKind,
)
from polytask.tasks._columns import DataError
from polytask.tasks._kinds import BOS_ID, EOS_ID, PAD_ID
from polytask.tasks._kinds._sequence import SequenceClassKind, SequenceValueKind
from polytask.tasks._kinds._token import PlainTokenKind
from polytask.train import train_step
from polytask.train._evaluate import evaluate

I = IGNORE_INDEX  # noqa: E741
TAGS = ["O", "B-LOC", "B-ORG", "B-PER", "I-PER"]
NER = Task("ner", "token", num_classes=len(TAGS))


def _one_hot(indices: Tensor, classes: int) -> Tensor:
    """Logits whose argmax is `indices` (−100 → class 0)."""
    return F.one_hot(indices.clamp_min(0), classes).float() * 5.0


def _sequence(n: int, length: int, channels: int, lengths: list[int], seed: int = 0) -> Tensor:
    """A sequence representation (n, length, channels + 1) of random features, the rows real
    over their `lengths` and padded after."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, length, channels, generator=g)
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    return join_mask(h, mask)


# --- per-token masks ------------------------------------------------------------------------


def test_token_loss_is_the_mean_over_the_labelled_tokens_of_a_padded_batch():
    # a padded NER batch: -100 at padding and at later sub-tokens (the issue: with a row mask,
    # `.all(dim=1)` dropped every sentence, loss 0 and metrics NaN)
    target = torch.tensor([[3, 4, I, 0, 1], [2, 0, I, I, I]])
    output = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert NER.mask(target).tolist() == [True, True]
    assert NER.kind_spec.label_count(target) == 6
    loss = NER.compute_loss(output, target)
    labelled = [(0, 0), (0, 1), (0, 3), (0, 4), (1, 0), (1, 1)]
    by_hand = [
        F.cross_entropy(output[r, p].unsqueeze(0), target[r, p].unsqueeze(0)) for r, p in labelled
    ]
    expected = torch.stack(by_hand).mean().item()
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    grad = output.grad
    assert grad is not None
    unlabelled = target == I
    assert bool((grad[unlabelled] == 0).all())
    assert bool((grad[~unlabelled].abs().sum(dim=-1) > 0).all())


def test_a_row_without_any_tag_leaves_the_others_training():
    target = torch.tensor([[I, I, I, I], [1, I, 0, I]])
    output = torch.zeros(2, 4, 5, requires_grad=True)
    assert NER.mask(target).tolist() == [False, True]
    loss = NER.compute_loss(output, target)
    assert loss.item() == pytest.approx(math.log(5))  # uniform logits over 5 tags
    loss.backward()
    assert output.grad is not None
    assert float(output.grad[0].abs().sum()) == 0.0
    assert float(output.grad[1, 0].abs().sum()) > 0.0
    # no labelled token at all: 0, still in the graph
    none = NER.compute_loss(output, torch.full((2, 4), I))
    assert none.item() == 0.0 and none.requires_grad


def test_label_smoothing_and_a_row_mask_from_the_caller():
    task = Task("ner", "token", num_classes=5, label_smoothing=0.1)
    target = torch.tensor([[3, 4, 0], [1, I, I]])
    output = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1))
    keep = target != I
    expected = F.cross_entropy(output[keep], target[keep], label_smoothing=0.1)
    assert float(task.compute_loss(output, target)) == pytest.approx(float(expected), rel=1e-6)
    only_first = task.compute_loss(output, target, torch.tensor([True, False]))
    first = F.cross_entropy(output[0], target[0], label_smoothing=0.1)
    assert float(only_first) == pytest.approx(float(first), rel=1e-6)


def test_an_output_that_is_not_aligned_with_the_tokens_is_refused():
    target = torch.zeros(2, 6, dtype=torch.long)
    with pytest.raises(ValueError, match=r"shape \(2, 5, 5\) for targets of shape \(2, 6\)"):
        NER.compute_loss(torch.zeros(2, 5, 5), target)
    with pytest.raises(ValueError, match=r"\(N, L, 5\)"):
        NER.compute_loss(torch.zeros(2, 6, 3), target)


# --- span F1 and the accumulator ------------------------------------------------------------


def _encode(rows: list[list[str]], length: int) -> Tensor:
    out = torch.full((len(rows), length), I)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor([TAGS.index(t) for t in row])
    return out


GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]  # 3 entities
GUESS = [["B-PER", "I-PER", "O", "O"], ["O", "B-LOC"]]  # 2 entities, 1 right


def test_span_f1_against_a_hand_computed_value_over_batches():
    accumulator = NER.kind_spec.accumulator(NER, None, TargetFit(classes=TAGS))
    for rows in ([0], [1]):  # one row per batch, padded to 5 tokens
        gold = _encode([GOLD[r] for r in rows], 5)
        guess = _encode([GUESS[r] for r in rows], 5)
        accumulator.update(_one_hot(guess, 5), gold)
    got = accumulator.compute()
    assert list(got) == [
        "span_f1",
        "span_precision",
        "span_recall",
        "token_accuracy",
        "macro_f1",
    ]
    assert got["span_precision"] == pytest.approx(0.5)
    assert got["span_recall"] == pytest.approx(1 / 3)
    assert got["span_f1"] == pytest.approx(0.4)
    assert got["token_accuracy"] == pytest.approx(3 / 6)
    from seqeval.metrics import f1_score

    assert got["span_f1"] == pytest.approx(f1_score(GOLD, GUESS))
    # macro F1 over tokens: O (P 1/3, R 1/2 → 0.4), B-PER 1, I-PER 1, B-LOC 0, B-ORG 0
    assert got["macro_f1"] == pytest.approx((0.4 + 1 + 1 + 0 + 0) / 5)


def test_span_metrics_need_bio_tag_names():
    with pytest.raises(ValueError, match=r"only class indices.*scheme: none"):
        NER.kind_spec.accumulator(NER, None, None)
    with pytest.raises(ValueError, match=r"include \['NN', 'VB'\].*scheme: none"):
        NER.kind_spec.accumulator(NER, None, TargetFit(classes=["NN", "VB"]))
    # token metrics alone read class indices
    task = Task("ner", "token", num_classes=5, metrics=("token_accuracy",))
    accumulator = task.kind_spec.accumulator(task, None, None)
    gold = _encode(GOLD, 4)
    accumulator.update(_one_hot(gold, 5), gold)
    assert accumulator.compute() == {"token_accuracy": 1.0}


def test_metrics_are_undefined_without_labelled_tokens_or_with_diverged_outputs():
    pos = Task("pos", "token", num_classes=3, kind_params={"scheme": "none"})
    accumulator = pos.kind_spec.accumulator(pos, None, None)
    accumulator.update(torch.zeros(1, 3, 3), torch.full((1, 3), I))
    assert all(math.isnan(v) for v in accumulator.compute().values())
    accumulator = pos.kind_spec.accumulator(pos, None, None)
    accumulator.update(torch.full((1, 2, 3), float("nan")), torch.tensor([[0, 1]]))
    assert "not finite" in repr(accumulator.compute()["token_accuracy"])


def test_task_evaluate_reads_the_same_metrics_from_arrays():
    pos = Task("pos", "token", num_classes=5, kind_params={"scheme": "none"})
    gold, guess = _encode(GOLD, 4), _encode(GUESS, 4)
    got = pos.evaluate(pos.predict(_one_hot(guess, 5)).numpy(), gold.numpy())
    assert got["token_accuracy"] == pytest.approx(0.5)


# --- kinds, schemes and their metrics -------------------------------------------------------


def test_scheme_decides_the_metrics_and_the_primary_metric():
    assert isinstance(KINDS["token"], TokenKind) and KINDS["token"].sequential
    assert list(METRICS["token"]) == [
        "span_f1",
        "span_precision",
        "span_recall",
        "token_accuracy",
        "macro_f1",
    ]
    assert NER.primary.name == "span_f1"
    pos = Task("pos", "token", kind_params={"scheme": "none"})
    assert isinstance(pos.kind_spec, PlainTokenKind)
    assert pos.primary.name == "token_accuracy"
    assert [m.name for m in pos.metric_objects()] == ["token_accuracy", "macro_f1"]
    chosen = Task("ner", "token", primary_metric="token_accuracy")
    assert chosen.primary.name == "token_accuracy"
    with pytest.raises(ValueError, match="span_f1 reads entities from BIO tags"):
        Task("pos", "token", kind_params={"scheme": "none"}, metrics=("span_f1",))
    with pytest.raises(ValueError, match="scheme must be 'bio'"):
        Task("ner", "token", kind_params={"scheme": "iob"})
    with pytest.raises(ValueError, match=r"is for .* not token"):
        Task("ner", "token", loss="mse")


def test_the_token_head_predicts_per_position_and_needs_a_sequence():
    head = NER.build_head(Features(8, sequence=True))
    z = _sequence(2, 6, 8, [6, 3])
    out = NER.shape_output(head(z))
    assert out.shape == (2, 6, 5)
    probs = NER.predict(out)
    assert torch.allclose(probs.sum(dim=-1), torch.ones(2, 6))
    for features in (8, Features(8), Features(8, stride=4, spatial=True)):
        with pytest.raises(ValueError, match="sequence encoder"):
            NER.build_head(features)
    with pytest.raises(ValueError, match="one position per 4 inputs"):
        NER.build_head(Features(8, sequence=True, stride=4))


# --- text cells: tag sets, alignment with sub-tokens, decoding ------------------------------

# "John lives in Ljubljana": John → jo ##hn, Ljubljana → lj ##ub ##ljana, with [BOS] / [EOS]
WORDS = ["John", "lives", "in", "Ljubljana"]
ROW = TextRow(
    ids=[BOS_ID, 10, 11, 12, 13, 14, 15, 16, EOS_ID],
    word_ids=[None, 0, 0, 1, 2, 3, 3, 3, None],
    words=WORDS,
)
CUT = TextRow(  # truncated to 6 tokens: Ljubljana is cut off
    ids=[BOS_ID, 10, 11, 12, 13, EOS_ID], word_ids=[None, 0, 0, 1, 2, None], words=WORDS
)
FIT = TargetFit(classes=["O", "B-LOC", "B-PER"])


def test_fit_text_learns_the_tags_with_o_first():
    values = ['["B-PER", "O"]', ["O", "B-LOC", "I-LOC"], "B-PER I-PER O", None, float("nan")]
    fit = KINDS["token"].fit_text(NER, values)
    assert fit.classes == ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    task = KINDS["token"].resolve(Task("ner", "token"), fit)
    assert task.num_classes == 5 and task.out_features == 5
    with pytest.raises(DataError, match=r"\['NN', 'VB'\] are not BIO tags.*scheme: none"):
        NER.kind_spec.fit_text(Task("ner", "token"), ["NN VB"])
    pos = Task("pos", "token", kind_params={"scheme": "none"})
    assert pos.kind_spec.fit_text(pos, ["NN VB", "DT NN"]).classes == ["DT", "NN", "VB"]
    with pytest.raises(DataError, match="at least 2 tags"):
        pos.kind_spec.fit_text(pos, ["O O", None])
    with pytest.raises(DataError, match=r"training row 1: .*not a JSON list"):
        pos.kind_spec.fit_text(pos, ["NN", "[NN, VB"])
    with pytest.raises(DataError, match="num_classes is 3 but the training rows hold 2 tags"):
        Task("pos", "token", num_classes=3, kind_params={"scheme": "none"}).kind_spec.fit_text(
            Task("pos", "token", num_classes=3, kind_params={"scheme": "none"}), ["NN VB"]
        )


@pytest.mark.parametrize(
    "cell",
    [
        "B-PER O O B-LOC",
        json.dumps(["B-PER", "O", "O", "B-LOC"]),
        ["B-PER", "O", "O", "B-LOC"],
        np.array(["B-PER", "O", "O", "B-LOC"]),
    ],
)
def test_text_target_puts_each_tag_at_its_words_first_sub_token(cell):
    target = NER.kind_spec.text_target(NER, cell, ROW, FIT)
    assert target.dtype == torch.long
    assert target.tolist() == [I, 2, I, 0, 0, 1, I, I, I]


def test_text_target_of_a_truncated_row_and_bad_cells():
    cut = NER.kind_spec.text_target(NER, "B-PER O O B-LOC", CUT, FIT)
    assert cut.tolist() == [I, 2, I, 0, 0, I]  # Ljubljana has no token: no target
    with pytest.raises(ValueError, match="3 tags for 4 words"):
        NER.kind_spec.text_target(NER, "B-PER O O", ROW, FIT)
    with pytest.raises(ValueError, match="tag 'B-MISC' is not among the training rows' tags"):
        NER.kind_spec.text_target(NER, "B-PER O O B-MISC", ROW, FIT)
    with pytest.raises(ValueError, match="is not a list of tags"):
        NER.kind_spec.text_target(NER, 7, ROW, FIT)


def test_decode_row_reads_each_words_first_sub_token():
    logits = torch.zeros(9, 3)
    for position, tag in [(1, 2), (2, 1), (3, 0), (4, 0), (5, 1), (6, 2)]:
        logits[position, tag] = 5.0  # later sub-tokens (2, 6) say otherwise: ignored
    assert NER.kind_spec.decode_row(NER, logits, ROW, FIT) == ["B-PER", "O", "O", "B-LOC"]
    padded = torch.cat([logits[:6], torch.zeros(3, 3)])  # the cut row in a longer batch
    assert NER.kind_spec.decode_row(NER, padded, CUT, FIT) == ["B-PER", "O", "O", None]
    pos = Task("pos", "token", kind_params={"scheme": "none"})
    tags = TargetFit(classes=["NN", "VB", "DT"])
    assert pos.kind_spec.decode_row(pos, logits[:6], CUT, tags) == ["DT", "NN", "NN", None]


def test_rows_of_different_lengths_pad_with_ignore_and_missing_rows_are_ignore():
    kind = KINDS["token"]
    rows = [torch.tensor([I, 2, 0, I]), torch.tensor([I, 1, I])]
    assert kind.pad_rows(NER, rows).tolist() == [[I, 2, 0, I], [I, 1, I, I]]
    missing = kind.missing_target(NER, torch.zeros(5, dtype=torch.long))
    assert missing.tolist() == [I] * 5 and missing.dtype == torch.long


# --- sequence tasks -------------------------------------------------------------------------


def test_sequence_binds_the_variant_of_its_output():
    unbound = KINDS["sequence"]
    assert isinstance(unbound, SequenceKind)
    assert set(unbound.losses) == {"cross_entropy", "gce", "sce", "mse", "l1", "huber"}
    assert set(METRICS["sequence"]) == {"macro_f1", "accuracy", "rmse", "mae", "r2"}
    label = Task("intent", "sequence", num_classes=3)
    assert isinstance(label.kind_spec, SequenceClassKind) and label.primary.name == "macro_f1"
    score = Task("score", "sequence", kind_params={"output": "value", "pool": "first"})
    assert isinstance(score.kind_spec, SequenceValueKind) and score.primary.name == "rmse"
    assert score.kind_spec.default_loss == "mse"
    with pytest.raises(ValueError, match=r"'mse' does not fit .*output: class.*output: value"):
        Task("intent", "sequence", loss="mse")
    with pytest.raises(ValueError, match=r"'gce' does not fit .*output: value.*output: class"):
        Task("score", "sequence", kind_params={"output": "value"}, loss="gce")
    with pytest.raises(ValueError, match="metric 'accuracy' is for sequence tasks with output"):
        Task("score", "sequence", kind_params={"output": "value"}, metrics=("accuracy",))
    with pytest.raises(ValueError, match="output must be 'class'"):
        Task("x", "sequence", kind_params={"output": "label"})
    with pytest.raises(ValueError, match="pool must be one of"):
        Task("x", "sequence", kind_params={"pool": "cls"})


@pytest.mark.parametrize("pool", ["mean", "max", "first"])
def test_padding_a_row_does_not_change_its_pooled_vector(pool):
    task = Task("intent", "sequence", num_classes=3, kind_params={"pool": pool})
    head = task.build_head(Features(4, sequence=True))
    pooling = head[0]
    z = _sequence(1, 3, 4, [3], seed=2)
    z[..., :-1] = -z[..., :-1].abs() - 1  # every feature negative: a padded 0 would be the max
    longer = torch.cat([z, torch.zeros(1, 5, 5)], dim=1)  # 5 more padded positions
    assert torch.allclose(pooling(z), pooling(longer))
    h = z[0, :, :-1]
    expected = {"mean": h.mean(dim=0), "max": h.amax(dim=0), "first": h[0]}[pool]
    assert torch.allclose(pooling(longer)[0], expected)


def test_sequence_heads_refuse_a_representation_that_is_not_a_sequence():
    task = Task("intent", "sequence", num_classes=3)
    for features in (16, Features(16), Features(16, stride=8, spatial=True)):
        with pytest.raises(ValueError, match=r"use a sequence encoder .*transformer.*audio"):
            task.build_head(features)


def _fit_head(task: Task, z: Tensor, y: Tensor, steps: int = 60) -> list[float]:
    """Train the task's head alone on fixed sequence features; the losses along the way."""
    torch.manual_seed(0)
    head = task.build_head(Features(z.shape[-1] - 1, sequence=True))
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = task.compute_loss(task.shape_output(head(z)), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


LENGTHS = [int(n) for n in torch.randint(2, 9, (64,), generator=torch.Generator().manual_seed(3))]


@pytest.mark.parametrize(
    ("task", "make_target"),
    [
        (
            Task("intent", "sequence", num_classes=2),
            lambda pooled: (pooled[:, 0] > 0).long(),
        ),
        (
            Task("score", "sequence", kind_params={"output": "value", "pool": "max"}),
            lambda pooled: pooled[:, 1] * 2,
        ),
        (Task("spam", "binary"), lambda pooled: (pooled[:, 2] > 0).float()),
        (Task("topic", "multiclass", num_classes=2), lambda pooled: (pooled[:, 0] > 0).long()),
        (Task("length", "regression"), lambda pooled: pooled[:, 1] - pooled[:, 0]),
    ],
    ids=["sequence-class", "sequence-value", "binary", "multiclass", "regression"],
)
def test_row_level_tasks_train_on_sequence_features(task, make_target):
    z = _sequence(64, 8, 6, LENGTHS, seed=4)
    from polytask.models.encoders import MaskedPool

    pooled = MaskedPool()(z) if task.kind_params is None else z[..., :-1].amax(dim=1)
    y = make_target(pooled)
    losses = _fit_head(task, z, y)
    assert losses[-1] < 0.6 * losses[0]


# --- end to end -----------------------------------------------------------------------------


class TinyTextEncoder(Encoder):
    """Token ids (N, L) → embeddings and one linear layer per position, with the padding mask
    (PAD_ID) joined as the last channel."""

    def __init__(self, vocab: int, length: int, channels: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, channels)
        self.mix = nn.Linear(channels, channels)
        self._declare((length,), Features(channels, sequence=True))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.mix(self.embed(x)))
        return join_mask(h, x != PAD_ID)


def _text_rows(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rows of 3..8 token ids in 4..19 padded to 8; tags: id % 4 at each real token (−100 at
    padding); topic: 1 when most of the row's ids are >= 12."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, 20, (n, 8), generator=g)
    lengths = torch.randint(3, 9, (n,), generator=g)
    real = torch.arange(8)[None, :] < lengths[:, None]
    x = torch.where(real, x, PAD_ID)
    tags = torch.where(real, x % 4, I)
    high = ((x >= 12) & real).sum(dim=1).float() / lengths
    return x, tags, (high > 0.5).long()


def test_a_text_model_with_a_token_and_a_sequence_task_trains_end_to_end():
    torch.manual_seed(0)
    tasks = [
        Task("tag", "token", num_classes=4, kind_params={"scheme": "none"}),
        Task("topic", "sequence", num_classes=2),
    ]
    model = MultiTaskModel(TinyTextEncoder(20, 8), tasks)
    x, tags, topic = _text_rows(384, seed=0)
    train = TaskData(x, {"tag": tags, "topic": topic})
    vx, vtags, vtopic = _text_rows(128, seed=1)
    val = TaskData(vx, {"tag": vtags, "topic": vtopic})
    config = TrainConfig(epochs=6, batch_size=32, lr=0.02, progress=False, device="cpu")
    Trainer(model, config=config).fit(train, val)
    got = evaluate(model, tasks, val, 64, torch.device("cpu"))
    assert got["tag"]["token_accuracy"] > 0.9  # chance: 1/4
    assert got["topic"]["accuracy"] > 0.7
    assert got["tag"]["loss"] < 0.5


def test_train_step_lowers_the_token_loss_of_a_padded_batch():
    torch.manual_seed(0)
    tasks = [Task("tag", "token", num_classes=4, kind_params={"scheme": "none"})]
    model = MultiTaskModel(TinyTextEncoder(20, 8), tasks)
    x, tags, _ = _text_rows(32, seed=2)
    tags[0] = I  # one row without tags
    batch = Batch(x, {"tag": tags})
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    balancer = EqualWeights()
    balancer.setup(["tag"])
    losses = [
        float(train_step(model, balancer, optimizer, batch, tasks).losses[0]) for _ in range(30)
    ]
    assert losses[-1] < 0.5 * losses[0]


def test_tags_in_pythons_list_form_say_how_to_write_them():
    """Found by review: tags written by pandas' to_csv of Python lists ("['B-PER', 'O']") were
    refused as 'not a JSON list (Expecting value)', with no word of the fix."""
    from polytask.tasks._kinds._token import tag_list

    assert tag_list('["B-PER", "O"]') == tag_list("B-PER O") == ["B-PER", "O"]
    with pytest.raises(ValueError, match=r"not a JSON list .*json\.dumps\(tags\).*separated by"):
        tag_list("['B-PER', 'O']")
