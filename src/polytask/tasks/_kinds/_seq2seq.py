"""Sequence-to-sequence tasks (translation, normalisation, summarisation): a Transformer decoder
head over the shared sequence representation writes a text, token by token.

Target (one tensor per task): (N, T) int64, the ids of the target text as the data's shared
tokenizer encodes it, then EOS_ID, PAD_ID (0) after it; a row not labelled for the task is all
−100. A target that does not fit in `kind_params` `max_length` (64, EOS counted) is cut to its
first `max_length` tokens with no EOS (the decoder writes until that limit), so that the rows
cut can be counted: `degenerate` warns of them per split, since the metrics score the cut texts.

Head output: ONE tensor (N, T_out, V + 1) (V = num_classes, the tokenizer's vocabulary): channels
[:V] are the logits of each target position (teacher forcing: the decoder reads [BOS] +
target[:-1]), channel V the decoded token id as a float. While training, channel V is the
argmax of the logits (nothing is decoded); in evaluation the head also decodes on its own
(greedy, or beam search when `beam` > 1), T_out = max(T, decoded length) and the logits are zero
beyond T; without targets (prediction) the logits are zero and T_out = `max_length`. See
`Seq2SeqHead`.

Loss: cross-entropy of the logits of output[:, :T] against the target tokens that are neither
PAD nor −100, the mean over those tokens (label smoothing allowed); `label_count` counts them.

Metrics: `bleu` (corpus BLEU-4, SacreBLEU's `13a` tokenisation of the decoded texts; 0 to 1),
`chrf` (chrF, 0 to 1), `token_accuracy` (teacher-forced: argmax of the logits against each
target token) and `exact_match` (decoded ids equal the reference's, up to EOS). Texts come
from the tokenizer (`TargetFit.tokenizer`); without one BLEU scores the id sequences as words
and chrF is undefined. A token the tokenizer does not know ([UNK]) is written as U+FFFD in
decoded texts (`decode`: a word the model cannot spell) and counts as a miss in a reference:
BLEU and chrF read it as a character no prediction holds (decoding it away would score the text
without the words the tokenizer lacks), exact_match and token_accuracy never match it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from polytask.tasks._kinds._base import (
    BOS_ID,
    EOS_ID,
    IGNORE_INDEX,
    PAD_ID,
    UNK_ID,
    MetricAccumulator,
    Scale,
    TargetFit,
    TaskKind,
    TextRow,
)
from polytask.tasks._losses import ElementLoss, LossSpec, standard_losses
from polytask.tasks._metrics import Metric, Undefined

if TYPE_CHECKING:
    from polytask.models.encoders import Features
    from polytask.tasks._task import Task

NO_TOKENIZER = (
    "the seq2seq task writes texts in the tokens of the text data's tokenizer: give it text "
    "data (data.text), whose tokenizer reads its targets; audio data have none (a transcript "
    "of audio is a ctc task)"
)


@dataclass(frozen=True)
class Seq2SeqSettings:
    """A seq2seq task's `kind_params`, checked, with their defaults filled in."""

    max_length: int = 64
    """The longest target and decoded sequence, in tokens, EOS counted."""
    layers: int = 2
    """Transformer decoder layers."""
    heads: int = 4
    """Attention heads (the width must be a multiple)."""
    dropout: float = 0.1
    width: int | None = None
    """The decoder's width; None: the encoder's channels (else the memory is projected)."""
    beam: int = 1
    """Beam width of the decoding; 1 is greedy."""
    length_penalty: float = 1.0
    """α of the beam score, log-probability / length ** α (0: no length normalisation)."""
    tie_embeddings: bool = True
    """The output projection shares the target embedding's weights."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_settings(task: Task) -> Seq2SeqSettings:
    """`task`'s kind_params as settings; a value that does not fit is refused, naming it."""
    params = dict(Seq2SeqKind.params) | dict(task.kind_params or {})
    where = f"task {task.name!r}: seq2seq kind_params"
    least = {"max_length": 2, "layers": 1, "heads": 1, "beam": 1}
    for key, low in least.items():
        if not _is_int(params[key]) or params[key] < low:
            raise ValueError(f"{where} {key} must be an integer >= {low}, got {params[key]!r}")
    width = params["width"]
    if width is not None and (not _is_int(width) or width < 1):
        raise ValueError(f"{where} width must be an integer >= 1, got {width!r}")
    dropout, penalty = params["dropout"], params["length_penalty"]
    if not _is_number(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"{where} dropout must be a number in [0, 1), got {dropout!r}")
    if not _is_number(penalty) or penalty < 0:
        raise ValueError(f"{where} length_penalty must be a number >= 0, got {penalty!r}")
    tie = params["tie_embeddings"]
    if tie not in (0, 1):  # YAML / pydantic may give 0 / 1 for false / true
        raise ValueError(f"{where} tie_embeddings must be true or false, got {tie!r}")
    return Seq2SeqSettings(
        max_length=params["max_length"],
        layers=params["layers"],
        heads=params["heads"],
        dropout=float(dropout),
        width=width,
        beam=params["beam"],
        length_penalty=float(penalty),
        tie_embeddings=bool(tie),
    )


