"""The `ctc` kind: its loss against CTC probabilities summed over alignments by hand, greedy and
prefix beam decoding (against an exhaustive search), CER / WER golden values, and the target
encoding (units, the unknown unit, padding, missing rows)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from polytask import Task
from polytask.models import Features
from polytask.tasks import KINDS, CTCKind, TargetFit, TextRow
from polytask.tasks._columns import DataError, DataWarning
from polytask.tasks._kinds._ctc import (
    TranscriptAccumulator,
    error_rates,
    greedy_decode,
    prefix_beam_search,
)
from polytask.tasks._metrics import Undefined

AUDIO_ROW = TextRow(ids=[], word_ids=[], words=[])


def _output(probs, frames=None) -> torch.Tensor:
    """A ctc head output (N, T, C + 1) whose softmax is `probs` (N, T, C), mask last."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    mask = torch.ones(p.shape[:2], dtype=torch.float64)
    if frames is not None:
        mask = (torch.arange(p.shape[1])[None] < torch.as_tensor(frames)[:, None]).double()
    return torch.cat([p.log(), mask.unsqueeze(-1)], dim=-1)


def _task(**params) -> Task:
    return Task("speech", "ctc", num_classes=3, kind_params=params or None)


# --- the loss, by hand ------------------------------------------------------------------------


def test_two_frames_one_unit_sums_the_three_alignments():
    """T = 2, classes {blank, a}, transcript "a": the alignments aa, a_, _a."""
    (b1, a1), (b2, a2) = (0.3, 0.7), (0.6, 0.4)
    p = a1 * a2 + a1 * b2 + b1 * a2
    task = Task("speech", "ctc", num_classes=2)
    loss = task.compute_loss(_output([[[b1, a1], [b2, a2]]]), torch.tensor([[1]]))
    assert loss.item() == pytest.approx(-math.log(p), rel=1e-9)


def test_a_repeated_unit_needs_a_blank_between_and_the_mean_is_per_unit_over_rows():
    """Row 0: "aa" over 3 frames has one alignment, a_a; its loss is divided by 2 units.
    Row 1: "a" over 2 real frames (the third is padding, whatever its logits). Row 2 is
    missing, row 3 an empty transcript: every frame blank, divided by 1, not 0."""
    frames = [[0.2, 0.8], [0.7, 0.3], [0.1, 0.9]]
    garbage = [0.01, 0.99]
    probs = [frames, [[0.3, 0.7], [0.6, 0.4], garbage], frames, frames]
    output = _output(probs, frames=[3, 2, 3, 3])
    target = torch.tensor([[1, 1], [1, 0], [-100, -100], [0, 0]])
    task = Task("speech", "ctc", num_classes=2)
    aa = -math.log(0.8 * 0.7 * 0.9) / 2
    a = -math.log(0.7 * 0.4 + 0.7 * 0.6 + 0.3 * 0.4)
    empty = -math.log(0.2 * 0.7 * 0.1)
    assert task.compute_loss(output, target).item() == pytest.approx((aa + a + empty) / 3)
    assert task.kind_spec.label_count(target) == 3
    assert task.mask(target).tolist() == [True, True, False, True]


def test_too_few_frames_gives_zero_loss_and_one_warning_per_task():
    task = Task("speech", "ctc", num_classes=2)
    output = _output([[[0.5, 0.5]], [[0.2, 0.8]]]).requires_grad_(True)
    target = torch.tensor([[1, 1], [1, 0]])  # "aa" needs 3 frames, it has 1
    with pytest.warns(
        DataWarning, match=r"'speech' \(ctc\): 1 of 2 labelled rows .* 1 frames for 3"
    ):
        loss = task.compute_loss(output, target)
    assert loss.item() == pytest.approx(-math.log(0.8) / 2)  # (0 + −log 0.8) / 2
    loss.backward()
    assert torch.isfinite(output.grad).all() and output.grad[0].abs().sum() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task.compute_loss(output, target)  # once per task
    with pytest.warns(DataWarning):
        Task("other", "ctc", num_classes=2).compute_loss(output, target)


