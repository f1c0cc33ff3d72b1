"""Encoder `transformer`: a small text transformer on token ids (N, L), PAD_ID = 0 padding.

Scaled token embeddings plus positions (learnt, or sinusoidal), `depth` pre-norm blocks of
self-attention over the real tokens (a key-padding mask) and a GELU MLP, then a final layer
norm; the output is the sequence representation (N, L, width + 1): features zeroed at
padding, then the mask channel (`join_mask`).

Between blocks the tokens travel with their mask as that same one tensor (features, then the
mask channel), so the blocks chain in one nn.Sequential (which the lean Gramian gradient mode
walks) and every gradient mode differentiates one tensor. The blocks are written here rather
than taken from nn.TransformerEncoderLayer: the same code runs in training and evaluation (no
fused inference path, which has no batching rule under torch.func.vmap and treats padded rows
its own way), attention is one `F.scaled_dot_product_attention` with a boolean mask, and the
task gradients of the exact modes come out of one batched backward through plain ops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from polytask.models._hints import Rate
from polytask.models.encoders._base import Encoder, Features, InputShape, join_mask
from polytask.tasks._kinds._base import PAD_ID

Positions = Literal["learned", "sinusoidal"]


def text_shape(encoder: str, input_shape: Sequence[int] | InputShape) -> tuple[int, int]:
    """(max_length, vocab_size) from an `InputShape((L,), vocab_size=V)`, or a ValueError
    naming the encoder and what it takes."""
    shape = tuple(input_shape)
    vocab = input_shape.vocab_size if isinstance(input_shape, InputShape) else None
    if len(shape) != 1 or not isinstance(shape[0], int) or shape[0] < 1:
        raise ValueError(
            f"encoder {encoder!r} takes token ids: input_shape must be (max_length,), got {shape} "
            "(polytask.models.InputShape((L,), vocab_size=V))"
        )
    if vocab is None:
        raise ValueError(
            f"encoder {encoder!r} needs the vocabulary size: pass "
            f"polytask.models.InputShape(({shape[0]},), vocab_size=V) instead of a plain shape "
            "(text data sources give it)"
        )
    if vocab < 2:
        raise ValueError(f"encoder {encoder!r}: vocab_size must be at least 2, got {vocab}")
    return shape[0], vocab


def check_tokens(encoder: str, x: Tensor, max_length: int, vocab_size: int) -> Tensor:
    """`x` as int64 token ids (N, L), or a ValueError saying what is wrong: not integer ids,
    longer than `max_length`, or ids outside [0, vocab_size)."""
    if x.dim() != 2 or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(
            f"encoder {encoder!r} takes integer token ids of shape (N, L) (PAD_ID {PAD_ID} pads), "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )
    if x.shape[1] > max_length:
        raise ValueError(
            f"encoder {encoder!r} was built for sequences of at most max_length {max_length} "
            f"tokens, got {x.shape[1]}: truncate the text (the data's max_length) or build the "
            f"encoder with InputShape(({x.shape[1]},), vocab_size=...)"
        )
    if x.numel():
        low, high = (int(v) for v in torch.aminmax(x))
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"encoder {encoder!r}: token id {bad} is outside the vocabulary [0, {vocab_size}) "
                "it was built for: build it with the tokenizer's vocab_size"
            )
    return x.long()


def sequence_mask(z: Tensor) -> Tensor:
    """The real positions (N, L) of a sequence representation (its last channel)."""
    return z[..., -1] > 0.5


def attention_keys(mask: Tensor) -> Tensor:
    """The keys each row may attend to (N, L): its real tokens; a row with none attends to its
    first position, so that softmax never sees only masked keys (NaN) — its outputs are zeroed
    by the mask at the end anyway."""
    keys = mask.clone()
    if keys.shape[1]:
        keys[:, 0] |= ~mask.any(dim=1)
    return keys


class TokenEmbedding(nn.Module):
    """Token ids (N, L) → embeddings · √width + positions, with the mask as a last channel
    (N, L, width + 1)."""

    def __init__(
        self, vocab_size: int, width: int, max_length: int, positions: Positions, dropout: float
    ) -> None:
        super().__init__()
        self.scale = math.sqrt(width)
        self.tokens = nn.Embedding(vocab_size, width, padding_idx=PAD_ID)
        with torch.no_grad():  # scaled by √width: unit-variance token embeddings
            nn.init.normal_(self.tokens.weight, std=width**-0.5)
            self.tokens.weight[PAD_ID].zero_()
        self.learned = positions == "learned"
        if self.learned:
            self.position = nn.Parameter(torch.zeros(max_length, width))
            nn.init.trunc_normal_(self.position, std=0.02)
        else:
            self.register_buffer("position", sinusoids(max_length, width), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor) -> Tensor:
        length = ids.shape[1]
        h = self.tokens(ids) * self.scale + self.position[:length]
        mask = (ids != PAD_ID).to(h.dtype).unsqueeze(-1)
        return torch.cat([self.dropout(h), mask], dim=-1)


def sinusoids(length: int, width: int) -> Tensor:
    """The fixed sine / cosine position encodings (length, width) of "Attention is all you
    need": sin at even channels, cos at odd ones, wavelengths from 2π to 10000·2π."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    rates = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(1e4) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates[: width // 2])
    return table


class SelfAttention(nn.Module):
    """Multi-head self-attention over the real tokens (scaled dot-product, fused where torch
    can), with dropout on the attention weights and the output."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, keys: Tensor) -> Tensor:
        n, length, width = x.shape
        qkv = self.qkv(x).view(n, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keys, dropout_p=p)
        out = self.proj(out.transpose(1, 2).reshape(n, length, width))
        return F.dropout(out, p, self.training)


class TextBlock(nn.Module):
    """Pre-norm block on (N, L, width + 1): x + attn(LN x), then x + MLP(LN x), the mask channel
    passed through."""

    def __init__(self, width: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, ff_mult * width), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(ff_mult * width, width), nn.Dropout(dropout),
        )  # fmt: skip

    def forward(self, z: Tensor) -> Tensor:
        h, m = z[..., :-1], z[..., -1:]
        keys = attention_keys(m.squeeze(-1) > 0.5)[:, None, None, :]  # over heads and queries
        h = h + self.attn(self.norm1(h), keys)
        h = h + self.mlp(self.norm2(h))
        return torch.cat([h, m], dim=-1)


class SequenceNorm(nn.Module):
    """The final layer norm, then the sequence representation: features zeroed at padding,
    the mask channel last (`join_mask`)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)

    def forward(self, z: Tensor) -> Tensor:
        return join_mask(self.norm(z[..., :-1]), sequence_mask(z))