# --- targets --------------------------------------------------------------------------------


def token_mask(target: Tensor) -> Tensor:
    """Which target elements are tokens the loss scores: neither PAD nor −100."""
    return (target != PAD_ID) & (target != IGNORE_INDEX)


def labelled_rows(target: Tensor) -> Tensor:
    """One bool per row: labelled when it holds a token (its EOS at least)."""
    return token_mask(target).reshape(target.shape[0], -1).any(dim=1)


def until_eos(ids: Sequence[int]) -> list[int]:
    """A row's token ids up to (without) its first EOS, PAD and −100 left out."""
    out: list[int] = []
    for i in ids:
        if i == EOS_ID:
            break
        if i not in (PAD_ID, IGNORE_INDEX):
            out.append(int(i))
    return out


UNKNOWN_TEXT = "\ufffd"
"""How a decoded text shows a token the tokenizer does not know (U+FFFD, the replacement mark)."""

UNKNOWN_REFERENCE = "\U000f0000"
"""A reference's unknown token in the metrics: a private-use character no prediction holds."""


def unknown_id(tokenizer: Any) -> int | None:
    """The id of the tokenizer's unknown token ([UNK]), or None (no tokenizer, or none)."""
    token = getattr(getattr(tokenizer, "model", None), "unk_token", None)
    found = tokenizer.token_to_id(token) if token else None
    return None if found is None else int(found)


def ids_to_text(ids: Sequence[int], tokenizer: Any, unknown: str = UNKNOWN_TEXT) -> str:
    """Token ids as text: the tokenizer's decoding, special tokens left out but the unknown
    one written as `unknown`; without a tokenizer, the ids written as words."""
    if tokenizer is None:
        return " ".join(str(i) for i in ids)
    unk = unknown_id(tokenizer)
    if unk is None or unk not in ids:
        text: str = tokenizer.decode(list(ids), skip_special_tokens=True)
        return text
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    kept = [i for i in ids if i == unk or i not in special]
    decoded: str = tokenizer.decode(kept, skip_special_tokens=False)
    return decoded.replace(str(tokenizer.id_to_token(unk)), unknown)


# --- metrics --------------------------------------------------------------------------------


