"""The seq2seq kind: greedy and beam-search decoding (against each other and a hand-made
distribution), the teacher-forced loss against a hand computation, causal masking, missing
rows, targets from text, metrics through `evaluate`, and a tiny model that learns to copy."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polytask import Task, TaskData, TrainConfig, Trainer, make_balancer
from polytask.models import MultiTaskModel, TeacherForced
from polytask.models._base import MultiTaskNet
from polytask.models.encoders import Encoder, Features, join_mask
from polytask.tasks import KINDS
from polytask.tasks._kinds._base import BOS_ID, EOS_ID, PAD_ID, TargetFit, TextRow
from polytask.tasks._kinds._seq2seq_decoder import (
    Seq2SeqHead,
    beam_search,
    decoder_input,
    greedy_decode,
)
from polytask.tasks._metrics import Undefined
from polytask.train._evaluate import evaluate

KIND = KINDS["seq2seq"]
M = -100


def seq2seq(num_classes=12, **params):
    return Task("out", "seq2seq", num_classes=num_classes, kind_params=params or None)


def memory_batch(rows=4, length=6, channels=16, seed=0):
    """A random sequence representation (rows, length, channels + 1), rows padded to lengths
    length, length - 2, ..."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, length, channels, generator=g)
    lengths = torch.tensor([max(length - 2 * i, 1) for i in range(rows)])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return join_mask(h, mask)


def head_for(task, channels=16, seed=0):
    torch.manual_seed(seed)
    head = task.build_head(Features(channels, sequence=True))
    assert isinstance(head, Seq2SeqHead)
    return head.eval()


def step_of(head, z, beam=1):
    memory, pad = head.memory(z)
    memory, pad = memory.repeat_interleave(beam, 0), pad.repeat_interleave(beam, 0)
    return lambda prefix: head.logits(prefix, memory, pad)[:, -1]


def sequence_scores(head, z, ids, length_penalty=1.0):
    """Each row's length-normalised log-probability of decoded `ids` (PAD after EOS), by
    teacher forcing the head on them (PAD and BOS ruled out, as in decoding)."""
    memory, pad = head.memory(z)
    logits = head.logits(decoder_input(ids), memory, pad).clone()
    logits[..., [PAD_ID, BOS_ID]] = float("-inf")
    log_p = F.log_softmax(logits, -1).gather(-1, ids.clamp(min=0)[..., None])[..., 0]
    real = ids != PAD_ID
    return torch.where(real, log_p, 0.0).sum(1) / real.sum(1).float() ** length_penalty


# --- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_greedy_equals_beam_search_of_width_one(seed):
    # a small vocabulary and untied weights: a random head ends some rows early, not others
    task = seq2seq(num_classes=8, max_length=12, tie_embeddings=False)
    head = head_for(task, seed=seed)
    z = memory_batch(rows=6, seed=seed)
    with torch.no_grad():
        greedy = greedy_decode(step_of(head, z), 6, 12, z.device)
        beam = beam_search(step_of(head, z), 6, 1, 12, 1.0, z.device)
    assert torch.equal(greedy, beam)
    ended = (greedy == EOS_ID).any(1)
    assert ended.any()  # some rows stop early (PAD after EOS) ...
    for row, done in zip(greedy.tolist(), ended.tolist(), strict=True):
        if done:
            eos = row.index(EOS_ID)
            assert all(i == PAD_ID for i in row[eos + 1 :]) and PAD_ID not in row[:eos]


@pytest.mark.parametrize("beam", [2, 4])
@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_beam_search_scores_at_least_as_high_as_greedy(beam, penalty):
    task = seq2seq(
        num_classes=8, max_length=10, beam=beam, length_penalty=penalty, tie_embeddings=False
    )
    better = 0
    for seed in (1, 2, 3):
        head = head_for(task, seed=seed)
        z = memory_batch(rows=6, seed=seed)
        with torch.no_grad():
            greedy = greedy_decode(step_of(head, z), 6, 10, z.device)
            found = head.decode(*head.memory(z))
            g = sequence_scores(head, z, greedy, penalty)
            b = sequence_scores(head, z, found, penalty)
        assert (b >= g - 1e-5).all(), (b, g)
        better += int((b > g + 1e-4).sum())
    assert better > 0  # beam search finds better sequences than greedy on some rows


