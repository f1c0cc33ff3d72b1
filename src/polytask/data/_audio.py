"""Audio data: rows of a manifest (CSV or JSON lines: an audio path column, relative to the
manifest's folder or `root`, and one column per task), each file read from disk when a batch
needs it, never all held in memory.

Files: WAV (PCM, 8/16/24/32-bit, any number of channels) is read with the standard library's
`wave`; other formats (FLAC, OGG, float WAV, ...) with `soundfile` when it is installed. Every
file becomes a mono float32 waveform in [-1, 1] (channels averaged), resampled to the
encoding's `sample_rate` by windowed-sinc interpolation (a polyphase filter bank applied with
a strided convolution, as torchaudio's default `sinc_interp_hann`; zero-phase, so a tone keeps
its frequency and timing) and cut to `max_seconds` (`too_long`: truncate, or refuse).

`AudioEncoding` is the audio counterpart of `ImageEncoding` and `TextEncoding`: each task's
`TargetFit` learnt from the training rows (sequence-level tasks from the table, sequential ones
such as `ctc` from their transcripts through `TaskKind.fit_text`), saved with a model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from polytask.data._sequences import (
    SequenceInputs,
    SequenceSource,
    check_columns,
    fit_error,
    missing_cell,
    report_too_long,
    row_where,
)
from polytask.data._text import TooLong, fits_from_dict, fits_to_dict
from polytask.tasks._columns import DataError, DataWarning, json_scalar, more_rows
from polytask.tasks._kinds import TargetFit, TextRow
from polytask.tasks._task import Task

if TYPE_CHECKING:
    from polytask.models.encoders import InputShape

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
"""The files a folder of audio lists to predict on (WAV always readable; others through
soundfile)."""

CONVERT = (
    "convert it to PCM WAV (e.g. ffmpeg -i IN -ac 1 -ar 16000 OUT.wav) or pip install soundfile"
)


def _soundfile() -> Any:
    try:
        import soundfile  # type: ignore[import-not-found]
    except ImportError:
        return None
    return soundfile


def _pcm(frames: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved PCM bytes of `width` bytes a sample → (frames, channels) in [-1, 1]."""
    if width == 1:  # 8-bit WAV is unsigned
        values = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        values = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        packed = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        values = ((packed << 8) >> 8).astype(np.float32) / 8388608.0  # sign-extend 24 bits
    elif width == 4:
        values = (np.frombuffer(frames, dtype="<i4").astype(np.float64) / 2147483648.0).astype(
            np.float32
        )
    else:
        raise DataError(f"{8 * width}-bit PCM is not supported; {CONVERT}")
    return values[: len(values) // channels * channels].reshape(-1, channels)


def _mono(samples: np.ndarray, path: Path) -> Tensor:
    """(frames, channels) → their average as float32, with a warning when the channels
    cancel out (opposite phase: the average is near silence though the channels are not)."""
    mono = samples.mean(axis=1, dtype=np.float64)
    if samples.shape[1] > 1 and samples.size:
        loud = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
        if loud > 1e-3 and float(np.sqrt(np.mean(np.square(mono)))) < 0.05 * loud:
            warnings.warn(
                f"{path}: its {samples.shape[1]} channels cancel out when averaged to mono "
                "(one in opposite phase?), leaving near silence: save one channel, or a "
                "mono mix made with one channel's phase inverted",
                DataWarning,
                stacklevel=3,
            )
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


def _wav_problem(path: Path, err: Exception) -> str:
    """Why `path` is not read as PCM WAV, in words."""
    try:
        with path.open("rb") as file:
            head = file.read(12)
    except OSError:
        return str(err) or "unreadable"
    if head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        return "not a WAV file: no RIFF/WAVE header"
    return str(err) or "the file ends inside its header"


def read_wav(path: str | Path) -> tuple[Tensor, int]:
    """The audio file at `path` as a mono float32 waveform in [-1, 1] (channels averaged) and
    its sample rate: PCM WAV with the standard library, other formats with soundfile when
    installed. A file that is missing or cannot be read raises DataError saying why."""
    path = Path(path)
    if not path.is_file():
        raise DataError("audio file not found" + (" (a folder)" if path.is_dir() else ""))
    try:
        with wave.open(str(path), "rb") as file:
            width, channels = file.getsampwidth(), file.getnchannels()
            announced = file.getnframes()
            rate, frames = file.getframerate(), file.readframes(announced)
        _check_rate(rate)
        frame = width * channels
        if len(frames) % frame:  # a sample cut in two: the file was cut off mid-write
            raise DataError(_cut_mid_sample(len(frames), frame))
        if len(frames) < announced * frame and announced < STREAMED // frame:
            warnings.warn(
                f"{path}: the audio file holds {len(frames) // frame} of the {announced} frames "
                "its header announces (cut off?): read as it is",
                DataWarning,
                stacklevel=2,
            )
        return _mono(_pcm(frames, width, channels), path), rate
    except (wave.Error, EOFError) as err:
        problem = _wav_problem(path, err)
    except OSError as err:
        raise DataError(f"cannot read the audio file: {err.strerror or err}") from None
    soundfile = _soundfile()
    if soundfile is None:
        raise DataError(f"cannot read the audio file as PCM WAV ({problem}): {CONVERT}")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile's LibsndfileError and friends
        raise DataError(f"cannot read the audio file: {err}") from None
    if not np.isfinite(data).all():  # NaN would read as padding, inf make every output NaN
        bad = int((~np.isfinite(data)).any(axis=1).sum())
        raise DataError(f"the audio file holds {bad} NaN or infinite samples: fix or re-export it")
    return _mono(data, path), int(rate)


def audio_info(path: str | Path) -> tuple[int, int]:
    """(frames, sample rate) of the audio file at `path`, from its header (DataError as
    `read_wav`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("audio file not found" + (" (a folder)" if path.is_dir() else ""))
    try:
        with wave.open(str(path), "rb") as file:
            if file.getsampwidth() not in (1, 2, 3, 4):
                raise wave.Error(f"{8 * file.getsampwidth()}-bit samples")
            _check_rate(file.getframerate())
            frame = file.getsampwidth() * file.getnchannels()
            # a WAV written to a pipe (ffmpeg to stdout) says 2^32 bytes: the file holds the
            # bytes after its data chunk's header (a whole number of frames unless cut off)
            chunk = getattr(file, "_data_chunk", None)  # the stdlib's, since Python 2
            start = chunk.offset + 8 if chunk is not None else 44
            held = path.stat().st_size - start
            if held < file.getnframes() * frame and held % frame:
                raise DataError(_cut_mid_sample(held, frame))
            return min(file.getnframes(), held // frame), file.getframerate()
    except (wave.Error, EOFError) as err:
        problem = _wav_problem(path, err)
    except OSError as err:
        raise DataError(f"cannot read the audio file: {err.strerror or err}") from None
    soundfile = _soundfile()
    if soundfile is None:
        raise DataError(f"cannot read the audio file as PCM WAV ({problem}): {CONVERT}")
    try:
        info = soundfile.info(str(path))
    except Exception as err:
        raise DataError(f"cannot read the audio file: {err}") from None
    _check_rate(int(info.samplerate))
    return int(info.frames), int(info.samplerate)


STREAMED = 0xFFFFFFFF
"""The data size a WAV written to a pipe announces (its writer could not seek back)."""


def _check_rate(rate: int) -> None:
    if rate < 1:
        raise DataError(
            f"the audio file's header gives a sample rate of {rate}: export it again with its "
            "real rate, or leave it out"
        )


def _cut_mid_sample(size: int, frame: int) -> str:
    return (
        f"the audio file is cut off mid-sample ({size} bytes of samples, not a whole number "
        f"of {frame}-byte frames): export it again, or leave it out"
    )


def resampled_length(frames: int, rate: int, new_rate: int) -> int:
    """Samples of `frames` samples at `rate` resampled to `new_rate` (rounded up)."""
    if rate == new_rate:
        return frames
    g = math.gcd(rate, new_rate)
    return -(-frames * (new_rate // g) // (rate // g))


BANK_FLOATS = 1 << 22
"""The largest polyphase filter bank `resample` builds (16 MB): rates whose ratio reduces to
large numbers (22254 → 16000 Hz: 8000 filters of 11,145 taps, 357 MB, and several times that
while it is built) are resampled by SciPy's `resample_poly` instead, which filters without one."""


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, zeros: int, rolloff: float) -> tuple[Tensor, int]:
    """The polyphase filter bank (new, 1, taps) of a Hann-windowed sinc low-pass at `rolloff`
    × the lower Nyquist frequency, `zeros` zero crossings each side; and its half-width.
    Cached: every batch of every epoch resamples with the same few banks (read-only)."""
    base = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base).clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, 1.0, t))
    return (sinc * window * base / orig).float(), width