class CharF:
    """chrF (Popović 2015) as sacreBLEU's CHRF computes it, 0 to 1: character n-grams of
    orders 1 to 6 with whitespace removed, their hypothesis, reference and matched counts
    summed over the rows (a row's hypothesis n-grams of an order its reference has none of
    left out), precision and recall averaged over the orders both sides hold, then F with
    β = 2. Kept as counts (not the texts). torchmetrics' CHRFScore leaves out the
    reference of a row that matches nothing (an empty decode), so such rows raised the score."""

    ORDER = 6
    BETA = 2.0

    def __init__(self) -> None:
        self.counts = np.zeros((self.ORDER, 3), dtype=np.int64)  # hypothesis, reference, match

    def update(self, hypotheses: Sequence[str], references: Sequence[str]) -> None:
        for hyp, ref in zip(hypotheses, references, strict=True):
            h, r = "".join(hyp.split()), "".join(ref.split())
            for n in range(1, self.ORDER + 1):
                mine = Counter(h[i : i + n] for i in range(len(h) - n + 1))
                theirs = Counter(r[i : i + n] for i in range(len(r) - n + 1))
                matched = sum((mine & theirs).values())
                # sacreBLEU counts no hypothesis n-gram of an order the reference lacks
                counted = mine.total() if theirs else 0
                self.counts[n - 1] += (counted, theirs.total(), matched)

    def compute(self) -> float:
        held = (self.counts[:, 0] > 0) & (self.counts[:, 1] > 0)
        if not held.any():
            return 0.0
        hyp, ref, match = self.counts[held].T.astype(float)
        precision, recall = float(np.mean(match / hyp)), float(np.mean(match / ref))
        factor = self.BETA**2
        if precision + recall == 0:
            return 0.0
        return (1 + factor) * precision * recall / (factor * precision + recall)


class SequenceScores:
    """The statistics of a seq2seq task's metrics, added batch by batch: BLEU and chrF n-gram
    counts (torchmetrics keeps them, not the texts), exact matches, and teacher-forced correct
    tokens (when the outputs carry logits)."""

    def __init__(self, tokenizer: Any) -> None:
        from torchmetrics.text import SacreBLEUScore

        self.tokenizer = tokenizer
        self.unknown = unknown_id(tokenizer) if tokenizer is not None else None
        # with a tokenizer: texts, tokenised the SacreBLEU way (13a); without: ids as words
        self.bleu = SacreBLEUScore(tokenize="13a" if tokenizer is not None else "none")
        self.chrf = CharF() if tokenizer is not None else None  # character n-grams only
        self.rows = 0
        self.exact = 0
        self.tokens = 0
        self.correct = 0
        self.finite = True

    def add(self, decoded: Tensor, target: Tensor, logits: Tensor | None) -> None:
        """Labelled rows' decoded ids (n, t), targets (n, T) and teacher-forced logits
        (n, T, V) (None: outputs made without the targets, which have none)."""
        if logits is not None:
            if not bool(torch.isfinite(logits).all()):
                self.finite = False
                return
            scored = token_mask(target)
            self.tokens += int(scored.sum())
            right = logits.argmax(dim=-1) == target
            if self.unknown is not None:  # the model cannot write the word [UNK] stands for
                right &= target != self.unknown
            self.correct += int(right[scored].sum())
        hyps = [until_eos(row) for row in decoded.tolist()]
        refs = [until_eos(row) for row in target.tolist()]
        self.rows += len(refs)
        self.exact += sum(h == r and self.unknown not in r for h, r in zip(hyps, refs, strict=True))
        hyp_texts = [ids_to_text(h, self.tokenizer) for h in hyps]
        ref_texts = [[ids_to_text(r, self.tokenizer, UNKNOWN_REFERENCE)] for r in refs]
        self.bleu.update(hyp_texts, ref_texts)
        if self.chrf is not None:
            self.chrf.update(hyp_texts, [r[0] for r in ref_texts])

    def values(self, names: Sequence[str]) -> dict[str, float]:
        """The metrics `names`; undefined, with the reason, where they cannot be computed."""
        if not self.finite:
            return {n: Undefined("predictions not finite") for n in names}
        if not self.rows:
            return {n: Undefined("no labelled rows") for n in names}
        values: dict[str, float] = {
            "bleu": float(self.bleu.compute()),
            "exact_match": self.exact / self.rows,
        }
        if self.chrf is not None:
            values["chrf"] = self.chrf.compute()
        else:
            values["chrf"] = Undefined(
                "no tokenizer to turn ids into text (chrF scores characters); "
                "read the data with a text encoding"
            )
        if self.tokens:
            values["token_accuracy"] = self.correct / self.tokens
        else:
            values["token_accuracy"] = Undefined(
                "no teacher-forced logits: outputs made without the targets"
            )
        return {n: values[n] for n in names}