def markov_step(table):
    """A step function whose next-token distribution depends on the last token only."""
    probs = torch.tensor(table)

    def step(prefix):
        return torch.log(probs[prefix[:, -1]].clamp(min=1e-12))

    return step


# vocabulary: PAD 0, BOS 1, EOS 2, UNK 3, A 4, B 5
A, B = 4, 5
TABLE = [
    [0, 0, 1.0, 0, 0, 0],  # after PAD (unused)
    [0, 0, 0.1, 0, 0.5, 0.4],  # after BOS: A is the likeliest first token
    [0, 0, 1.0, 0, 0, 0],  # after EOS (unused)
    [0, 0, 1.0, 0, 0, 0],
    [0, 0, 0.34, 0, 0.33, 0.33],  # after A: anything
    [0, 0, 0.99, 0, 0.005, 0.005],  # after B: EOS, surely
]


def test_beam_search_finds_the_better_sequence_that_greedy_misses():
    step = markov_step(TABLE)
    greedy = greedy_decode(step, 1, 5, torch.device("cpu"))
    # greedy: A EOS, p = 0.5 · 0.34; beam: B EOS, p = 0.4 · 0.99
    assert greedy.tolist() == [[A, EOS_ID]]
    for penalty in (0.0, 1.0):
        found = beam_search(step, 1, 2, 5, penalty, torch.device("cpu"))
        assert found.tolist() == [[B, EOS_ID]]


def test_the_length_penalty_chooses_between_a_short_and_a_long_sequence():
    table = [row[:] for row in TABLE]
    table[BOS_ID] = [0, 0, 0.4, 0, 0.35, 0.25]  # EOS alone: p 0.4
    table[A] = [0, 0, 0.9, 0, 0.05, 0.05]  # A EOS: p 0.315, per token 0.56
    step = markov_step(table)
    cpu = torch.device("cpu")
    assert beam_search(step, 1, 3, 5, 0.0, cpu).tolist() == [[EOS_ID]]  # log p: -0.92 > -1.16
    assert beam_search(step, 1, 3, 5, 1.0, cpu).tolist() == [[A, EOS_ID]]  # -0.58 > -0.92


def test_decoding_stops_at_max_length_without_eos():
    table = [row[:] for row in TABLE]
    table[BOS_ID] = table[A] = [0, 0, 0.01, 0, 0.99, 0]  # A forever
    step = markov_step(table)
    cpu = torch.device("cpu")
    assert greedy_decode(step, 2, 4, cpu).tolist() == [[A] * 4] * 2
    assert beam_search(step, 2, 3, 4, 1.0, cpu).tolist() == [[A] * 4] * 2


# --- the head and the loss -----------------------------------------------------------------


TARGET = torch.tensor([[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID], [M, M, M, M]])


def test_teacher_forced_logits_and_loss_by_hand():
    task = seq2seq(dropout=0.0)
    head = head_for(task).train()
    z = memory_batch(rows=3)
    head.teacher = TARGET
    out = head(z)
    assert out.shape == (3, 4, 13)
    # the decoder reads [BOS] + target[:-1], -100 as PAD
    inputs = torch.tensor([[BOS_ID, 5, 6, 7], [BOS_ID, 8, EOS_ID, PAD_ID], [BOS_ID, 0, 0, 0]])
    assert torch.equal(decoder_input(TARGET), inputs)
    memory, pad = head.memory(z)
    x = head.embed(inputs) + head.positions.weight[:4]
    causal = torch.triu(torch.full((4, 4), float("-inf")), 1)
    y = head.decoder(x, memory, tgt_mask=causal, memory_key_padding_mask=pad)
    logits = head.out(head.norm(y))
    torch.testing.assert_close(out[..., :12], logits)
    assert torch.equal(out[..., 12], logits.argmax(-1).float())
    # the mean cross-entropy over the 6 target tokens (EOS included, PAD and -100 not)
    scored = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    by_hand = -sum(F.log_softmax(logits[r, t], -1)[TARGET[r, t]] for r, t in scored) / 6
    torch.testing.assert_close(task.compute_loss(out, TARGET), by_hand)
    assert KIND.label_count(TARGET) == 6
    assert KIND.label_mask(TARGET).tolist() == [True, True, False]


