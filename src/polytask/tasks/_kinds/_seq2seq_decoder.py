"""The sequence-to-sequence head: a Transformer decoder over the shared sequence representation
(teacher-forced while training, decoding on its own otherwise), and greedy / beam-search decoding
in plain PyTorch, batched over rows (and beams).

Kept apart from the kind (`_seq2seq.py`) because the head subclasses
`polytask.models.TeacherForced`, which the kinds cannot import when they are first loaded: the
kind imports this module when it builds a head."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polytask.models._teacher import TeacherForced
from polytask.models.encoders._base import split_mask
from polytask.tasks._kinds._base import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID

if TYPE_CHECKING:
    from polytask.tasks._kinds._seq2seq import Seq2SeqSettings

StepFn = Callable[[Tensor], Tensor]
"""Decoder prefixes (n, t) starting with BOS → the logits of the next token (n, V)."""


def next_log_probs(logits: Tensor) -> Tensor:
    """Log-probabilities of the next token (float32), with PAD and BOS ruled out: neither is
    ever a token of a target, so a decoded sequence holds PAD only after its EOS."""
    logits = logits.float().clone()
    logits[:, [PAD_ID, BOS_ID]] = float("-inf")
    return F.log_softmax(logits, dim=-1)


def trim(ids: Tensor) -> Tensor:
    """Decoded ids (n, t) without the trailing columns that are PAD in every row (at least one
    column is kept)."""
    real = (ids != PAD_ID).any(dim=0).nonzero()
    keep = int(real.max()) + 1 if len(real) else 1
    return ids[:, :keep]


def greedy_decode(step: StepFn, rows: int, max_length: int, device: torch.device) -> Tensor:
    """The most likely next token at each step, for `rows` rows at once, until every row has
    produced EOS or `max_length` tokens (EOS counted): ids (rows, t ≤ max_length), PAD after
    each row's EOS."""
    seqs = torch.full((rows, 1), BOS_ID, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    for _ in range(max_length):
        token = next_log_probs(step(seqs)).argmax(dim=-1).masked_fill(done, PAD_ID)
        seqs = torch.cat([seqs, token[:, None]], dim=1)
        done |= token == EOS_ID
        if bool(done.all()):
            break
    return trim(seqs[:, 1:])


def beam_search(
    step: StepFn,
    rows: int,
    beam: int,
    max_length: int,
    length_penalty: float,
    device: torch.device,
) -> Tensor:
    """Beam search of width `beam` for `rows` rows at once (`step` reads prefixes beam-major:
    row r's beams are prefixes r·beam ... r·beam + beam − 1): ids (rows, t ≤ max_length) of each
    row's best hypothesis by its length-normalised log-probability, sum log p / length ** α
    (α = `length_penalty`, length counting the EOS), PAD after its EOS.

    Each step ranks every one-token extension of the live beams, and the finished beams as they
    are (extended by PAD at no cost), by that normalised score, and keeps the best `beam`;
    each finished hypothesis is also remembered, so one pushed out of the beam later is not
    lost. A row is done when its beams are all finished. Hypotheses that reach `max_length`
    tokens without EOS compete as they are. With `beam` 1 this is greedy decoding."""
    n, b = rows, beam
    seqs = torch.full((n * b, 1), BOS_ID, dtype=torch.long, device=device)
    raw = torch.full((n, b), float("-inf"), device=device)  # cumulative log-probability
    raw[:, 0] = 0.0  # one live beam at the start: the others would repeat it
    length = torch.zeros((n, b), dtype=torch.long, device=device)
    finished = torch.zeros((n, b), dtype=torch.bool, device=device)
    best = torch.full((n,), float("-inf"), device=device)
    best_ids = torch.full((n, max_length), PAD_ID, dtype=torch.long, device=device)
    for _ in range(max_length):
        log_p = next_log_probs(step(seqs))
        vocab = log_p.shape[-1]
        log_p = log_p.view(n, b, vocab)
        stay = torch.full_like(log_p[0, 0], float("-inf"))
        stay[PAD_ID] = 0.0
        log_p = torch.where(finished[..., None], stay, log_p)
        total = raw[..., None] + log_p  # (n, b, V)
        grown = length + (~finished).long()
        score = total / grown.clamp(min=1)[..., None].float() ** length_penalty
        _, pick = score.view(n, b * vocab).topk(b, dim=1)
        source, token = pick // vocab, pick % vocab
        raw = total.view(n, b * vocab).gather(1, pick)
        length = grown.gather(1, source)
        was_finished = finished.gather(1, source)
        finished = was_finished | (token == EOS_ID) | torch.isneginf(raw)
        prefix = seqs.view(n, b, -1).gather(1, source[..., None].expand(-1, -1, seqs.shape[1]))
        seqs = torch.cat([prefix, token[..., None]], dim=2).view(n * b, -1)
        # remember the hypotheses that finished at this step
        new = finished & ~was_finished & ~torch.isneginf(raw)
        normalised = raw / length.clamp(min=1).float() ** length_penalty
        candidate = torch.where(new, normalised, float("-inf"))
        value, which = candidate.max(dim=1)
        better = value > best
        if bool(better.any()):
            chosen = seqs.view(n, b, -1)[torch.arange(n, device=device), which, 1:]
            best_ids[better, : chosen.shape[1]] = chosen[better]
            best_ids[better, chosen.shape[1] :] = PAD_ID
            best = torch.where(better, value, best)
        if bool(finished.all()):
            break
    # hypotheses still live at max_length compete as they are
    normalised = torch.where(
        finished, float("-inf"), raw / length.clamp(min=1).float() ** length_penalty
    )
    value, which = normalised.max(dim=1)
    better = value > best
    if bool(better.any()):
        chosen = seqs.view(n, b, -1)[torch.arange(n, device=device), which, 1:]
        best_ids[better, : chosen.shape[1]] = chosen[better]
        best_ids[better, chosen.shape[1] :] = PAD_ID
    return trim(best_ids)


def decoder_input(target: Tensor) -> Tensor:
    """The teacher-forced decoder input of targets (N, T): [BOS] + target[:, :-1], with missing
    (−100) ids read as PAD (their positions are not scored)."""
    shifted = target[:, :-1].masked_fill(target[:, :-1] == IGNORE_INDEX, PAD_ID)
    bos = torch.full_like(target[:, :1], BOS_ID)
    return torch.cat([bos, shifted], dim=1)


def pad_to(t: Tensor, length: int, value: float) -> Tensor:
    """`t` (N, T, ...) padded along its second dimension to `length` with `value`."""
    missing = length - t.shape[1]
    if missing <= 0:
        return t
    fill = t.new_full((t.shape[0], missing, *t.shape[2:]), value)
    return torch.cat([t, fill], dim=1)


class Seq2SeqHead(TeacherForced):
    """A Transformer decoder (pre-norm, causal) reading the encoder's sequence as its memory:
    target token embeddings plus learned positions, `layers` decoder layers, a final LayerNorm
    and a projection to the vocabulary (tied to the embedding unless `tie_embeddings` is 0).

    Output (N, T_out, V + 1): channels [:V] the logits of each target position, channel V the
    decoded token id (as a float). Training with a teacher: teacher-forced logits, channel V
    their argmax. Evaluating with a teacher (`eval()`): the teacher-forced logits of the T
    target positions and a real decode (greedy, or beam search when `beam` > 1); T_out =
    max(T, decoded length), logits zero beyond T. Without a teacher (prediction): logits zero,
    T_out = `max_length` (so that batches of predictions stack)."""

    def __init__(
        self, task_name: str, channels: int, vocab: int, settings: Seq2SeqSettings
    ) -> None:
        super().__init__(task_name)
        self.warned = False
        width = settings.width or channels
        if width % settings.heads:
            raise ValueError(
                f"task {task_name!r}: the seq2seq decoder's width {width} (kind_params width, "
                f"or the encoder's channels) must be a multiple of kind_params heads "
                f"({settings.heads})"
            )
        self.settings = settings
        self.vocab = vocab
        self.memory_in: nn.Module = (
            nn.Linear(channels, width) if width != channels else nn.Identity()
        )
        self.embed = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(settings.max_length, width)
        nn.init.normal_(self.embed.weight, std=width**-0.5)  # tied logits start near N(0, 1)
        nn.init.normal_(self.positions.weight, std=width**-0.5)
        layer = nn.TransformerDecoderLayer(
            width,
            settings.heads,
            4 * width,
            settings.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, settings.layers)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab)
        if settings.tie_embeddings:
            self.out.weight = self.embed.weight

    def logits(self, inputs: Tensor, memory: Tensor, memory_pad: Tensor) -> Tensor:
        """Next-token logits (n, t, V) at every position of decoder inputs (n, t) (causal: the
        logits at t read inputs up to t only), reading `memory` (n, L, width) where
        `memory_pad` (n, L) is False."""
        t = inputs.shape[1]
        x = self.embed(inputs) + self.positions.weight[:t]
        causal = torch.ones(t, t, dtype=torch.bool, device=inputs.device).triu(1)
        y = self.decoder(
            x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=memory_pad
        )
        out: Tensor = self.out(self.norm(y))
        return out

    def memory(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The decoder's memory (N, L, width) and its padding mask (N, L), True where padded,
        from the sequence representation (N, L, C + 1); a row without any real position reads
        its first (zero) one, not nothing (which would give NaN)."""
        h, mask = split_mask(z)
        pad = ~mask
        pad[:, 0] &= mask.any(dim=1)
        return self.memory_in(h), pad

    @torch.no_grad()
    def decode(self, memory: Tensor, memory_pad: Tensor) -> Tensor:
        """Each row's decoded ids (N, t ≤ max_length), PAD after EOS: greedy, or beam search
        of width `beam`."""
        s = self.settings
        rows = memory.shape[0]
        if s.beam > 1:
            memory = memory.repeat_interleave(s.beam, dim=0)
            memory_pad = memory_pad.repeat_interleave(s.beam, dim=0)

        def step(prefix: Tensor) -> Tensor:
            return self.logits(prefix, memory, memory_pad)[:, -1]

        if s.beam > 1:
            return beam_search(step, rows, s.beam, s.max_length, s.length_penalty, memory.device)
        return greedy_decode(step, rows, s.max_length, memory.device)

    def forward(self, z: Tensor) -> Tensor:
        memory, memory_pad = self.memory(z)
        teacher = self.teacher
        if teacher is None and self.training and torch.is_grad_enabled() and not self.warned:
            self.warned = True
            warnings.warn(
                f"task {self.task_name!r}: the seq2seq head is training without its targets, so "
                "its loss reads zero logits and nothing learns: wrap the forward pass in "
                "`with polytask.teaching(model, targets):` (train_step and the Trainer do)",
                UserWarning,
                stacklevel=2,
            )
        if teacher is None:
            ids = pad_to(self.decode(memory, memory_pad), self.settings.max_length, PAD_ID)
            logits = memory.new_zeros(ids.shape[0], ids.shape[1], self.vocab, dtype=torch.float32)
            return torch.cat([logits, ids[..., None].float()], dim=-1)
        if teacher.ndim != 2 or teacher.shape[0] != z.shape[0]:
            raise ValueError(
                f"task {self.task_name!r}: the seq2seq head reads targets (N, T) of token ids for "
                f"its {z.shape[0]} rows, got {tuple(teacher.shape)}"
            )
        if teacher.shape[1] > self.settings.max_length:
            raise ValueError(
                f"task {self.task_name!r}: targets of {teacher.shape[1]} tokens, but the "
                f"decoder has positions for kind_params max_length = "
                f"{self.settings.max_length}; raise max_length or truncate the targets"
            )
        logits = self.logits(decoder_input(teacher), memory, memory_pad).float()
        if self.training:
            return torch.cat([logits, logits.argmax(dim=-1, keepdim=True).float()], dim=-1)
        ids = self.decode(memory, memory_pad)
        length = max(teacher.shape[1], ids.shape[1])
        ids = pad_to(ids, length, PAD_ID)
        return torch.cat([pad_to(logits, length, 0.0), ids[..., None].float()], dim=-1)