def _has_logits(logits: Tensor) -> bool:
    """Outputs made with the targets carry logits; without them (prediction) they are zero."""
    return bool(logits.numel()) and bool((logits != 0).any())


class Seq2SeqAccumulator(MetricAccumulator):
    """A seq2seq task's metrics over batches: each batch's decoded ids and references (as text
    when the task's tokenizer is known) added to `SequenceScores`."""

    def __init__(self, task: Task, tokenizer: Any) -> None:
        self.names = [m.name for m in task.metric_objects()]
        self.scores = SequenceScores(tokenizer)

    def update(self, output: Tensor, target: Tensor) -> None:
        keep = labelled_rows(target)
        if not bool(keep.any()):
            return
        output, target = output[keep], target[keep]
        logits = output[:, : target.shape[1], :-1]
        decoded = output[..., -1].round().long()
        self.scores.add(decoded, target, logits if _has_logits(logits) else None)

    def compute(self) -> dict[str, float]:
        return self.scores.values(self.names)


def _array_metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """Metric `name` of references (n, T) and decoded ids (n, t) as arrays (no tokenizer, no
    logits: what `Task.evaluate` gives; evaluation goes through the accumulator)."""
    scores = SequenceScores(None)
    scores.add(torch.as_tensor(p).long(), torch.as_tensor(y).long(), None)
    return scores.values([name])[name]


def _metric(name: str) -> Metric:
    return Metric(name, functools.partial(_array_metric, name), True)


# --- the kind -------------------------------------------------------------------------------