def test_label_smoothing_is_the_torch_one_over_target_tokens():
    task = Task("out", "seq2seq", num_classes=12, label_smoothing=0.1)
    out = torch.randn(3, 5, 13)
    flat = TARGET.masked_fill(TARGET == PAD_ID, M).reshape(-1)
    expected = F.cross_entropy(out[:, :4, :12].reshape(-1, 12), flat, label_smoothing=0.1)
    torch.testing.assert_close(task.compute_loss(out, TARGET), expected)


def test_padded_positions_and_missing_rows_do_not_change_the_loss():
    task = seq2seq()
    out = torch.randn(3, 4, 13, requires_grad=True)
    loss = task.compute_loss(out, TARGET)
    loss.backward()
    grad = out.grad
    assert grad[1, 2:].abs().sum() == 0 and grad[2].abs().sum() == 0  # PAD, missing row
    assert grad[0].abs().sum() > 0 and grad[1, :2].abs().sum() > 0
    assert grad[..., 12].abs().sum() == 0  # the decoded-id channel is no logit
    other = out.detach().clone()
    other[1, 2:] = torch.randn(2, 13) * 10
    other[2] = torch.randn(4, 13) * 10
    torch.testing.assert_close(task.compute_loss(other, TARGET), loss.detach())
    # the PAD positions read as -100 (or the missing row left out) give the same loss
    ignored = TARGET.masked_fill(TARGET == PAD_ID, M)
    torch.testing.assert_close(task.compute_loss(out, ignored), loss)
    torch.testing.assert_close(task.compute_loss(out[:2], TARGET[:2]), loss)


def test_a_batch_without_labels_gives_zero_still_in_the_graph():
    out = torch.randn(2, 3, 13, requires_grad=True)
    loss = seq2seq().compute_loss(out, torch.full((2, 3), M))
    assert float(loss.detach()) == 0.0 and loss.requires_grad


@pytest.mark.parametrize("t", [0, 1, 2])
def test_causal_masking_logits_at_t_ignore_later_target_tokens(t):
    head = head_for(seq2seq(dropout=0.0)).train()
    z = memory_batch(rows=2)
    first = torch.tensor([[5, 6, 7, 8, 9], [9, 8, 7, 6, 5]])
    second = first.clone()
    second[:, t + 1 :] = torch.tensor([10, 11, 4, 5][: 4 - t])
    head.teacher = first
    a = head(z)[..., :12]
    head.teacher = second
    b = head(z)[..., :12]
    # logits at positions <= t + 1 read decoder inputs <= t + 1 = [BOS] + target[:t + 1]
    torch.testing.assert_close(a[:, : t + 2], b[:, : t + 2])
    assert not torch.allclose(a[:, t + 2 :], b[:, t + 2 :])


def test_eval_mode_gives_teacher_forced_logits_and_a_decode():
    task = seq2seq(max_length=8, dropout=0.0)
    head = head_for(task)
    z = memory_batch(rows=3)
    with torch.no_grad():
        head.teacher = TARGET
        out = head(z)
        decoded = head.decode(*head.memory(z))
        head.train()
        forced = head(z)
        head.eval()
    length = max(4, decoded.shape[1])
    assert out.shape == (3, length, 13)
    torch.testing.assert_close(out[:, :4, :12], forced[..., :12], atol=1e-5, rtol=1e-5)
    assert out[:, 4:, :12].abs().sum() == 0  # no logits beyond the target
    assert torch.equal(KIND.predict(out)[:, : decoded.shape[1]], decoded)
    head.teacher = None
    with torch.no_grad():
        free = head(z)
    assert free.shape == (3, 8, 13) and free[..., :12].abs().sum() == 0
    assert torch.equal(KIND.predict(free)[:, : decoded.shape[1]], decoded)