def resample(
    waveform: Tensor, rate: int, new_rate: int, zeros: int = 6, rolloff: float = 0.99
) -> Tensor:
    """`waveform` (..., S) at `rate` at `new_rate`: windowed-sinc interpolation, polyphase
    (one filter per output phase, applied by a convolution of stride rate / gcd), with a
    low-pass at `rolloff` × the lower Nyquist frequency against aliasing (SciPy's
    `resample_poly` where the bank would exceed `BANK_FLOATS`); the output has
    `resampled_length` samples."""
    if rate == new_rate:
        return waveform
    if rate < 1 or new_rate < 1:
        raise ValueError(f"sample rates must be positive, got {rate} and {new_rate}")
    g = math.gcd(rate, new_rate)
    orig, new = rate // g, new_rate // g
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1]).float()
    width = math.ceil(zeros * orig / (min(orig, new) * rolloff))
    if new * (2 * width + orig) > BANK_FLOATS:  # rates with a small gcd (22254 → 16000 Hz)
        from scipy.signal import resample_poly

        done = resample_poly(flat.cpu().double().numpy(), new, orig, axis=-1)
        out = torch.from_numpy(done).float().to(flat.device)
        out = out[:, : resampled_length(shape[-1], rate, new_rate)]
        return out.reshape(*shape[:-1], out.shape[-1])
    kernel, width = _sinc_kernel(orig, new, zeros, rolloff)
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel.to(flat.device), stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    out = out[:, : resampled_length(shape[-1], rate, new_rate)]
    return out.reshape(*shape[:-1], out.shape[-1])


