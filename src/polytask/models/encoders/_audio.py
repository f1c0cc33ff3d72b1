"""Encoder `audio`: a small speech encoder in plain PyTorch (no torchaudio). A waveform batch
(N, S), NaN-padded, becomes log-mel features (`LogMel`: STFT, an HTK mel filter bank, log, and
per-utterance normalisation over the real frames), two stride-2 convolutions (4× fewer frames),
then pre-norm transformer blocks that attend to real frames only. The output is a sequence
representation (N, L, width + 1) with the frame mask as its last channel (`join_mask`).

Frame rule: frame t is centred on sample t·hop (the signal is zero-padded by n_fft // 2 on both
sides, as `torch.stft(center=True)` does, but with zeros rather than a reflection, so that an
utterance's frames do not depend on what follows it in its batch); it is real when that centre
lies within the utterance's real samples, i.e. t·hop < samples: ceil(samples / hop) real frames.
Each stride-2 step keeps position u real when the position 2u it is centred on is: ceil(n / 2).
Padded positions are zeroed before every convolution and masked out of attention, so a row's
outputs at its real positions are the same alone or padded in any batch (in eval mode).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from polytask.models._hints import Positive, Rate
from polytask.models.encoders._base import Encoder, Features, InputShape, join_mask

LOG_FLOOR = 1e-6
"""Added to the mel power before the log, so that silence stays finite."""
NORM_EPS = 1e-5
"""Added to each mel bin's variance before the per-utterance normalisation divides by it."""


def hz_to_mel(hz: Tensor) -> Tensor:
    """HTK mel scale: 2595 · log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    """The inverse of `hz_to_mel`."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_points(n_mels: int, f_min: float, f_max: float) -> Tensor:
    """The n_mels + 2 filter edges in Hz, equally spaced in mel from `f_min` to `f_max`
    (float64): filter m rises from point m, peaks at point m + 1 (its centre), falls to m + 2."""
    low, high = hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64))
    return mel_to_hz(torch.linspace(float(low), float(high), n_mels + 2, dtype=torch.float64))


def mel_filters(n_fft: int, sample_rate: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    """Triangular HTK mel filters (n_mels, n_fft // 2 + 1) over the FFT bins' frequencies,
    unnormalised (peak 1), as torchaudio's `melscale_fbanks(norm=None, mel_scale="htk")` for
    an even `n_fft`; for an odd one at the bins' true frequencies k · rate / n_fft (torchaudio
    spreads them to rate / 2: at 22050 Hz and a 25 ms window, n_fft 551, 20 Hz off at the top,
    log-mel features up to 0.46 off)."""
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate, dtype=torch.float64)
    points = mel_points(n_mels, f_min, f_max)
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.minimum(rising, falling).clamp(min=0.0).float()