def test_a_row_without_real_input_positions_still_decodes():
    head = head_for(seq2seq(max_length=5))
    z = join_mask(torch.randn(2, 3, 16), torch.tensor([[True, True, False], [False] * 3]))
    with torch.no_grad():
        out = head(z)
    assert torch.isfinite(out).all()


def test_targets_longer_than_max_length_are_refused():
    head = head_for(seq2seq(max_length=3)).train()
    head.teacher = TARGET
    with pytest.raises(ValueError, match=r"targets of 4 tokens.*max_length = 3"):
        head(memory_batch(rows=3))


def test_a_wrong_output_shape_is_refused_naming_both():
    task = seq2seq()
    for bad in (torch.zeros(3, 4, 12), torch.zeros(3, 3, 13), torch.zeros(2, 4, 13)):
        with pytest.raises(ValueError, match=r"outputs of shape .* for targets of shape \(3, 4\)"):
            task.compute_loss(bad, TARGET)


def test_task_fields_are_checked():
    with pytest.raises(ValueError, match="beam must be an integer >= 1"):
        seq2seq(beam=0)
    with pytest.raises(ValueError, match="length_penalty"):
        seq2seq(length_penalty=-1)
    with pytest.raises(ValueError, match="no parameter"):
        seq2seq(beams=2)
    with pytest.raises(ValueError, match="the 4 special tokens and more"):
        seq2seq(num_classes=4)
    with pytest.raises(ValueError, match="must be a multiple of kind_params heads"):
        seq2seq(heads=3).build_head(Features(16, sequence=True))
    with pytest.raises(ValueError, match="sequence encoder"):
        seq2seq().build_head(Features(16))
    with pytest.raises(ValueError, match="tokenizer"):
        Task("out", "seq2seq").build_head(Features(16, sequence=True))
    # another width projects the memory; untied output weights are the head's own
    head = seq2seq(width=8, heads=2, tie_embeddings=False).build_head(Features(16, sequence=True))
    assert head.out.weight is not head.embed.weight and head.embed.weight.shape == (12, 8)
    head.teacher = TARGET
    assert head(memory_batch(rows=3)).shape == (3, 4, 13)
    assert seq2seq().build_head(Features(16, sequence=True)).out.weight is not None


def test_pad_rows_pads_labelled_rows_with_pad_and_missing_ones_with_minus_100():
    task = seq2seq()
    rows = [torch.tensor([5, EOS_ID]), KIND.missing_target(task, torch.tensor([1])),
            torch.tensor([6, 7, 8, EOS_ID])]  # fmt: skip
    assert KIND.pad_rows(task, rows).tolist() == [
        [5, EOS_ID, PAD_ID, PAD_ID],
        [M, M, M, M],
        [6, 7, 8, EOS_ID],
    ]


# --- text -----------------------------------------------------------------------------------

WORDS = ["the", "cat", "dog", "sat", "ran", "on", "mat", "a", "big", "small"]