def test_loss_has_no_labelled_row_and_refuses_a_wrong_head():
    task = _task()
    output = _output(torch.full((2, 4, 3), 1 / 3))
    zero = task.compute_loss(output.requires_grad_(True), torch.full((2, 1), -100))
    assert zero.item() == 0 and zero.requires_grad
    with pytest.raises(ValueError, match=r"shape \(2, 4, 3\) for targets of shape \(2, 2\); a ctc "
                       r"head gives \(N, frames, 4\)"):  # fmt: skip
        task.compute_loss(output[..., 1:], torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"unit id 3 but the task has 3 classes"):
        task.compute_loss(output, torch.tensor([[3], [1]]))


# --- decoding -------------------------------------------------------------------------------


def _one_hot_output(paths, classes=3, frames=None):
    """Peaked outputs that spell `paths` (lists of class ids per frame)."""
    length = max(map(len, paths))
    probs = torch.full((len(paths), length, classes), 0.01)
    for n, path in enumerate(paths):
        for t, c in enumerate(path):
            probs[n, t, c] = 1.0
    return _output(probs / probs.sum(-1, keepdim=True), frames)


def test_greedy_decoding_collapses_repeats_drops_blanks_and_reads_real_frames_only():
    a, b, blank = 1, 2, 0
    output = _one_hot_output([[a, a, blank, a, b, b], [b, a, a, b, a, a]], frames=[6, 3])
    assert greedy_decode(output).tolist() == [[a, a, b, 0, 0, 0], [b, a, 0, 0, 0, 0]]
    fit = TargetFit(classes=["a", "b", "\ufffd"])
    task = Task("speech", "ctc", num_classes=4)
    output4 = torch.cat([output[..., :3], output[..., :1] - 9, output[..., 3:]], -1)
    assert task.kind_spec.decode_row(task, output4[0], AUDIO_ROW, fit) == "aab"
    assert task.kind_spec.decode(task, task.kind_spec.prediction(output4, None), fit) == {
        "speech": ["aab", "ba"]
    }


def test_beam_search_sums_the_paths_that_best_path_decoding_misses():
    """Two frames of p(blank) = 0.6, p(a) = 0.4: the best path is blank blank (0.36), but
    "a" has p = 0.4·0.4 + 0.4·0.6 + 0.6·0.4 = 0.64."""
    output = _output([[[0.6, 0.4], [0.6, 0.4]]])
    assert greedy_decode(output).tolist() == [[0, 0]]
    beam = Task("speech", "ctc", num_classes=2, kind_params={"beam": 2}).kind_spec
    assert beam.predict(output).tolist() == [[1, 0]]
    assert KINDS["ctc"].predict(output).tolist() == [[0, 0]]  # unbound: greedy


def _labelling_probs(probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """p(labelling) for every labelling, by summing every alignment (C^T of them)."""
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(probs.shape[1]), repeat=probs.shape[0]):
        label = tuple(c for i, c in enumerate(path) if c and (i == 0 or path[i - 1] != c))
        out[label] = out.get(label, 0.0) + float(np.prod(probs[np.arange(len(path)), path]))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_a_wide_beam_finds_the_most_likely_labelling(seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(5, 3, generator=g, dtype=torch.float64), -1)
    exact = _labelling_probs(probs.numpy())
    found = tuple(prefix_beam_search(probs.log(), beam=64))
    assert exact[found] == pytest.approx(max(exact.values()), rel=1e-12)
    # the widest beam is exact; beam 1 may not be, but never finds an impossible labelling
    assert tuple(prefix_beam_search(probs.log(), beam=1)) in exact


# --- metrics --------------------------------------------------------------------------------


