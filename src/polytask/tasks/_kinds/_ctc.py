"""CTC tasks: a transcript per row (speech or handwriting recognition) learnt with connectionist
temporal classification (Graves et al., ICML 2006) from a sequence of frames.

- Units (`kind_params` `unit`): "char" (default) — each character of the transcript, the space
  included — or "word" — each whitespace-separated word. Transcripts are normalised by
  stripping them and collapsing every run of whitespace into one space; case is kept as given
  (lower-case the column yourself for a case-blind task). The units are learnt from the
  training transcripts (`fit_text`), sorted, then one unknown unit (`UNKNOWN`: "\ufffd" for
  characters, "<unk>" for words) that encodes units never seen in training.
- Targets: (N, S) int64 unit ids 1..V (id i + 1 is `classes[i]`; 0 is the CTC blank, never a
  target), 0 after the transcript, a missing row all -100; an empty transcript is a labelled
  row of length 0 (`fit_text` warns of those in the training rows: usually a data error).
  `num_classes` = V + 1 (the blank).
- Unseen units: encoded as the unknown unit rather than dropped (which would hide them from
  the reference and make the error rates look better than they are) or refused (one rare
  character in a validation transcript would stop the run). The model never learns to emit
  it, so each such unit counts as an error; `degenerate` reports how many rows of a split
  hold one (a `DataWarning` per split).
- Head: a linear layer per frame (or the task's head factory) → logits (N, T, num_classes),
  then the frame mask as one more channel: output (N, T, num_classes + 1), so the loss and the
  decoder know each row's frame count.
- Loss `ctc`: `F.ctc_loss` (blank 0, zero_infinity) per row divided by its transcript length
  (at least 1), the mean over labelled rows: torch's `reduction="mean"`, per labelled row. A
  row with fewer frames than its transcript needs (one per unit, plus a blank between two
  equal units) cannot be aligned: its loss is 0 (zero_infinity keeps training finite) and a
  `DataWarning` says so, once per task.
- Decoding: greedy (the best class per real frame, repeats collapsed, blanks dropped), or
  (`beam` > 1) a CTC prefix beam search of that width. `predict` gives the decoded unit ids
  (N, T), left-aligned, 0 after them; `decode` / `decode_row` the transcripts.
- Metrics: `cer` (primary; `wer` for word units) and `wer`, lower is better, over the whole set
  (total edit distance / total reference length, as `torchmetrics.text` computes them) on
  decoded strings (word units joined by spaces), normalised as the references are. With word
  units, a reference holding an unseen word leaves `cer` undefined: its characters are lost.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polytask.tasks._columns import DataError, DataWarning
from polytask.tasks._kinds._base import (
    IGNORE_INDEX,
    MetricAccumulator,
    Scale,
    TargetFit,
    TaskKind,
    TextRow,
)
from polytask.tasks._losses import ElementLoss, LossSpec
from polytask.tasks._metrics import Metric, Undefined

if TYPE_CHECKING:
    from polytask.models.encoders import Features
    from polytask.tasks._task import HeadFactory, Task

BLANK = 0
"""The CTC blank's class index (never a target)."""
UNITS = ("char", "word")
UNKNOWN = {"char": "\ufffd", "word": "<unk>"}
NO_MATCH = "\U000f0000"
"""A reference's unknown unit in the error rates: a private-use character no prediction holds."""
"""The unit that encodes units never seen in training, last of a task's classes."""
JOIN = {"char": "", "word": " "}
"""What joins decoded units into a transcript."""


# --- transcripts and units ------------------------------------------------------------------


def normalise(text: str) -> str:
    """`text` stripped, each run of whitespace one space (case kept)."""
    return " ".join(text.split())


def split_units(text: str, unit: str) -> list[str]:
    """The units of a normalised transcript: its characters (spaces included) or its words."""
    return list(text) if unit == "char" else text.split()