def word_tokenizer():
    """A WordLevel tokenizer of WORDS, the four specials first, splitting on whitespace."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {s: i for i, s in enumerate(["[PAD]", "[BOS]", "[EOS]", "[UNK]", *WORDS])}
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens(["[PAD]", "[BOS]", "[EOS]", "[UNK]"])
    return tok


def test_text_targets_are_the_tokenizers_ids_then_eos_cut_to_max_length():
    tok = word_tokenizer()
    row = TextRow([], [], [], tok)
    task = seq2seq(num_classes=14, max_length=4)
    fit = TargetFit(vocab=14, tokenizer=tok)
    assert KIND.text_target(task, "the cat sat", row, fit).tolist() == [4, 5, 7, EOS_ID]
    assert KIND.text_target(task, "the zebra", row, fit).tolist() == [4, 3, EOS_ID]
    cut = KIND.text_target(task, "the big cat sat on a mat", row, fit)
    assert cut.tolist() == [4, 12, 5, 7] and cut.dtype == torch.long  # no EOS: cut, counted
    whole = KIND.text_target(task, "a big dog", row, fit)
    assert whole.tolist() == [11, 12, 6, EOS_ID]
    problem = KIND.degenerate(task, KIND.pad_rows(task, [cut, whole, whole]), fit)
    assert problem is not None and problem.startswith(
        "1 of 3 labelled target texts do not fit in kind_params max_length 4 (tokens and EOS) "
        "and were cut to 4 tokens: the model cannot write their ends, and the metrics score "
        "the cut texts"
    )
    assert KIND.degenerate(task, KIND.pad_rows(task, [whole, whole]), fit) is None
    for bad, words in (("  ", "empty target text"), (None, "not a text")):
        with pytest.raises(ValueError, match=words):
            KIND.text_target(task, bad, row, fit)
    with pytest.raises(ValueError, match="tokenizer: give it text data"):
        KIND.text_target(task, "the cat", TextRow([], [], []), TargetFit())


def test_resolve_reads_num_classes_from_the_tokenizer():
    task = Task("out", "seq2seq")
    assert KIND.resolve(task, TargetFit(vocab=14)).num_classes == 14
    assert KIND.resolve(seq2seq(num_classes=14), TargetFit(vocab=14)).num_classes == 14
    with pytest.raises(ValueError, match="num_classes is 12 but the data's tokenizer has 14"):
        KIND.resolve(seq2seq(num_classes=12), TargetFit(vocab=14))
    with pytest.raises(ValueError, match="tokenizer: give it text data"):
        KIND.resolve(task, KIND.fit_text(task, ["a b"]))


def test_decode_row_and_decode_write_text_up_to_eos():
    tok = word_tokenizer()
    task = seq2seq(num_classes=14)
    out = torch.zeros(2, 5, 15)
    out[..., 14] = torch.tensor([[4, 5, 7, EOS_ID, 0], [10, 6, EOS_ID, 0, 0]]).float()
    fit = TargetFit(vocab=14, tokenizer=tok)
    assert KIND.decode_row(task, out[0], TextRow([], [], [], tok), fit) == "the cat sat"
    assert KIND.decode_row(task, out[1], TextRow([], [], []), fit) == "mat dog"
    prediction = KIND.prediction(out, None)
    assert KIND.decode(task, prediction, fit) == {"out": ["the cat sat", "mat dog"]}
    assert KIND.decode(task, prediction, TargetFit()) == {"out": [[4, 5, 7], [10, 6]]}


# --- metrics --------------------------------------------------------------------------------


class Echo(MultiTaskNet):
    """A stand-in model whose output decodes to its input ids (then EOS) and whose
    teacher-forced logits put each target token first (it reads its targets the way a
    TeacherForced head does, under `teaching`)."""

    def __init__(self, task, vocab):
        super().__init__()
        self._init_tasks([task])
        self.vocab = vocab
        self.slot = TeacherForced(task.name)

    def forward(self, x):
        ids = torch.cat([x, torch.full((x.shape[0], 1), EOS_ID)], 1)
        target = self.slot.teacher
        length = max(ids.shape[1], target.shape[1])
        out = torch.zeros(x.shape[0], length, self.vocab + 1)
        out[:, : target.shape[1], : self.vocab] = F.one_hot(target.clamp(min=0), self.vocab) * 20.0
        out[:, : ids.shape[1], self.vocab] = ids.float()
        return {"out": out}


def encode(tok, texts):
    return [torch.tensor(tok.encode(t, add_special_tokens=False).ids) for t in texts]


def _chrf_by_hand(hyps: list[str], refs: list[str], order: int = 6, beta: float = 2.0) -> float:
    """Corpus chrF (Popović 2015; no word n-grams, unlike chrF++): character n-grams of the
    texts without spaces, n = 1..6, matches summed over the corpus; the mean precision and
    recall over n, then their F-beta (sacrebleu's figure can differ in the fifth digit)."""
    from collections import Counter

    precisions, recalls = [], []
    for n in range(1, order + 1):
        match = hyp_total = ref_total = 0
        for hyp, ref in zip(hyps, refs, strict=True):
            h, r = hyp.replace(" ", ""), ref.replace(" ", "")
            hc = Counter(h[i : i + n] for i in range(len(h) - n + 1))
            rc = Counter(r[i : i + n] for i in range(len(r) - n + 1))
            match += sum((hc & rc).values())
            hyp_total, ref_total = hyp_total + sum(hc.values()), ref_total + sum(rc.values())
        precisions.append(match / hyp_total)
        recalls.append(match / ref_total)
    p, r = sum(precisions) / order, sum(recalls) / order
    return (1 + beta**2) * p * r / (beta**2 * p + r)


def test_evaluate_scores_bleu_and_chrf_on_decoded_text_with_the_tokenizer():
    from torchmetrics.text import CHRFScore, SacreBLEUScore

    tok = word_tokenizer()
    task = seq2seq(num_classes=14)
    hyps = ["the cat sat on the mat", "a big dog ran", "the small cat ran on a mat"]
    refs = ["the cat sat on the mat", "a small dog ran", "the small cat sat on a mat"]
    x = KIND.pad_rows(task, encode(tok, hyps))
    rows = [torch.cat([r, torch.tensor([EOS_ID])]) for r in encode(tok, refs)]
    targets = KIND.pad_rows(task, [*rows, torch.full((3,), M)])  # a 4th row, unlabelled
    data = TaskData(torch.cat([x, x[:1]]), {"out": targets})
    object.__setattr__(data, "target_fits", {"out": TargetFit(vocab=14, tokenizer=tok)})
    model, cpu = Echo(task, 14), torch.device("cpu")
    metrics = evaluate(model, [task], data, batch_size=2, device=cpu)["out"]
    bleu = SacreBLEUScore(tokenize="13a")(hyps, [[r] for r in refs])
    chrf = _chrf_by_hand(hyps, refs)
    assert 0 < float(bleu) < 1 and 0 < chrf < 1
    assert metrics["bleu"] == pytest.approx(float(bleu))
    assert metrics["chrf"] == pytest.approx(chrf, rel=1e-5)  # chrF as documented, not chrF++
    plus = float(CHRFScore()(hyps, [[r] for r in refs]))  # torchmetrics' default: word bigrams
    assert abs(plus - chrf) > 1e-3
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["token_accuracy"] == 1.0
    assert metrics["loss"] < 1e-3
    # without the tokenizer: BLEU on the ids as words, chrF undefined (and why)
    object.__setattr__(data, "target_fits", {})
    bare = evaluate(model, [task], data, batch_size=2, device=cpu)["out"]
    assert isinstance(bare["chrf"], Undefined) and "tokenizer" in bare["chrf"].reason
    as_words = [[" ".join(map(str, r.tolist()))] for r in encode(tok, hyps + refs)]
    ids_bleu = SacreBLEUScore(tokenize="none")([w[0] for w in as_words[:3]], as_words[3:])
    assert bare["bleu"] == pytest.approx(float(ids_bleu))


def test_metrics_without_logits_leave_token_accuracy_undefined_and_skip_missing_rows():
    task = seq2seq()
    out = torch.zeros(3, 4, 13)
    out[..., 12] = torch.tensor([[5, 6, 7, EOS_ID], [8, 9, EOS_ID, 0], [5, EOS_ID, 0, 0]]).float()
    acc = KIND.accumulator(task, None)
    acc.update(out, TARGET)
    got = acc.compute()
    assert got["exact_match"] == 0.5
    assert isinstance(got["token_accuracy"], Undefined)
    empty = KIND.accumulator(task, None).compute()
    assert all(isinstance(v, Undefined) for v in empty.values())
    # the same through Task.evaluate on arrays (no tokenizer, no logits)
    arrays = task.evaluate(KIND.prediction(out, None), KIND.truth(TARGET, None))
    assert arrays["exact_match"] == 0.5 and arrays["bleu"] == pytest.approx(got["bleu"])


# --- end to end -----------------------------------------------------------------------------


class TokenEncoder(Encoder):
    """A minimal sequence encoder: token embedding + learned positions, the mask as a channel."""

    def __init__(self, vocab, length, channels):
        super().__init__()
        self.embed = nn.Embedding(vocab, channels)
        self.positions = nn.Parameter(torch.randn(length, channels) * 0.1)
        self._declare((length,), Features(channels, sequence=True))

    def forward(self, x):
        mask = x != PAD_ID
        return join_mask(self.embed(x) + self.positions[: x.shape[1]], mask)


def copy_data(n, seed, vocab=10, reverse=False):
    """Rows of 2-5 random tokens (4..vocab-1), padded; the target copies (or reverses) them."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 6, (n,), generator=g)
    x = torch.full((n, 5), PAD_ID)
    target = torch.full((n, 6), PAD_ID)
    for i, k in enumerate(lengths.tolist()):
        tokens = torch.randint(4, vocab, (k,), generator=g)
        x[i, :k] = tokens
        target[i, :k] = tokens.flip(0) if reverse else tokens
        target[i, k] = EOS_ID
    return TaskData(x, {"out": target})


def copier(reverse=False, epochs=4, rows=512, seed=0, **params):
    """A trained copying (or reversing) model, and its metrics on held-out rows before."""
    torch.manual_seed(seed)
    kind_params = {"max_length": 8, "layers": 1, "heads": 2, "dropout": 0.0,
                   "tie_embeddings": False, **params}  # fmt: skip
    task = Task("out", "seq2seq", num_classes=10, kind_params=kind_params)
    model = MultiTaskModel(TokenEncoder(10, 5, 32), [task])
    config = TrainConfig(epochs=epochs, batch_size=32, lr=1e-2, patience=None, progress=False,
                         seed=seed, restore_best=False)  # fmt: skip
    trainer = Trainer(model, make_balancer("ew"), config)
    before = trainer.evaluate(copy_data(128, 1, reverse=reverse))["out"]
    trainer.fit(copy_data(rows, 0, reverse=reverse))
    return trainer, before


def test_a_tiny_model_learns_to_copy_short_sequences():
    trainer, before = copier()
    held_out = copy_data(128, 1)
    after = trainer.evaluate(held_out)["out"]
    # measured over seeds 0-2: loss 2.2-2.5 → 0.02-0.14, exact match 0.82-0.98
    assert after["loss"] < before["loss"] / 5, (before, after)
    assert after["token_accuracy"] > 0.9 and after["exact_match"] > 0.7, after
    # prediction (no targets): the same greedy decode, max_length ids per row
    decoded = trainer.predict(held_out.x)["out"]
    assert decoded.shape == (128, 8)
    refs = held_out.targets["out"]
    same = [decoded[i, : len(r)].tolist() == r.tolist() for i, r in enumerate(refs)]
    # the references' PAD and the decoded PAD after EOS both read 0: compare whole rows
    assert sum(same) / 128 == pytest.approx(after["exact_match"])


@pytest.mark.slow
def test_a_tiny_model_learns_to_reverse_short_sequences_and_beam_search_reads_it():
    # reversing needs the input's length, which two decoder layers learn to read from the
    # memory's padding (measured, greedy: exact match 1.0; one layer: 0.76-0.92)
    trainer, before = copier(reverse=True, epochs=24, rows=1024, layers=2, beam=3)
    after = trainer.evaluate(copy_data(256, 1, reverse=True))["out"]
    assert after["exact_match"] > 0.9 and after["bleu"] > 0.9, (before, after)


def test_training_without_teaching_warns_once():
    """A custom loop that forgets `polytask.teaching` would train on zero logits in silence."""
    import warnings as _warnings

    from polytask.models.encoders import Features, join_mask

    task = Task("t", "seq2seq", num_classes=12, kind_params={"max_length": 6, "layers": 1})
    head = task.build_head(Features(16, sequence=True))
    head.train()
    z = join_mask(torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool))
    with pytest.warns(UserWarning, match="polytask.teaching"):
        head(z)
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        head(z)  # once only


def test_unknown_tokens_are_shown_and_count_as_misses_never_as_matches():
    from polytask.tasks._kinds._seq2seq import SequenceScores, ids_to_text

    tok = word_tokenizer()
    task = seq2seq(num_classes=14, max_length=8)
    fit = TargetFit(vocab=14, tokenizer=tok)
    row = TextRow([], [], [], tok)
    ref = KIND.text_target(task, "the zebra sat", row, fit)  # zebra: [UNK]
    assert ref.tolist() == [4, 3, 7, EOS_ID]
    assert ids_to_text([4, 3, 7], tok) == "the \ufffd sat"  # was "the sat": the word dropped
    assert KIND.decode(task, np.array([[4, 3, 7, EOS_ID]]), fit) == {"out": ["the \ufffd sat"]}
    problem = KIND.degenerate(task, KIND.pad_rows(task, [ref]), fit)
    assert problem is not None and problem.startswith(
        "1 of 1 labelled target texts hold tokens the tokenizer does not know ([UNK])"
    )
    long = KIND.text_target(task, "the big zebra sat on a mat", row, fit)
    scores = SequenceScores(tok)
    logits = torch.nn.functional.one_hot(long, 14).float()[None] * 5  # argmax = the target
    scores.add(long[None], long[None], logits)  # the model writes [UNK] where the ref has it
    values = scores.values(["bleu", "chrf", "exact_match", "token_accuracy"])
    assert values["exact_match"] == 0.0  # [UNK] for [UNK] is not the word
    assert values["token_accuracy"] == pytest.approx(7 / 8)  # all but [UNK] (EOS counted)
    assert values["chrf"] < 0.95 and values["bleu"] < 0.7  # were 1.0: the word dropped
    known = KIND.text_target(task, "the big cat sat on a mat", row, fit)
    exact = SequenceScores(tok)
    exact.add(known[None], known[None], torch.nn.functional.one_hot(known, 14).float()[None])
    assert exact.values(["bleu", "exact_match"]) == {"bleu": 1.0, "exact_match": 1.0}


def test_a_distributed_evaluation_scores_seq2seq_as_one_process_does():
    # each process evaluates its share teacher-forced, as one process does (it ran the decoder
    # without its targets: loss log V, no token accuracy). Two processes stood in for by data of
    # two equal halves: rank 0's gathered share, twice, is every row.
    from dataclasses import dataclass

    from polytask.train._distributed import Processes

    @dataclass(frozen=True)
    class Twice(Processes):
        def gather(self, value):
            return [value, value]

    trainer, _ = copier(epochs=4)
    half = copy_data(96, 1)
    both = TaskData(half.x.repeat(2, 1), {"out": half.targets["out"].repeat(2, 1)})
    args = (trainer.model, trainer.tasks, both, 32, torch.device("cpu"))
    alone, shared = evaluate(*args)["out"], evaluate(*args, Twice(0, 2, 0))["out"]
    assert set(shared) == set(alone) and "token_accuracy" in alone
    for name, value in alone.items():
        assert float(shared[name]) == pytest.approx(float(value), rel=1e-6, nan_ok=True), name
    assert float(alone["loss"]) < 0.5 * math.log(10)  # learnt: far from the uniform log V


def test_chrf_counts_the_reference_of_a_row_that_matches_nothing():
    """Hand-computed chrF (orders 1-6, β = 2, sacreBLEU's counting): an empty decode lowers
    the score (torchmetrics' CHRFScore dropped that row's reference: 1.0 here)."""
    from polytask.tasks._kinds._seq2seq import CharF

    def chrf(hyps: list[str], refs: list[str]) -> float:
        scores = CharF()
        scores.update(hyps, refs)
        return scores.compute()

    assert chrf(["a b"], ["ab"]) == pytest.approx(1.0)  # whitespace is removed
    # orders 1, 2: P = 1, R = 1/2 each (orders 3+: no reference n-grams, left out)
    assert chrf(["ab", ""], ["ab", "cd"]) == pytest.approx(5 * 0.5 / (4 + 0.5))
    # order 1: P 2/3, R 1; order 2: P 1/2, R 1; the hypothesis' trigram is not counted
    p = (2 / 3 + 1 / 2) / 2
    assert chrf(["abc"], ["ab"]) == pytest.approx(5 * p / (4 * p + 1))
    assert chrf([""], ["ab"]) == 0.0
    # sacrebleu 2.x corpus_chrf of these rows: 30.727047
    refs = ["the cat sat on the mat .", "a long sentence that the model did not translate at all ."]
    assert chrf([refs[0], ""], refs) == pytest.approx(0.30727047, abs=1e-8)