def test_cer_and_wer_golden_values():
    classes = ["a", "b", "c", "d", "e", " ", "\ufffd"]
    ids = {c: i + 1 for i, c in enumerate(classes)}

    def enc(text):
        return [ids[c] for c in text]

    ref, pred = [enc("abc"), enc("de")], [enc("abd"), enc("d")]
    # CER: one substitution + one deletion over 5 characters; WER: both words wrong
    assert error_rates(pred, ref, "char", classes) == {"cer": pytest.approx(0.4), "wer": 1.0}
    rates = error_rates([enc("ab cd")], [enc("ab c d")], "char", classes)
    assert rates["cer"] == pytest.approx(1 / 6)  # one space deleted
    assert rates["wer"] == pytest.approx(2 / 3)  # "cd" for "c d": 1 substitution, 1 deletion
    # without the classes only the rate over the task's own units is known
    rates = error_rates(pred, ref, "char", None)
    assert rates["cer"] == pytest.approx(0.4) and isinstance(rates["wer"], Undefined)
    words = ["cat", "sat", "the", "<unk>"]
    the_cat_sat, the_sat = [3, 1, 2], [3, 2]
    rates = error_rates([the_sat], [the_cat_sat], "word", words)
    assert rates["wer"] == pytest.approx(1 / 3)
    assert rates["cer"] == pytest.approx(4 / 11)  # "the sat" for "the cat sat": 4 deletions
    assert error_rates([the_sat], [the_cat_sat], "word", None)["wer"] == pytest.approx(1 / 3)
    assert isinstance(error_rates([[1]], [[]], "char", classes)["cer"], Undefined)


def test_error_rates_of_unseen_words_and_of_spaces_a_model_emits():
    words = ["door", "open", "red", "<unk>"]
    # "open red door" for "open <unk> door": the unseen word's characters are not kept, so
    # CER cannot be read (it was scored against the 5 characters of "<unk>": 0.33, jiwer 0.45)
    rates = error_rates([[2, 3, 1]], [[2, 4, 1]], "word", words)
    assert rates["wer"] == pytest.approx(1 / 3) and isinstance(rates["cer"], Undefined)
    assert "unseen in training" in rates["cer"].reason
    # spaces at either end or doubled are normalised away, as in the references (jiwer: 0)
    classes = ["a", "b", " ", "\ufffd"]
    assert error_rates([[3, 1, 2, 3, 3]], [[1, 2]], "char", classes) == {"cer": 0.0, "wer": 0.0}
    rates = error_rates([[1, 3, 3, 2]], [[1, 3, 2]], "char", classes)
    assert rates == {"cer": 0.0, "wer": 0.0}
    task = Task("speech", "ctc", kind_params={"unit": "word"})
    assert task.primary.name == "wer"  # CER is undefined where a reference holds an unseen word
    assert (
        Task("speech", "ctc", kind_params={"unit": "word"}, primary_metric="cer").primary.name
        == "cer"
    )
    assert task.kind_spec.decode(task, np.array([[2, 3, 0]]), TargetFit(classes=words)) == {
        "speech": ["open red"]
    }
    chars = Task("speech", "ctc")
    decoded = chars.kind_spec.decode(
        chars, np.array([[3, 1, 3, 3, 2, 3]]), TargetFit(classes=classes)
    )
    assert decoded == {"speech": ["a b"]}