class LogMel(nn.Module):
    """Waveforms (N, S), NaN where there is no sample, → log-mel features (N, F, n_mels) and
    the frame mask (N, F), True at real frames (see the module docstring for the rule).

    A `window_ms` Hann window (n_fft = its length in samples) every `hop_ms`; power spectrum;
    `n_mels` HTK triangular filters from `f_min` to `f_max` (None: the Nyquist frequency);
    log(power + 1e-6); then (`normalize`) each mel bin standardised over the utterance's real
    frames, padded frames set to 0. Computed in float32 with autocast off."""

    def __init__(
        self,
        sample_rate: int,
        n_mels: int = 64,
        window_ms: float = 25.0,
        hop_ms: float = 10.0,
        f_min: float = 0.0,
        f_max: float | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        nyquist = sample_rate / 2
        top = nyquist if f_max is None else f_max
        self.n_fft = round(sample_rate * window_ms / 1000)
        self.hop = round(sample_rate * hop_ms / 1000)
        if self.n_fft < 2 or self.hop < 1:
            raise ValueError(
                f"encoder 'audio': window_ms {window_ms} and hop_ms {hop_ms} at {sample_rate} Hz "
                f"give a window of {self.n_fft} and a hop of {self.hop} samples; they need at "
                "least 2 and 1"
            )
        if not 0 <= f_min < top <= nyquist:
            raise ValueError(
                f"encoder 'audio': need 0 <= f_min < f_max <= {nyquist:g} Hz (half the sample "
                f"rate), got f_min {f_min:g} and f_max {top:g}"
            )
        filters = mel_filters(self.n_fft, sample_rate, n_mels, f_min, top)
        empty = [int(m) for m in torch.nonzero(filters.sum(1) == 0).flatten()]
        if empty:
            raise ValueError(
                f"encoder 'audio': {len(empty)} of the {n_mels} mel filters (e.g. {empty[0]}) "
                f"fall between two FFT bins of a {self.n_fft}-sample window at {sample_rate} "
                "Hz and would always read 0: use fewer n_mels, a longer window_ms or a higher "
                "f_min"
            )
        self.sample_rate, self.n_mels, self.normalize = sample_rate, n_mels, normalize
        self.register_buffer("filters", filters, persistent=False)
        window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float32)
        self.register_buffer("window", window, persistent=False)
        self.filters: Tensor
        self.window: Tensor

    def frames(self, samples: int) -> int:
        """How many frames a batch of `samples` samples per row has (real or not)."""
        half = self.n_fft // 2
        return 1 + (samples + 2 * half - self.n_fft) // self.hop

    def real_frames(self, lengths: Tensor) -> Tensor:
        """Real frames per row for `lengths` real samples: ceil(samples / hop)."""
        return torch.div(lengths + self.hop - 1, self.hop, rounding_mode="floor")

    def log_mel(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, S) waveforms → unnormalised log-mel (N, F, n_mels) and the frame mask (N, F)."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            present = ~torch.isnan(x)
            lengths = present.sum(dim=1)
            wave = F.pad(torch.where(present, x, 0.0), (self.n_fft // 2, self.n_fft // 2))
            spec = torch.stft(
                wave, self.n_fft, self.hop, window=self.window, center=False, return_complex=True
            )
            power = spec.real.square() + spec.imag.square()  # (N, n_fft // 2 + 1, F)
            mel = torch.matmul(self.filters, power).transpose(1, 2)
            frames = torch.arange(mel.shape[1], device=x.device)
            mask = frames < self.real_frames(lengths)[:, None]
            return torch.log(mel + LOG_FLOOR), mask

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features, mask = self.log_mel(x)
        if not self.normalize:
            return features * mask.unsqueeze(-1), mask
        return standardise(features, mask), mask


def standardise(features: Tensor, mask: Tensor) -> Tensor:
    """Each channel of (N, L, C) standardised over the real positions of its row (population
    variance); padded positions set to 0 and left out of the statistics."""
    m = mask.to(features.dtype).unsqueeze(-1)
    count = m.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (features * m).sum(dim=1, keepdim=True) / count
    var = ((features - mean).square() * m).sum(dim=1, keepdim=True) / count
    return (features - mean) / torch.sqrt(var + NORM_EPS) * m


def halve(mask: Tensor, length: int) -> Tensor:
    """A frame mask (N, L) after a stride-2 step to `length` positions: position u is real
    when position 2u is, i.e. ceil(real / 2) real positions."""
    real = torch.div(mask.sum(dim=1) + 1, 2, rounding_mode="floor")
    return torch.arange(length, device=mask.device) < real[:, None]


class ConvSubsampling(nn.Module):
    """Two 1-D convolutions over frames (kernel 3, stride 2, GELU), the mel bins as input
    channels: (N, F, n_mels) → (N, ⌈⌈F/2⌉/2⌉, width), with the mask subsampled to match and
    padded positions zeroed before each convolution."""

    def __init__(self, n_mels: int, width: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv1d(n_mels, width, 3, 2, 1), nn.Conv1d(width, width, 3, 2, 1)]
        )

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        for conv in self.convs:
            h = h * mask.to(h.dtype).unsqueeze(-1)
            h = F.gelu(conv(h.transpose(1, 2))).transpose(1, 2)
            mask = halve(mask, h.shape[1])
        return h, mask


def sinusoids(length: int, dim: int, device: torch.device) -> Tensor:
    """The sinusoidal position encodings (length, dim) of "Attention is all you need"."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return table


class MaskedBlock(nn.Module):
    """A pre-norm transformer block (x + attn(LN x), then x + MLP(LN x)) whose attention reads
    real positions only (`keep`: (N, L), True at keys that may be attended to)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )  # fmt: skip

    def attend(self, x: Tensor, keep: Tensor) -> Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=keep[:, None, None, :], dropout_p=p
        )
        out = self.proj(out.transpose(1, 2).reshape(n, length, dim))
        return F.dropout(out, p, self.training)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        x = x + self.attend(self.norm1(x), keep)
        return x + self.mlp(self.norm2(x))


