"""The `audio` encoder: the mel filter bank (a sine peaks in the filter centred nearest its
frequency), the frame rule, padding invariance of the whole encoder, its declared shapes, and
its refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polytask.models import InputShape, build_model
from polytask.models.encoders import ENCODERS, AudioEncoder, LogMel, build_encoder, encoder_params
from polytask.models.encoders._audio import hz_to_mel, mel_filters, mel_points
from polytask.tasks import Task

SMALL = {"width": 16, "depth": 2, "heads": 2, "n_mels": 32}


def _sine(hz: float, samples: int, rate: int) -> torch.Tensor:
    return torch.sin(2 * math.pi * hz * torch.arange(samples) / rate)


def test_mel_scale_and_filters_are_htk_triangles():
    assert hz_to_mel(torch.tensor(1000.0)).item() == pytest.approx(999.99, abs=0.01)
    filters = mel_filters(400, 16000, 10, 0.0, 8000.0)
    assert filters.shape == (10, 201) and filters.min() >= 0 and filters.max() <= 1
    points = mel_points(10, 0.0, 8000.0)
    freqs = torch.linspace(0, 8000, 201, dtype=torch.float64)
    for m in range(10):  # non-zero strictly between its two edges only, rising then falling
        inside = (freqs > points[m]) & (freqs < points[m + 2])
        assert bool((filters[m][~inside] == 0).all()) and bool((filters[m][inside] > 0).all())
        peak = int(filters[m].argmax())
        assert abs(freqs[peak] - points[m + 1]) <= 40  # the bin nearest its centre (40 Hz bins)


def test_an_odd_window_reads_the_bins_at_their_true_frequencies():
    """n_fft 551 (22050 Hz, 25 ms): bin k is at k · 22050 / 551, the last at 11005 Hz, not
    spread to 11025 Hz (features up to 0.46 off a direct computation; outside review)."""
    filters = mel_filters(551, 22050, 40, 0.0, 11025.0)
    freqs = np.fft.rfftfreq(551, 1 / 22050)
    points = mel_points(40, 0.0, 11025.0).numpy()
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    expected = np.clip(np.minimum((freqs - lower) / (centre - lower),
                                  (upper - freqs) / (upper - centre)), 0, None)  # fmt: skip
    np.testing.assert_allclose(filters.numpy(), expected, atol=1e-6)
    even = mel_filters(400, 16000, 10, 0.0, 8000.0)  # an even window: the bins were right
    spread = torch.linspace(0, 8000, 201, dtype=torch.float64)
    assert np.allclose(np.fft.rfftfreq(400, 1 / 16000), spread.numpy()) and even.shape[1] == 201


@pytest.mark.parametrize("hz", [250.0, 700.0, 1500.0, 3100.0, 6000.0])
def test_a_sine_peaks_in_the_mel_filter_centred_nearest_its_frequency(hz):
    mel = LogMel(16000, n_mels=40, normalize=False)
    features, mask = mel(_sine(hz, 8000, 16000)[None])
    centres = mel_points(40, 0.0, 8000.0)[1:-1]
    assert int(features[0][mask[0]].mean(0).argmax()) == int((centres - hz).abs().argmin())


def test_frames_are_real_when_their_centre_is_a_real_sample():
    mel = LogMel(16000)  # hop 160, window 400
    x = torch.randn(5, 1600)
    for row, length in enumerate([1600, 1000, 161, 160, 1]):
        x[row, length:] = float("nan")
    features, mask = mel(x)
    assert features.shape == (5, 11, 64)  # frames centred on 0, 160, ..., 1600
    assert mask.sum(1).tolist() == [10, 7, 2, 1, 1]  # ceil(samples / 160)
    assert bool((features[~mask] == 0).all())
    real = features[0][mask[0]]  # each mel bin standardised over the real frames
    torch.testing.assert_close(real.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(real.var(0, unbiased=False), torch.ones(64), atol=1e-3, rtol=0)


def test_an_utterance_alone_or_padded_in_a_batch_gives_the_same_outputs():
    torch.manual_seed(0)
    encoder = build_encoder("audio", InputShape((4000,), sample_rate=8000), **SMALL).eval()
    utterance = torch.randn(2333)
    batch = torch.randn(3, 4000)
    batch[1, 2333:] = float("nan")
    batch[1, :2333] = utterance
    batch[2, 1000:] = float("nan")
    with torch.no_grad():
        alone, padded = encoder(utterance[None]), encoder(batch)
    real = int(alone[0, :, -1].sum())
    assert real == 8  # ceil(2333 / 80) = 30 frames → 15 → 8
    assert padded[1, :, -1].tolist() == [1.0] * real + [0.0] * (padded.shape[1] - real)
    torch.testing.assert_close(padded[1, :real], alone[0, :real], atol=1e-5, rtol=1e-4)
    assert bool((padded[1, real:] == 0).all())


def test_declared_features_and_sizes_match_the_output():
    encoder = build_encoder("audio", InputShape((16000,), sample_rate=16000), **SMALL)
    assert isinstance(encoder, AudioEncoder)
    assert encoder.features.sequence and encoder.features.channels == 16
    assert encoder.features.stride == 640  # hop 160 × 4
    for samples in (16000, 640, 700, 1):
        out = encoder(torch.randn(2, samples))
        assert out.shape[-1] == 17
        assert out.numel() // 2 == encoder.output_numel((samples,))
    assert ENCODERS["audio"] is not None
    assert set(encoder_params("audio")) == {
        "sample_rate", "n_mels", "window_ms", "hop_ms", "f_min", "f_max", "width", "depth",
        "heads", "mlp_ratio", "dropout",
    }  # fmt: skip


def test_a_row_without_samples_stays_finite_and_gets_no_gradient_nan():
    encoder = build_encoder("audio", (800,), sample_rate=8000, **SMALL)
    x = torch.randn(2, 800)
    x[1] = float("nan")
    out = encoder(x)
    assert out[1, :, -1].sum() == 0 and bool((out[1] == 0).all())
    out[..., :-1].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_refusals_say_what_to_do():
    with pytest.raises(ValueError, match=r"needs the waveforms' sample rate: pass .*InputShape"):
        build_encoder("audio", (16000,))
    with pytest.raises(ValueError, match="sample_rate 8000 differs from the data's 16000 Hz"):
        build_encoder("audio", InputShape((16000,), sample_rate=16000), sample_rate=8000)
    with pytest.raises(ValueError, match=r"input_shape must be \(samples,\)"):
        build_encoder("audio", InputShape((3, 16, 16)), sample_rate=8000)
    with pytest.raises(ValueError, match="width 18 must be a multiple of heads 4"):
        build_encoder("audio", (800,), sample_rate=8000, width=18)
    with pytest.raises(ValueError, match=r"mel filters .* fall between two FFT bins"):
        build_encoder("audio", (800,), sample_rate=8000, n_mels=128, window_ms=10)
    with pytest.raises(ValueError, match="f_min < f_max <= 4000 Hz"):
        build_encoder("audio", (800,), sample_rate=8000, f_max=5000.0)
    encoder = build_encoder("audio", (800,), sample_rate=8000, **SMALL)
    with pytest.raises(ValueError, match=r"float waveforms of shape \(N, samples\).*\(2, 1, 800\)"):
        encoder(torch.randn(2, 1, 800))
    with pytest.raises(ValueError, match=r"got torch.int64 of shape \(2, 800\)"):
        encoder(torch.zeros(2, 800, dtype=torch.long))


def test_hard_sharing_on_audio_builds_sequence_heads():
    tasks = [Task("speech", "ctc", num_classes=5), Task("speaker", "multiclass", num_classes=3)]
    model = build_model(
        "hard_sharing", InputShape((1600,), sample_rate=8000), tasks, encoder="audio",
        encoder_params=SMALL, seed=0,
    )  # fmt: skip
    x = torch.randn(4, 1600)
    x[2, 900:] = float("nan")
    out = model(x)
    assert out["speech"].shape == (4, 6, 6) and out["speaker"].shape == (4, 3)
    assert out["speech"][:, :, -1].sum(1).tolist() == [5, 5, 3, 5]