def audio_paths(
    frame: pd.DataFrame, column: str, base: Path, where: str, labels: Sequence[Any]
) -> tuple[list[str], list[str]]:
    """Each row's audio path (relative ones under `base`) and its cell as written; an empty
    cell or a missing file is refused, naming the first such row and how many there are."""
    check_columns(frame, [column], "audio path column", where)
    paths: list[str] = []
    names: list[str] = []
    bad: list[tuple[Any, str | None, str]] = []
    for label, cell in zip(labels, frame[column].tolist(), strict=True):
        name = "" if missing_cell(cell) else str(cell).strip()
        path = base / name
        if not name:
            bad.append((label, None, f"no audio path in column {column!r}"))
        elif not path.is_file():
            shown = "" if Path(name).is_absolute() else f" ({path})"
            what = "is a folder, not an audio file" if path.is_dir() else "audio file not found"
            bad.append((label, name, f"{what}{shown}"))
        paths.append(str(path))
        names.append(name)
    if bad:
        label, file, what = bad[0]
        more = more_rows(len(bad) - 1)
        raise DataError(f"{row_where(where, label, file)}: {what}{more}")
    return paths, names


class AudioInputs(SequenceInputs):
    """The audio files of a manifest's rows, read (and resampled, and cut to `max_length`
    samples) when a batch needs them; their lengths come from the files' headers."""

    modality = "audio"

    def __init__(
        self,
        paths: Sequence[str],
        names: Sequence[str],
        labels: Sequence[Any],
        sample_rate: int,
        max_length: int,
        where: str,
    ) -> None:
        self.paths, self.names, self.labels = list(paths), list(names), list(labels)
        self.sample_rate, self.max_length, self.where = sample_rate, max_length, where
        full = []
        for i, path in enumerate(self.paths):
            frames, rate = self._checked(i, audio_info, path)
            if not frames:  # nothing to hear: every output would be a guess
                raise DataError(
                    f"{row_where(where, self.labels[i], self.names[i])}: the audio is empty (0 "
                    "samples): give the row its recording, or drop the row"
                )
            full.append(resampled_length(frames, rate, sample_rate))
        self.full_lengths = np.array(full, dtype=np.int64)
        """Each file's length in samples at `sample_rate`, before truncation."""
        self.lengths = np.minimum(self.full_lengths, max_length)

    def _checked(self, row: int, read: Any, path: str) -> Any:
        try:
            return read(path)
        except DataError as err:
            raise DataError(
                f"{row_where(self.where, self.labels[row], self.names[row])}: {err}"
            ) from None

    def waveform(self, row: int) -> Tensor:
        """Row `row`'s waveform at the encoding's rate, cut to `max_length` samples."""
        samples, rate = self._checked(row, read_wav, self.paths[row])
        return resample(samples, rate, self.sample_rate)[: self.max_length]

    def batch(self, rows: Sequence[int]) -> Tensor:
        waves = [self.waveform(row) for row in rows]
        x = torch.full((len(rows), max(1, max(len(w) for w in waves))), float("nan"))
        for j, w in enumerate(waves):
            x[j, : len(w)] = w
        return x

    def empty(self) -> Tensor:
        return torch.zeros((0, 1))

    def text_row(self, row: int) -> TextRow:
        return TextRow([], [], [])

    def target_row(self, row: int, cell: Any) -> TextRow:
        """An audio row has no tokens; its words are the transcript's (`cell`)."""
        words = cell.split() if isinstance(cell, str) else []
        return TextRow([], [], words)