class Seq2SeqKind(TaskKind):
    """A text per row, written by a Transformer decoder over the shared sequence representation
    (see the module's docstring for the formats): `num_classes` is the data tokenizer's
    vocabulary size (set from it). `kind_params`: `max_length` (64), `layers` (2), `heads`
    (4), `dropout` (0.1), `width` (the encoder's channels), `beam` (1: greedy),
    `length_penalty` (1.0), `tie_embeddings` (true)."""

    sequential = True
    squeeze = False
    losses: ClassVar[Mapping[str, LossSpec]] = standard_losses("cross_entropy")
    metrics: ClassVar[Mapping[str, Metric]] = {
        name: _metric(name) for name in ("bleu", "chrf", "token_accuracy", "exact_match")
    }
    params: ClassVar[Mapping[str, Any]] = {
        "max_length": 64,
        "layers": 2,
        "heads": 4,
        "dropout": 0.1,
        "width": None,
        "beam": 1,
        "length_penalty": 1.0,
        "tie_embeddings": True,
    }
    served_meaning = (
        "decoded token ids per row, shape (batch, max_length), as floats; PAD (0) after EOS (2)"
    )

    def validate(self, task: Task) -> None:
        parse_settings(task)
        if task.num_classes is not None and task.num_classes <= UNK_ID + 1:
            raise ValueError(
                f"task {task.name!r}: a seq2seq task's num_classes is its tokenizer's "
                f"vocabulary size: the 4 special tokens and more, got {task.num_classes}"
            )
        custom = [m for m in task.metrics or () if not isinstance(m, str)]
        if custom:
            raise ValueError(
                f"task {task.name!r}: seq2seq metrics are accumulated over batches by the "
                f"kind; choose among {', '.join(self.metrics)} (a custom Metric is not supported)"
            )
        if len(self.target_columns(task)) != 1:
            raise ValueError(
                f"task {task.name!r}: a seq2seq task reads one column (the target text), not "
                f"{list(self.target_columns(task))}"
            )

    def out_features(self, task: Task) -> int:
        if task.num_classes is None:
            raise ValueError(f"task {task.name!r}: num_classes is unknown; {NO_TOKENIZER}")
        return task.num_classes + 1

    def build_head(self, task: Task, features: Features) -> nn.Module:
        """A `Seq2SeqHead` on a sequence representation; vectors and feature maps are refused."""
        if not features.sequence:
            raise ValueError(
                f"task {task.name!r} (seq2seq) writes a sequence from a sequence: use a "
                f"sequence encoder (e.g. encoder transformer on text data), not one that gives "
                f"{'a feature map' if features.spatial else 'one vector'} per row"
            )
        from polytask.tasks._kinds._seq2seq_decoder import Seq2SeqHead

        vocab = self.out_features(task) - 1
        return Seq2SeqHead(task.name, features.channels, vocab, parse_settings(task))

    def check_output(self, task: Task, output: Tensor, target: Tensor) -> None:
        channels = None if task.num_classes is None else task.num_classes + 1
        fits = (
            output.ndim == 3
            and target.ndim == 2
            and output.shape[0] == target.shape[0]
            and output.shape[1] >= target.shape[1]
            and (channels is None or output.shape[2] == channels)
        )
        if not fits:
            raise ValueError(
                f"task {task.name!r} (seq2seq): its head gives outputs of shape "
                f"{tuple(output.shape)} for targets of shape {tuple(target.shape)}; a seq2seq "
                f"head gives {self.expected_output(task)}"
            )

    def expected_output(self, task: Task) -> str:
        v = "V" if task.num_classes is None else str(task.num_classes)
        return (
            f"(N, T_out >= T, {v} + 1) for targets (N, T): {v} logits per target position, "
            "then the decoded token id"
        )

    def label_mask(self, target: Tensor) -> Tensor:
        """One bool per row: labelled when it holds a token (its EOS at least)."""
        return labelled_rows(target)

    def label_count(self, target: Tensor) -> int:
        """The loss is a mean over target tokens: their number (PAD and −100 not counted)."""
        return int(token_mask(target).sum())

    def loss(self, fn: ElementLoss, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Mean of `fn` (cross-entropy) over the target tokens of the rows `mask` keeps, every
        token of the batch weighing the same; 0, still in the graph, when there is none."""
        tokens = token_mask(target) & mask.reshape(-1, 1)
        logits = output[:, : target.shape[1], :-1]
        if not bool(tokens.any()):
            return logits.sum() * 0.0
        return fn(logits[tokens], target[tokens]).mean()

    def pad_rows(self, task: Task, rows: Sequence[Tensor]) -> Tensor:
        """Rows of different lengths padded to the longest: labelled rows with PAD, missing
        ones (all −100) with −100."""
        length = max([len(r) for r in rows] + [1])
        out = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        for i, row in enumerate(rows):
            if not bool(token_mask(row).any()):
                out[i] = IGNORE_INDEX
            out[i, : len(row)] = row
        return out

    def accumulator(
        self, task: Task, scale: Scale | None, fit: TargetFit | None = None
    ) -> MetricAccumulator:
        return Seq2SeqAccumulator(task, fit.tokenizer if fit is not None else None)

    def predict(self, output: Tensor) -> Tensor:
        """The decoded token ids (N, T_out), PAD after EOS."""
        return output[..., -1].round().long()

    def served(self, output: Tensor, scale: Scale | None) -> Tensor:
        return output[..., -1]

    def prediction(self, output: Tensor, scale: Scale | None) -> np.ndarray:
        return self.predict(output).numpy()

    def truth(self, target: Tensor, scale: Scale | None) -> np.ndarray:
        return target.numpy()

    def evaluate(
        self, metrics: Sequence[Metric], predictions: np.ndarray, targets: np.ndarray
    ) -> dict[str, float]:
        """The metrics of decoded ids against references, labelled rows only (on ids: there
        is no tokenizer here, nor logits)."""
        keep = self.label_mask(torch.as_tensor(targets)).numpy()
        return {m.name: m(targets[keep], predictions[keep]) for m in metrics}

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """No labelled row; rows cut to `max_length`; rows holding tokens the tokenizer does
        not know (both score higher than the whole texts would, were they not said)."""
        problem = super().degenerate(task, target, fit)
        if problem:
            return problem
        rows = target[labelled_rows(target)]
        said = []
        cut = int((~(rows == EOS_ID).any(dim=1)).sum())
        if cut:
            limit = parse_settings(task).max_length
            said.append(
                f"{cut} of {len(rows)} labelled target texts do not fit in kind_params "
                f"max_length {limit} (tokens and EOS) and were cut to {limit} tokens: the model "
                "cannot write their ends, and the metrics score the cut texts (higher than the "
                "whole ones would); raise max_length to keep them whole"
            )
        unknown = unknown_id(fit.tokenizer) if fit.tokenizer is not None else None
        held = int((rows == unknown).any(dim=1).sum()) if unknown is not None else 0
        if held:
            said.append(
                f"{held} of {len(rows)} labelled target texts hold tokens the tokenizer does not "
                f"know ({fit.tokenizer.id_to_token(unknown)}): the model cannot write them, so "
                "each counts as a miss (a missed word in BLEU, but one missed character in chrF, "
                "which so reads higher than against the texts as written); a larger "
                "data.text.vocab_size, or a subword tokenizer (bpe, wordpiece), keeps more of them"
            )
        return "; ".join(said) or None

    def fit_text(self, task: Task, values: Sequence[Any]) -> TargetFit:
        """Nothing to learn from the texts: the data's tokenizer encodes them, and the data
        pipeline sets `vocab` (and `tokenizer`) from it."""
        return TargetFit()

    def resolve(self, task: Task, fit: TargetFit) -> Task:
        """`num_classes` = the tokenizer's vocabulary size; a task that sets another is
        refused."""
        if fit.vocab is None:
            if task.num_classes is not None:
                return task
            raise ValueError(f"task {task.name!r}: {NO_TOKENIZER}")
        if task.num_classes is None:
            return dataclasses.replace(task, num_classes=fit.vocab)
        if task.num_classes != fit.vocab:
            raise ValueError(
                f"task {task.name!r}: num_classes is {task.num_classes} but the data's "
                f"tokenizer has {fit.vocab} tokens; leave num_classes unset (it is read from "
                "the tokenizer)"
            )
        return task

    def text_target(self, task: Task, value: Any, row: TextRow, fit: TargetFit) -> Tensor:
        """The target text's token ids (row's tokenizer, no special tokens; literal PAD / BOS
        / EOS tokens in the text dropped) then EOS; a text that does not fit in `max_length`
        tokens with its EOS is cut to `max_length` tokens, no EOS (`degenerate` counts those)."""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"target {value!r} is not a text")
        text = str(value)
        if not text.strip():
            raise ValueError("empty target text: a seq2seq target needs a text to write")
        tokenizer = row.tokenizer if row.tokenizer is not None else fit.tokenizer
        if tokenizer is None:
            raise ValueError(NO_TOKENIZER)
        ids = [
            i
            for i in tokenizer.encode(text, add_special_tokens=False).ids
            if i not in (PAD_ID, BOS_ID, EOS_ID)
        ]
        if not ids:
            raise ValueError(f"target text {text!r} gives no tokens")
        limit = parse_settings(task).max_length
        return torch.tensor(ids[:limit] if len(ids) >= limit else [*ids, EOS_ID], dtype=torch.long)

    def decode_row(self, task: Task, output: Tensor, row: TextRow, fit: TargetFit) -> Any:
        """The decoded text of one row's output (T_out, V + 1), up to its EOS."""
        tokenizer = row.tokenizer if row.tokenizer is not None else fit.tokenizer
        if tokenizer is None:
            raise ValueError(f"task {task.name!r}: {NO_TOKENIZER}")
        return ids_to_text(until_eos(self.predict(output).tolist()), tokenizer)

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        """One text per row (its decoded ids up to EOS, through the tokenizer), or, without a
        tokenizer, the list of ids."""
        rows = [until_eos(r) for r in np.asarray(prediction).tolist()]
        if fit.tokenizer is None:
            return {task.name: rows}
        return {task.name: [ids_to_text(r, fit.tokenizer) for r in rows]}