def test_the_accumulator_scores_decoded_rows_of_labelled_rows_as_lower_is_better():
    task = _task()
    assert [(m.name, m.higher_is_better) for m in task.metric_objects()] == [
        ("cer", False), ("wer", False),
    ]  # fmt: skip
    assert task.primary.name == "cer"
    fit = TargetFit(classes=["a", "b"])
    acc = task.kind_spec.accumulator(task, None, fit)
    assert isinstance(acc, TranscriptAccumulator)
    output = _one_hot_output([[1, 0, 1, 2], [2, 2, 2, 2], [1, 1, 1, 1]])
    acc.update(output, torch.tensor([[1, 1, 2], [2, 1, 0], [-100, -100, -100]]))
    # "aab" for "aab", "b" for "ba": 1 error over 5 characters; words: 1 wrong of 2
    assert acc.compute() == {"cer": pytest.approx(0.2), "wer": pytest.approx(0.5)}
    plain = task.kind_spec.accumulator(task, None)  # no fit: CER over the unit ids
    plain.update(output, torch.tensor([[1, 1, 2], [2, 1, 0], [-100, -100, -100]]))
    assert plain.compute()["cer"] == pytest.approx(0.2)
    values = task.evaluate(
        task.kind_spec.prediction(output, None), np.array([[1, 1, 2], [2, 1, 0], [-100] * 3])
    )
    assert values["cer"] == pytest.approx(0.2)
    words = Task("speech", "ctc", num_classes=3, kind_params={"unit": "word"})
    values = words.evaluate(np.array([[1, 2, 0], [2, 0, 0]]), np.array([[1, 2, 1], [2, 0, 0]]))
    assert values["wer"] == pytest.approx(0.25) and isinstance(values["cer"], Undefined)


# --- targets --------------------------------------------------------------------------------


def test_units_are_learnt_from_training_transcripts_with_an_unknown_unit_last():
    task = Task("speech", "ctc")
    kind = task.kind_spec
    with pytest.warns(
        DataWarning, match=r"'speech': 1 of 3 labelled training transcripts are empty"
    ):
        fit = kind.fit_text(task, ["  Hi  there\t", None, float("nan"), "hi", " \t"])
    assert fit.classes == [" ", "H", "e", "h", "i", "r", "t", "\ufffd"]  # case kept
    resolved = kind.resolve(task, fit)
    assert resolved.num_classes == 9 and resolved.out_features == 9
    ids = kind.text_target(task, " Hi\n\nthe! ", AUDIO_ROW, fit)
    assert ids.tolist() == [2, 5, 1, 7, 4, 3, 8]  # "Hi the!": "!" is unknown
    assert kind.text_target(task, "", AUDIO_ROW, fit).tolist() == []
    with pytest.raises(
        ValueError,
        match=r"'speech': a ctc target is a transcript \(text\), got int 3: for a "
        r"number per file use kind regression",
    ):
        kind.text_target(task, 3, AUDIO_ROW, fit)
    with pytest.raises(DataError, match="no training transcript holds a char"):
        kind.fit_text(task, [None, "  "])
    with pytest.raises(ValueError, match=r"num_classes is 5 but .* = 9; remove num_classes"):
        kind.resolve(Task("speech", "ctc", num_classes=5), fit)


def test_word_units():
    task = Task("speech", "ctc", kind_params={"unit": "word"})
    fit = task.kind_spec.fit_text(task, ["the cat  sat", "The cat"])
    assert fit.classes == ["The", "cat", "sat", "the", "<unk>"]
    assert task.kind_spec.text_target(task, "the dog sat", AUDIO_ROW, fit).tolist() == [4, 5, 3]


def test_rows_pad_with_zeros_and_missing_rows_stay_missing():
    task = _task()
    kind = task.kind_spec
    missing = kind.missing_target(task, torch.zeros(0, dtype=torch.long))
    assert missing.tolist() == [-100]  # never empty: an empty row is an empty transcript
    rows = [torch.tensor([1, 2, 2]), torch.tensor([], dtype=torch.long), missing]
    batch = kind.pad_rows(task, rows)
    assert batch.tolist() == [[1, 2, 2], [0, 0, 0], [-100, -100, -100]]
    assert kind.label_mask(batch).tolist() == [True, True, False]
    assert kind.pad_rows(task, [*rows, torch.zeros(5, dtype=torch.long)])[:-1].shape == (3, 5)
    assert kind.pad_rows(task, []).shape == (0, 1)