class TransformerEncoder(Encoder):
    """Token embedding, `depth` transformer blocks and a final norm as one `net`
    (nn.Sequential); output (N, L, width + 1): the sequence representation."""

    def __init__(
        self,
        input_shape: Sequence[int] | InputShape,
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
        positions: Positions = "learned",
    ) -> None:
        super().__init__()
        self.max_length, self.vocab_size = text_shape("transformer", input_shape)
        if width % heads:
            raise ValueError(
                f"encoder 'transformer': width {width} must be a multiple of heads {heads}"
            )
        if positions == "sinusoidal" and width % 2:
            raise ValueError(f"encoder 'transformer': sinusoidal positions need an even width, "
                             f"got {width}")  # fmt: skip
        self.net = nn.Sequential(
            TokenEmbedding(self.vocab_size, width, self.max_length, positions, dropout),
            *(TextBlock(width, heads, ff_mult, dropout) for _ in range(depth)),
            SequenceNorm(width),
        )
        self._declare(tuple(input_shape), Features(width, sequence=True))

    def forward(self, x: Tensor) -> Tensor:
        ids = check_tokens("transformer", x, self.max_length, self.vocab_size)
        out: Tensor = self.net(ids)
        return out


Size = Annotated[int, Field(ge=1)]


def build_transformer(
    input_shape: Sequence[int] | InputShape,
    /,
    *,
    width: Size = 128,
    depth: Size = 2,
    heads: Size = 4,
    ff_mult: Size = 4,
    dropout: Rate = 0.1,
    positions: Positions = "learned",
) -> TransformerEncoder:
    """`transformer`: token ids of an `InputShape((max_length,), vocab_size=V)` embedded to
    `width` with `positions` (learned or sinusoidal), `depth` pre-norm blocks of `heads`
    attention heads and an MLP of `ff_mult`·width units, `dropout` throughout; a sequence
    of width features per token."""
    return TransformerEncoder(input_shape, width, depth, heads, ff_mult, dropout, positions)