def is_missing(value: Any) -> bool:
    """A cell without a transcript: None or NaN (an empty string is an empty transcript)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def transcript(task: Task, value: Any) -> str:
    """The normalised transcript of a cell, or a ValueError saying it holds no text."""
    if not isinstance(value, str):
        raise ValueError(
            f"task {task.name!r}: a ctc target is a transcript (text), got "
            f"{type(value).__name__} {value!r}: for a number per file use kind regression (or "
            "sequence with kind_params output: value); for transcripts that read as numbers, "
            "quote them so that the column is read as text"
        )
    return normalise(value)


def join_units(ids: Sequence[int], classes: Sequence[str], unit: str) -> str:
    """Unit ids (1..V) → the transcript they spell, normalised as the training transcripts
    were (a decoded space at either end, or two in a row, is no word)."""
    return normalise(JOIN[unit].join(classes[i - 1] for i in ids))


# --- the loss -------------------------------------------------------------------------------


def split_output(output: Tensor) -> tuple[Tensor, Tensor]:
    """A ctc head output (N, T, C + 1) → class logits (N, T, C) and the frame mask (N, T)."""
    return output[..., :-1], output[..., -1] > 0.5


def ctc_loss(output: Tensor, target: Tensor) -> Tensor:
    """Per row: the CTC loss (−log p(transcript | frames), blank 0, infinite → 0) divided by
    the transcript's length (at least 1); `target` (N, S) unit ids, 0 after the transcript."""
    logits, frames = split_output(output)
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float16 → float32
    log_probs = F.log_softmax(wide, dim=-1).transpose(0, 1)  # (T, N, C)
    target = target.clamp(min=0)
    if target.shape[1] == 0:  # every transcript empty
        target = target.new_zeros(target.shape[0], 1)
    lengths = (target > 0).sum(dim=1)
    loss = F.ctc_loss(
        log_probs, target, frames.sum(dim=1), lengths, blank=BLANK, reduction="none",
        zero_infinity=True,
    )  # fmt: skip
    return loss / lengths.clamp(min=1).to(loss.dtype)


def frames_needed(target: Tensor) -> Tensor:
    """Per row, the fewest frames CTC can align its transcript to: one per unit, plus one
    blank between two equal consecutive units."""
    real = target > 0
    repeats = (target[:, 1:] == target[:, :-1]) & real[:, 1:]
    return real.sum(dim=1) + repeats.sum(dim=1)


# --- decoding -------------------------------------------------------------------------------


def greedy_decode(output: Tensor) -> Tensor:
    """Best path decoding of a ctc head output (N, T, C + 1): the most likely class at each
    real frame, repeats collapsed, blanks dropped; unit ids (N, T) left-aligned, 0 after them.
    Tensor operations only (it traces for export)."""
    logits, frames = split_output(output)
    best = logits.argmax(dim=-1)
    previous = F.pad(best[:, :-1], (1, 0), value=-1)
    keep = frames & (best != BLANK) & (best != previous)
    slot = torch.where(keep, keep.cumsum(dim=1) - 1, best.shape[1])  # dropped: a spare column
    out = torch.zeros(best.shape[0], best.shape[1] + 1, dtype=torch.long, device=best.device)
    out.scatter_(1, slot, torch.where(keep, best, 0))
    return out[:, :-1]


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high = max(a, b)
    return high + math.log1p(math.exp(-abs(a - b)))


def _add(
    grown: dict[tuple[int, ...], list[float]], prefix: tuple[int, ...], blank: float, unit: float
) -> None:
    """Add path probabilities (log) ending in a blank and in a unit to `prefix`'s."""
    held = grown.setdefault(prefix, [-math.inf, -math.inf])
    held[0], held[1] = _logaddexp(held[0], blank), _logaddexp(held[1], unit)