def test_degenerate_splits_are_reported():
    task = _task()
    fit = TargetFit(classes=["a", "\ufffd"])
    kind = task.kind_spec
    assert kind.degenerate(task, torch.tensor([[1, 2], [1, 0], [-100, -100]]), fit) == (
        "1 of 2 labelled transcripts hold chars never seen in training, encoded as the unknown "
        "unit '\ufffd': the model cannot predict them, so each counts as an error"
    )
    assert "every labelled transcript is empty" in kind.degenerate(
        task, torch.zeros(2, 1, dtype=torch.long), fit
    )
    assert kind.degenerate(task, torch.tensor([[1, 1]]), fit) is None


def test_kind_params_and_fields_are_checked():
    assert isinstance(KINDS["ctc"], CTCKind) and KINDS["ctc"].sequential
    with pytest.raises(ValueError, match="ctc unit must be 'char' or 'word', got 'phone'"):
        Task("speech", "ctc", kind_params={"unit": "phone"})
    with pytest.raises(ValueError, match="ctc beam must be an integer >= 1"):
        Task("speech", "ctc", kind_params={"beam": 0})
    with pytest.raises(ValueError, match="no parameter"):
        Task("speech", "ctc", kind_params={"beams": 2})
    with pytest.raises(ValueError, match="reads one column"):
        Task("speech", "ctc", target=("a", "b"))
    with pytest.raises(ValueError, match=r"ctc\) reads a sequence of frames, but .* one vector"):
        _task().build_head(Features(8))
    with pytest.raises(ValueError, match="predicts per position of a sequence"):
        _task().build_head(8)


def test_a_reference_unit_unseen_in_training_is_an_error_even_against_the_unknown_unit():
    """'z' is unseen: its reference is the unknown unit, and a model writing the unknown unit
    matched it (CER 0 where the docs say each unseen unit counts as an error)."""
    from polytask.tasks._kinds._ctc import TranscriptAccumulator

    kind, task = CTCKind(), Task("asr", "ctc")
    fit = kind.fit_text(task, ["ab", "ba"])
    task = kind.resolve(task, fit)
    target = kind.text_target(task, "abz", None, fit)[None]
    classes = task.num_classes
    output = torch.zeros(1, 6, classes + 1)
    output[..., classes] = 1  # every frame real
    for frame, unit in enumerate([1, 0, 2, 0, 3, 0]):  # a, b, the unknown unit
        output[0, frame, unit] = 5.0
    scores = TranscriptAccumulator(task, fit)
    scores.update(output, target)
    assert scores.compute()["cer"] == pytest.approx(1 / 3)  # one of three characters wrong


def test_a_corpus_own_unknown_word_is_a_unit_the_model_learns_and_matches():
    """Found by review: TED-LIUM-style transcripts hold <unk>; it was folded into the unknown
    unit, so a perfect prediction of 'the <unk> sat' scored WER 1/3 (and CER undefined), and
    the training split was said to hold words never seen in training."""
    from polytask.tasks._kinds._ctc import TranscriptAccumulator

    kind, task = CTCKind(), Task("asr", "ctc", kind_params={"unit": "word"})
    fit = kind.fit_text(task, ["the <unk> sat", "the cat"])
    assert fit.classes == ["<unk>", "cat", "sat", "the"]
    task = kind.resolve(task, fit)
    target = kind.text_target(task, "the <unk> sat", None, fit)[None]
    assert kind.degenerate(task, target, fit) is None
    output = torch.zeros(1, 6, task.num_classes + 1)
    output[..., task.num_classes] = 1  # every frame real
    for frame, unit in enumerate(target[0].tolist()):
        output[0, 2 * frame, unit] = 5.0
    scores = TranscriptAccumulator(task, fit)
    scores.update(output, target)
    assert scores.compute() == {"cer": 0.0, "wer": 0.0}
    unseen = kind.text_target(task, "the dog sat", None, fit)  # still the unknown unit
    assert unseen.tolist() == [4, 1, 3]
