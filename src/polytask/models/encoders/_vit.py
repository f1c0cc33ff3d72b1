"""Encoder `vit`: a small vision transformer (patch embedding, learnt position embeddings,
pre-norm transformer blocks); its output is the patch tokens laid out as a feature map
(N, dim, H/patch, W/patch), so image-level and dense heads read it like a conv net's.

Between blocks the tokens travel as a channels-last map (N, h, w, dim): layer norms and linear
layers act on the last dimension as they are, attention views it as (N, h·w, dim) without a
copy, and the blocks chain in one nn.Sequential (which the lean Gramian gradient mode walks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from polytask.models._hints import Positive, Rate
from polytask.models.encoders._base import Encoder, Features, check_image, image_shape


class PatchEmbedding(nn.Module):
    """Non-overlapping `patch`×`patch` patches projected to `dim` (a conv with kernel = stride
    = patch), plus a learnt position embedding per patch, resized (bicubic) when the image's
    patch grid differs from the one it was built for. Output: (N, h, w, dim)."""

    def __init__(self, channels: int, dim: int, patch: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(channels, dim, patch, patch)
        self.position = nn.Parameter(torch.zeros(1, dim, *grid))
        nn.init.trunc_normal_(self.position, std=0.02)

    def positions(self, grid: Sequence[int]) -> Tensor:
        """The position embeddings (1, dim, h, w) for a patch grid of `grid` = (h, w)."""
        if tuple(grid) == tuple(self.position.shape[2:]):
            return self.position
        return F.interpolate(self.position, size=tuple(grid), mode="bicubic", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        if h % self.patch or w % self.patch:
            raise ValueError(
                f"encoder 'vit' takes images whose height and width are multiples of its patch "
                f"size {self.patch}, got {h}×{w}"
            )
        tokens = self.proj(x)
        return (tokens + self.positions(tokens.shape[2:])).permute(0, 2, 3, 1)


class Attention(nn.Module):
    """Multi-head self-attention over every token (scaled dot-product, fused where torch can)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=p)
        out = self.proj(out.transpose(1, 2).reshape(n, length, dim))
        return F.dropout(out, p, self.training)


class TransformerBlock(nn.Module):
    """Pre-norm block on a channels-last token map: x + attn(LN x), then x + MLP(LN x)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        n, h, w, dim = x.shape
        tokens = x.reshape(n, h * w, dim)
        tokens = tokens + self.attn(self.norm1(tokens))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.view(n, h, w, dim)


class TokenMap(nn.Module):
    """The final layer norm, then the channels-last tokens as a map (N, dim, h, w)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x).permute(0, 3, 1, 2)


class ViTEncoder(Encoder):
    """Patch embedding, `depth` transformer blocks and a final norm as one `net`
    (nn.Sequential); output (N, dim, H/patch, W/patch) at stride `patch`."""

    def __init__(
        self,
        input_shape: Sequence[int],
        patch: int = 8,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c, height, width = image_shape("vit", input_shape)
        if height % patch or width % patch:
            raise ValueError(
                f"encoder 'vit': the image size {height}×{width} must be a multiple of "
                f"patch {patch} in both directions"
            )
        if dim % heads:
            raise ValueError(f"encoder 'vit': dim {dim} must be a multiple of heads {heads}")
        self.net = nn.Sequential(
            PatchEmbedding(c, dim, patch, (height // patch, width // patch)),
            *(TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth)),
            TokenMap(dim),
        )
        self._declare(input_shape, Features(dim, patch, spatial=True))

    def forward(self, x: Tensor) -> Tensor:
        check_image("vit", x, self.input_shape[0])
        out: Tensor = self.net(x)
        return out


Size = Annotated[int, Field(ge=1)]


def build_vit(
    input_shape: tuple[int, ...],
    /,
    *,
    patch: Size = 8,
    dim: Size = 128,
    depth: Size = 4,
    heads: Size = 4,
    mlp_ratio: Positive = 4.0,
    dropout: Rate = 0.0,
) -> ViTEncoder:
    """`vit`: `patch`×`patch` patches embedded to `dim`, `depth` pre-norm blocks of `heads`
    attention heads and an MLP of `mlp_ratio`·dim units, `dropout` on attention and MLP."""
    image_shape("vit", input_shape)
    return ViTEncoder(input_shape, patch, dim, depth, heads, mlp_ratio, dropout)