def prefix_beam_search(log_probs: Tensor, beam: int) -> list[int]:
    """The most likely transcript (unit ids) of one row's frames by CTC prefix beam search:
    `log_probs` (T, C), log-softmax over classes of its real frames; `beam` prefixes kept per
    frame, each extended by the `beam` likeliest units of the frame. Each prefix carries the
    probability of its alignments ending in a blank and in its last unit, so that paths that
    collapse to the same transcript are summed (unlike best path decoding)."""
    table = log_probs.double().tolist()
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    width = min(beam, log_probs.shape[1] - 1)
    for row in table:
        ranked = sorted(range(1, len(row)), key=row.__getitem__, reverse=True)[:width]
        grown: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_unit) in beams.items():
            total = _logaddexp(p_blank, p_unit)
            _add(grown, prefix, total + row[BLANK], -math.inf)
            last = prefix[-1] if prefix else None
            if last is not None:  # the last unit again, collapsed into it
                _add(grown, prefix, -math.inf, p_unit + row[last])
            for c in ranked:
                # after the same unit, a new one needs a blank in between
                start = p_blank if c == last else total
                _add(grown, (*prefix, c), -math.inf, start + row[c])
        scored = sorted(grown.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)
        beams = {p: (b, u) for p, (b, u) in scored[:beam]}
    return list(max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))[0])