@dataclass(frozen=True)
class AudioEncoding:
    """How audio and targets are encoded, saved with a model: waveforms at `sample_rate`, at
    most `max_seconds` long (`too_long`: truncate or refuse longer files), read from the
    manifest's `audio_column`; each task's `TargetFit` in `fits`."""

    fits: Mapping[str, TargetFit]
    sample_rate: int = 16000
    max_seconds: float = 30.0
    too_long: TooLong = "truncate"
    audio_column: str = "audio"

    def __post_init__(self) -> None:
        if self.sample_rate < 1:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.too_long not in ("truncate", "refuse"):
            raise ValueError(f"too_long must be truncate or refuse, got {self.too_long!r}")

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        tasks: Sequence[Task],
        sample_rate: int = 16000,
        max_seconds: float = 30.0,
        too_long: TooLong = "truncate",
        audio_column: str = "audio",
        where: str | None = None,
    ) -> AudioEncoding:
        """Each task's targets fitted on the training rows `frame` by its kind (sequence-level
        tasks from the table, sequential ones such as transcripts from their cells)."""
        where = where or "the audio manifest"
        check_columns(frame, [audio_column], "audio path column", where)
        fits = {}
        for task in tasks:
            kind = task.kind_spec
            if kind.derives_targets:
                continue
            if kind.cut_with_input:  # a target per word of a text: audio has no words
                raise DataError(
                    f"task {task.name!r} ({task.kind}) gives a target per word of a text, and "
                    f"{where} holds audio: tag words with text data (data.text), or predict "
                    "a class or value per file (sequence, multiclass, regression) or a transcript "
                    "(ctc)"
                )
            check_columns(frame, task.target_columns, f"task {task.name!r}: target columns",
                          where)  # fmt: skip
            try:
                if kind.sequential:
                    cells = frame[task.target_columns[0]].tolist()
                    fits[task.name] = kind.fit_text(
                        task, [None if missing_cell(c, blank=False) else c for c in cells]
                    )
                else:
                    fits[task.name] = task.fit_target(frame)
            except ValueError as err:
                labels = [json_scalar(v) for v in frame.index]
                raise fit_error(err, task, where, labels) from None
        return cls(fits, sample_rate, max_seconds, too_long, audio_column)

    @property
    def max_samples(self) -> int:
        """The longest input, in samples."""
        return max(1, round(self.max_seconds * self.sample_rate))

    @property
    def input_shape(self) -> tuple[int]:
        return (self.max_samples,)

    @property
    def model_input(self) -> InputShape:
        """What an architecture builder is given: `InputShape((max_samples,), sample_rate=R)`."""
        from polytask.models.encoders import InputShape

        return InputShape(self.input_shape, sample_rate=self.sample_rate)

    def target_fit(self, task: Task) -> TargetFit:
        """What fitting learned about `task`'s targets."""
        return dataclasses.replace(self.fits.get(task.name, TargetFit()), inputs=self.max_samples)

    def resolve_tasks(self, tasks: Sequence[Task]) -> list[Task]:
        """Fill in what the training data settle (e.g. `num_classes`)."""
        return [t.kind_spec.resolve(t, self.target_fit(t)) for t in tasks]

    def source(
        self,
        frame: pd.DataFrame,
        base: str | Path | None = None,
        tasks: Sequence[Task] = (),
        *,
        where: str | None = None,
        batch_size: int = 32,
        bucket: bool = False,
        bucket_size: int | None = None,
        split: str | None = None,
    ) -> SequenceSource:
        """The rows of manifest `frame` (audio paths relative to `base`) with `tasks`' targets
        (none: inputs only); every file is checked (its header read) now, and read whole when
        a batch needs it. `where` names the manifest in messages, `split` the part in the
        warning about cut files; `batch_size`, `bucket`, `bucket_size`: `SequenceSource`."""
        where = where or "the audio manifest"
        labels = [json_scalar(v) for v in frame.index]
        folder = Path(base) if base is not None else Path()
        paths, names = audio_paths(frame, self.audio_column, folder, where, labels)
        inputs = AudioInputs(paths, names, labels, self.sample_rate, self.max_samples, where)
        report_too_long(
            where, labels, inputs.full_lengths, self.max_samples, self.too_long,
            f"samples at {self.sample_rate} Hz", "cut the file or raise data.audio.max_seconds",
            split, names, tasks,
        )  # fmt: skip
        return SequenceSource(
            inputs, frame, tasks, self.target_fit, where, batch_size=batch_size, bucket=bucket,
            bucket_size=bucket_size,
        )  # fmt: skip

    def read(self, path: str | Path) -> tuple[pd.DataFrame, Path]:
        """New rows to predict on: a manifest (CSV or JSON lines; paths relative to its
        folder), or a folder of audio files (in it and its sub-folders, as for images, sorted
        by path); and the folder paths are relative to."""
        from polytask.data._readers import read_table

        path = Path(path)
        if path.is_dir():
            files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)  # fmt: skip
            if not files:
                raise DataError(f"folder {path} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            return pd.DataFrame({self.audio_column: files}), path
        return read_table(path), path.parent

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, saved in a model's checkpoint (`kind: audio`)."""
        return {
            "kind": "audio",
            "sample_rate": self.sample_rate,
            "max_seconds": self.max_seconds,
            "too_long": self.too_long,
            "audio_column": self.audio_column,
            "targets": fits_to_dict(self.fits),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AudioEncoding:
        return cls(
            fits=fits_from_dict(d["targets"]),
            sample_rate=int(d["sample_rate"]),
            max_seconds=float(d["max_seconds"]),
            too_long=d.get("too_long", "truncate"),
            audio_column=d.get("audio_column", "audio"),
        )