class AudioEncoder(Encoder):
    """`LogMel` features, `ConvSubsampling` to `width` channels (stride 4 frames), sinusoidal
    positions, `depth` masked pre-norm blocks and a final layer norm; output (N, L, width + 1)
    with the frame mask last, `Features(width, stride=4·hop samples, sequence=True)`."""

    def __init__(
        self,
        input_shape: Sequence[int],
        sample_rate: int,
        n_mels: int = 64,
        window_ms: float = 25.0,
        hop_ms: float = 10.0,
        f_min: float = 0.0,
        f_max: float | None = None,
        width: int = 144,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"encoder 'audio': width {width} must be a multiple of heads {heads}")
        self.mel = LogMel(sample_rate, n_mels, window_ms, hop_ms, f_min, f_max)
        self.subsample = ConvSubsampling(n_mels, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            MaskedBlock(width, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.sample_rate = sample_rate
        self._declare(input_shape, Features(width, 4 * self.mel.hop, sequence=True))

    def positions(self, samples: int) -> int:
        """Output positions (real or not) for a batch of `samples` samples per row."""
        frames = self.mel.frames(samples)
        return ((frames + 1) // 2 + 1) // 2

    def output_numel(self, input_shape: Sequence[int] | None = None) -> int:
        shape = tuple(input_shape or self.input_shape)
        return (self.features.channels + 1) * self.positions(shape[0])

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or not x.is_floating_point() or x.shape[1] < 1:
            raise ValueError(
                "encoder 'audio' takes float waveforms of shape (N, samples), padded with NaN, "
                f"got {x.dtype} of shape {tuple(x.shape)}"
            )
        features, mask = self.mel(x)
        h, mask = self.subsample(features.to(self.norm.weight.dtype), mask)
        h = self.drop(h + sinusoids(h.shape[1], h.shape[2], h.device).to(h.dtype))
        keep = mask | ~mask.any(dim=1, keepdim=True)  # a row without frames attends to all
        for block in self.blocks:
            h = block(h, keep)
        h = self.norm(h).masked_fill(~mask.unsqueeze(-1), 0.0)
        return join_mask(h, mask)


Size = Annotated[int, Field(ge=1)]
Milliseconds = Annotated[float, Field(gt=0)]
Hertz = Annotated[float, Field(ge=0)]


def audio_shape(input_shape: Sequence[int]) -> int:
    """S from `input_shape` (S,), or a ValueError saying what the encoder takes."""
    shape = tuple(input_shape)
    if len(shape) != 1 or not isinstance(shape[0], int) or shape[0] < 1:
        raise ValueError(
            "encoder 'audio' takes waveforms: input_shape must be (samples,), e.g. "
            f"polytask.models.InputShape((16000,), sample_rate=16000), got {shape}"
        )
    return shape[0]


def build_audio(
    input_shape: tuple[int, ...],
    /,
    *,
    sample_rate: Size | None = None,
    n_mels: Size = 64,
    window_ms: Milliseconds = 25.0,
    hop_ms: Milliseconds = 10.0,
    f_min: Hertz = 0.0,
    f_max: Positive | None = None,
    width: Size = 144,
    depth: Size = 2,
    heads: Size = 4,
    mlp_ratio: Positive = 4.0,
    dropout: Rate = 0.1,
) -> AudioEncoder:
    """`audio`: log-mel features (`n_mels` HTK filters from `f_min` to `f_max` Hz, a
    `window_ms` Hann window every `hop_ms`), two stride-2 convolutions to `width` channels,
    `depth` pre-norm transformer blocks of `heads` heads and an MLP of `mlp_ratio`·width units
    (`dropout`). `sample_rate`: the waveforms' (default: the `InputShape`'s)."""
    audio_shape(input_shape)
    given = input_shape.sample_rate if isinstance(input_shape, InputShape) else None
    if given is not None and sample_rate is not None and given != sample_rate:
        raise ValueError(
            f"encoder 'audio': sample_rate {sample_rate} differs from the data's {given} Hz "
            "(InputShape.sample_rate); remove the parameter or resample the data"
        )
    rate = sample_rate if sample_rate is not None else given
    if rate is None:
        raise ValueError(
            "encoder 'audio' needs the waveforms' sample rate: pass "
            "polytask.models.InputShape((samples,), sample_rate=R) or the encoder parameter "
            "sample_rate"
        )
    return AudioEncoder(
        tuple(input_shape), rate, n_mels, window_ms, hop_ms, f_min, f_max, width, depth, heads,
        mlp_ratio, dropout,
    )  # fmt: skip