def beam_decode(output: Tensor, beam: int) -> Tensor:
    """`prefix_beam_search` on each row's real frames: unit ids (N, T) left-aligned, 0 after."""
    logits, frames = split_output(output)
    out = torch.zeros(logits.shape[:2], dtype=torch.long)
    log_probs = F.log_softmax(logits.detach().float().cpu(), dim=-1)
    for n, mask in enumerate(frames.cpu()):
        ids = prefix_beam_search(log_probs[n][mask], beam)
        out[n, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out.to(output.device)


def row_ids(rows: Tensor | np.ndarray) -> list[list[int]]:
    """Unit ids (N, S), 0 (or −100) after each row's units → each row's ids as a list."""
    return [[int(i) for i in row if i > 0] for row in np.asarray(rows)]


# --- metrics --------------------------------------------------------------------------------


def _as_private_chars(ids: Sequence[int]) -> str:
    """Unit ids as one character each (in Unicode's supplementary private use planes, away
    from surrogates), so that a character error rate over them is the unit error rate."""
    return "".join(chr(0xF0000 + i) for i in ids)


def error_rates(
    predicted: Sequence[Sequence[int]],
    reference: Sequence[Sequence[int]],
    unit: str,
    classes: Sequence[str] | None,
) -> dict[str, float]:
    """`cer` and `wer` of predicted against reference unit ids over a whole set (total edit
    distance / total reference length, torchmetrics' CharErrorRate / WordErrorRate), on the
    transcripts they spell. Without the task's `classes` only the rate over the task's own
    units is known (CER of character units, WER of word units); the other is Undefined."""
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    if not reference:
        return dict.fromkeys(("cer", "wer"), Undefined("no labelled rows"))
    out: dict[str, float] = {}
    if classes is not None:
        pred = [join_units(p, classes, unit) for p in predicted]
        # a reference's unknown unit stands for a unit unseen in training, which no
        # prediction can spell (the model's own unknown unit included): never a match
        spelt = list(classes)
        stands_for_unseen = bool(spelt) and spelt[-1] == UNKNOWN[unit]  # else a learnt unit
        if stands_for_unseen:
            spelt[-1] = NO_MATCH
        ref = [join_units(r, spelt, unit) for r in reference]
        unseen = len(classes)  # the unknown unit's id: a word never seen in training
        if unit == "word" and stands_for_unseen and any(unseen in r for r in reference):
            out["cer"] = Undefined(
                "the references hold words unseen in training, whose characters are not kept "
                "(WER counts each as an error)"
            )
        else:
            out["cer"] = _rate(char_error_rate, pred, ref, sum(map(len, ref)), "characters")
        out["wer"] = _rate(word_error_rate, pred, ref, sum(len(r.split()) for r in ref), "words")
        return out
    unknown = Undefined(
        "the task's units are unknown here (no TargetFit): only the error rate over its own "
        "units is computed"
    )
    units = sum(map(len, reference))
    if unit == "char":
        pred, ref = list(map(_as_private_chars, predicted)), list(map(_as_private_chars, reference))
        return {"cer": _rate(char_error_rate, pred, ref, units, "characters"), "wer": unknown}
    pred = [" ".join(f"w{i}" for i in p) for p in predicted]
    ref = [" ".join(f"w{i}" for i in r) for r in reference]
    return {"cer": unknown, "wer": _rate(word_error_rate, pred, ref, units, "words")}


def _rate(fn: Any, pred: list[str], ref: list[str], total: int, what: str) -> float:
    if not total:
        return Undefined(f"the reference transcripts hold no {what}")
    return float(fn(pred, ref))


def _array_metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """Metric `name` of predicted unit ids `p` against target ids `y` ((N, S) arrays), with
    character units and no classes (what a task bound to its `kind_params` refines)."""
    return error_rates(row_ids(p), row_ids(y), "char", None)[name]


def _cer(y: np.ndarray, p: np.ndarray) -> float:
    return _array_metric("cer", y, p)


def _wer(y: np.ndarray, p: np.ndarray) -> float:
    return _array_metric("wer", y, p)


class TranscriptAccumulator(MetricAccumulator):
    """A ctc task's `cer` / `wer` over batches: keeps each labelled row's decoded and reference
    unit ids (a few integers per row, not the head outputs) and scores them at the end, as
    transcripts when the task's units (`fit.classes`) are known."""

    def __init__(self, task: Task, fit: TargetFit | None) -> None:
        self.task = task
        self.kind = task.kind_spec
        self.classes = fit.classes if fit is not None else None
        self.predicted: list[list[int]] = []
        self.reference: list[list[int]] = []

    def update(self, output: Tensor, target: Tensor) -> None:
        keep = self.kind.label_mask(target)
        if not bool(keep.any()):
            return
        self.predicted += row_ids(self.kind.predict(output[keep]).cpu())
        self.reference += row_ids(target[keep].cpu())

    def compute(self) -> dict[str, float]:
        unit = str(self.kind.param(self.task, "unit"))
        values = error_rates(self.predicted, self.reference, unit, self.classes)
        return {m.name: values[m.name] for m in self.task.metric_objects()}


# --- the head -------------------------------------------------------------------------------


class CTCHead(nn.Module):
    """(N, T, C + 1) sequence representation → per-frame class logits (N, T, classes) by
    `proj` (one linear layer, or the task's head factory, applied to every frame), then the
    frame mask appended: (N, T, classes + 1)."""

    def __init__(self, channels: int, classes: int, factory: HeadFactory | None = None) -> None:
        super().__init__()
        self.proj = (
            factory(channels, classes) if factory is not None else nn.Linear(channels, classes)
        )

    def forward(self, z: Tensor) -> Tensor:
        from polytask.models.encoders import split_mask

        h, mask = split_mask(z)
        n, length, channels = h.shape
        logits = self.proj(h.reshape(n * length, channels)).reshape(n, length, -1)
        return torch.cat([logits, mask.to(logits.dtype).unsqueeze(-1)], dim=-1)


# --- the kind -------------------------------------------------------------------------------


class CTCKind(TaskKind):
    """A transcript per row, learnt with CTC from a sequence encoder's frames (see the module
    docstring). `kind_params`: `unit` ("char" or "word") and `beam` (1: greedy decoding)."""

    sequential = True
    squeeze = False
    loss_units = "per unit"
    losses: ClassVar[Mapping[str, LossSpec]] = {"ctc": LossSpec(ctc_loss)}
    metrics: ClassVar[Mapping[str, Metric]] = {
        "cer": Metric("cer", _cer, False),
        "wer": Metric("wer", _wer, False),
    }
    params: ClassVar[Mapping[str, Any]] = {"unit": "char", "beam": 1}
    served_meaning = (
        "greedy CTC decoding: the unit ids of each row's transcript (id i + 1 is classes[i]), "
        "left-aligned, 0 after them; shape (batch, frames)"
    )

    def __init__(self, task: Task | None = None) -> None:
        self.task = task
        self.warned = False
        self._index: tuple[list[Any], dict[str, int]] | None = None

    def for_task(self, task: Task) -> CTCKind:
        return CTCKind(task)

    @property
    def beam(self) -> int:
        """The bound task's beam width (1 when unbound)."""
        return 1 if self.task is None else int(self.param(self.task, "beam"))

    def default_primary(self, task: Task) -> str | None:
        """`wer` for word units (CER cannot be read where a reference holds an unseen word)."""
        return "wer" if self.param(task, "unit") == "word" else None

    def validate(self, task: Task) -> None:
        unit, beam = self.param(task, "unit"), self.param(task, "beam")
        if unit not in UNITS:
            raise ValueError(f"task {task.name!r}: ctc unit must be 'char' or 'word', got {unit!r}")
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
            raise ValueError(
                f"task {task.name!r}: ctc beam must be an integer >= 1 (1: greedy decoding), "
                f"got {beam!r}"
            )
        if task.num_classes is not None and task.num_classes < 2:
            raise ValueError(
                f"task {task.name!r}: a ctc task needs num_classes >= 2 (the blank and at least "
                f"one unit), got {task.num_classes}"
            )
        if len(self.target_columns(task)) != 1:
            raise ValueError(
                f"task {task.name!r}: a ctc task reads one column (a transcript per row), not "
                f"{list(self.target_columns(task))}"
            )
        custom = [m for m in task.metrics or () if not isinstance(m, str)]
        if custom:
            raise ValueError(
                f"task {task.name!r}: ctc metrics are accumulated over batches by the kind; "
                f"choose among {', '.join(self.metrics)} (a custom Metric is not supported)"
            )

    def out_features(self, task: Task) -> int:
        """The classes: the blank, then the units."""
        if task.num_classes is None:
            raise ValueError(
                f"task {task.name!r}: num_classes is unknown; fit the data's encoding first, "
                "which reads the units from the training transcripts (num_classes = units + 1)"
            )
        return task.num_classes

    def expected_output(self, task: Task) -> str:
        return (
            f"(frames, {self.out_features(task) + 1}): the class logits (blank first) of each "
            "frame, then the frame mask"
        )

    def build_head(self, task: Task, features: Features) -> nn.Module:
        """A `CTCHead` on a sequence encoder's frames; anything else is refused."""
        if not features.sequence:
            raise ValueError(
                f"task {task.name!r} (ctc) reads a sequence of frames, but this encoder gives "
                f"{'a feature map' if features.spatial else 'one vector'} per row: use a "
                "sequence encoder (audio on audio data)"
            )
        return CTCHead(features.channels, self.out_features(task), task.head)

    def check_output(self, task: Task, output: Tensor, target: Tensor) -> None:
        """Refuse a head output that is not (N, T, num_classes + 1) for targets (N, S), and
        unit ids beyond the head's classes."""
        classes = self.out_features(task)
        fits = (
            output.ndim == 3
            and target.ndim == 2
            and output.shape[0] == target.shape[0]
            and output.shape[2] == classes + 1
        )
        if not fits:
            raise ValueError(
                f"task {task.name!r} (ctc): its head gives outputs of shape "
                f"{tuple(output.shape)} for targets of shape {tuple(target.shape)}; a ctc head "
                f"gives (N, frames, {classes + 1}) for targets (N, units): "
                f"{self.expected_output(task)}"
            )
        largest = int(target.max()) if target.numel() else 0  # one device sync, not two
        if largest >= classes:
            raise ValueError(
                f"task {task.name!r} (ctc): a target holds unit id {largest} but the "
                f"task has {classes} classes (ids 1..{classes - 1}, 0 the blank): encode the "
                "targets with the fit the model was built for"
            )

    def label_mask(self, target: Tensor) -> Tensor:
        """A row is labelled unless it holds -100 (a missing transcript: all -100)."""
        if target.ndim != 2:
            return super().label_mask(target)
        return ~(target == IGNORE_INDEX).any(dim=1)

    def loss(self, fn: ElementLoss, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """The mean of `fn` over labelled rows, after warning (once per task) about rows whose
        frames are too few for their transcript."""
        if not self.warned and self.task is not None and bool(mask.any()):
            frames = split_output(output)[1].sum(dim=1)
            short = mask & (frames < frames_needed(target.clamp(min=0)))
            if bool(short.any()):
                self.warned = True
                warnings.warn(
                    f"task {self.task.name!r} (ctc): {int(short.sum())} of {int(mask.sum())} "
                    "labelled rows of a batch have fewer frames than their transcript needs "
                    "(one per unit, plus a blank between two equal units), e.g. "
                    f"{int(frames[short][0])} frames for "
                    f"{int(frames_needed(target[short][:1].clamp(min=0))[0])}; CTC cannot "
                    "align them, so their loss is 0 and they do not train. Use an encoder "
                    "with fewer samples per frame (e.g. a shorter hop_ms) or drop such rows "
                    "(shown once per task)",
                    DataWarning,
                    stacklevel=2,
                )
        return super().loss(fn, output, target, mask)

    def predict(self, output: Tensor) -> Tensor:
        """Decoded unit ids (N, T), left-aligned, 0 after them: greedy, or the bound task's
        prefix beam search when its `beam` > 1."""
        if self.beam > 1:
            return beam_decode(output, self.beam)
        return greedy_decode(output)

    def served(self, output: Tensor, scale: Scale | None) -> Tensor:
        """Greedy decoding whatever `beam` is (the beam search is Python, not a graph)."""
        return greedy_decode(output)

    def truth(self, target: Tensor, scale: Scale | None) -> np.ndarray:
        return target.numpy()

    def prediction(self, output: Tensor, scale: Scale | None) -> np.ndarray:
        return self.predict(output).cpu().numpy()

    def accumulator(
        self, task: Task, scale: Scale | None, fit: TargetFit | None = None
    ) -> MetricAccumulator:
        return TranscriptAccumulator(task, fit)

    def evaluate(
        self, metrics: Sequence[Metric], predictions: np.ndarray, targets: np.ndarray
    ) -> dict[str, float]:
        """The metrics of decoded unit ids against targets on labelled rows, over the bound
        task's units (without its classes: see `error_rates`)."""
        keep = self.label_mask(torch.as_tensor(targets)).numpy()
        unit = "char" if self.task is None else str(self.param(self.task, "unit"))
        values = error_rates(row_ids(predictions[keep]), row_ids(targets[keep]), unit, None)
        out = {}
        for m in metrics:
            out[m.name] = values[m.name] if m.name in values else m(targets, predictions)
        return out

    # -- targets --------------------------------------------------------------------------

    def fit_text(self, task: Task, values: Sequence[Any]) -> TargetFit:
        """The units of the training transcripts, sorted, then the unknown unit; when the
        transcripts hold the unknown unit themselves (TED-LIUM's <unk>), it comes first
        instead: a unit the model learns, which the error rates match like any other."""
        unit = str(self.param(task, "unit"))
        found: set[str] = set()
        empty = labelled = 0
        for value in values:
            if not is_missing(value):
                units = split_units(transcript(task, value), unit)
                found.update(units)
                labelled, empty = labelled + 1, empty + (not units)
        if empty and found:
            warnings.warn(
                f"task {task.name!r}: {empty} of {labelled} labelled training transcripts are "
                "empty (blank or spaces only), so they teach the model to say nothing; for a "
                "row without a transcript leave the cell empty (null in JSON lines)",
                DataWarning,
                stacklevel=2,
            )
        if not found:
            raise DataError(
                f"task {task.name!r}: no training transcript holds a {unit} (all are missing "
                "or empty); a ctc task learns its units from them"
            )
        unknown = UNKNOWN[unit]
        if unknown in found:  # the corpus's own <unk>: a unit the model learns to say, first
            return TargetFit(classes=[unknown, *sorted(found - {unknown})])
        return TargetFit(classes=[*sorted(found - {unknown}), unknown])

    def _ids(self, task: Task, fit: TargetFit) -> dict[str, int]:
        """Unit → id for the fit's classes (kept for the last fit seen)."""
        classes = fit.class_list(task)
        if self._index is None or self._index[0] is not classes:
            self._index = (classes, {c: i + 1 for i, c in enumerate(classes)})
        return self._index[1]

    def text_target(self, task: Task, value: Any, row: TextRow, fit: TargetFit) -> Tensor:
        """A transcript → its unit ids (1-D int64, possibly empty); units not seen in training
        become the unknown unit."""
        unit = str(self.param(task, "unit"))
        ids = self._ids(task, fit)
        unknown = ids.get(UNKNOWN[unit])
        units = split_units(transcript(task, value), unit)
        if unknown is None:  # a fit made without the unknown unit
            unseen = sorted({u for u in units if u not in ids})
            if unseen:
                raise ValueError(
                    f"task {task.name!r}: transcript {value!r} holds {unit}s not seen in "
                    f"training: {unseen[:5]}"
                )
        return torch.tensor([ids.get(u, unknown) for u in units], dtype=torch.long)

    def missing_target(self, task: Task, like: Tensor) -> Tensor:
        """An unlabelled row: -100, as long as `like` (at least 1, so that it is never taken
        for an empty transcript)."""
        length = max(1, like.shape[-1] if like.ndim else 1)
        return torch.full((length,), IGNORE_INDEX, dtype=torch.long, device=like.device)

    def pad_rows(self, task: Task, rows: Sequence[Tensor]) -> Tensor:
        """Rows' unit ids as one (N, S) batch, S the longest (at least 1): 0 after each
        transcript, a missing row all -100. Rows already padded may be padded again."""
        width = max([1, *(r.shape[-1] for r in rows)])
        if not rows:
            return torch.zeros(0, width, dtype=torch.long)
        out = []
        for r in rows:
            r = r.long().reshape(-1)
            fill = IGNORE_INDEX if bool((r == IGNORE_INDEX).any()) else 0
            out.append(F.pad(r, (0, width - r.shape[0]), value=fill))
        return torch.stack(out)

    def resolve(self, task: Task, fit: TargetFit) -> Task:
        """`num_classes` = the units + 1 (the blank); a different one set on the task is
        refused (the head would not fit the targets)."""
        wanted = len(fit.class_list(task)) + 1
        if task.num_classes is None:
            return dataclasses.replace(task, num_classes=wanted)
        if task.num_classes != wanted:
            raise ValueError(
                f"task {task.name!r}: num_classes is {task.num_classes} but the training "
                f"transcripts give {wanted - 1} units (with the unknown one) + the blank = "
                f"{wanted}; remove num_classes"
            )
        return task

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """No labelled row, every transcript empty, or rows holding units unseen in training."""
        problem = super().degenerate(task, target, fit)
        if problem:
            return problem
        rows = target[self.label_mask(target)]
        if not bool((rows > 0).any()):
            return "every labelled transcript is empty, so its error rates are undefined"
        unit = str(self.param(task, "unit"))
        classes = fit.classes or []
        if classes and classes[-1] == UNKNOWN[unit]:  # last: it stands for unseen units only
            unknown = len(classes)
            held = int((rows == unknown).any(dim=1).sum())
            if held:
                return (
                    f"{held} of {len(rows)} labelled transcripts hold {unit}s never seen in "
                    f"training, encoded as the unknown unit {UNKNOWN[unit]!r}: the model cannot "
                    "predict them, so each counts as an error"
                )
        return None

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        """Column `<task>`: each row's transcript."""
        classes, unit = fit.class_list(task), str(self.param(task, "unit"))
        return {task.name: [join_units(ids, classes, unit) for ids in row_ids(prediction)]}

    def decode_row(self, task: Task, output: Tensor, row: TextRow, fit: TargetFit) -> Any:
        """One row's transcript from its head output (T, num_classes + 1)."""
        classes, unit = fit.class_list(task), str(self.param(task, "unit"))
        ids = row_ids(self.predict(output.unsqueeze(0)).cpu())[0]
        return join_units(ids, classes, unit)
