"""Synthetic speech for the speech example: short spoken commands with their transcript, a
speaking style and the voice that said them.

The utterances are synthesised locally by the espeak-ng program (`apt-get install espeak-ng`;
nothing is downloaded): 2 to 4 words from a 41-word vocabulary (`SPEECH_WORDS`: digits, colours,
commands, objects), each said by one of six voices (`SPEECH_VOICES`: American, British,
Scottish and Caribbean English, male and female variants) at one of three speaking rates
(`SPEECH_STYLES`: slow, normal, fast). Pitch and loudness vary at random within every voice and
every style has as many 2-, 3- and 4-word clips as the others, so neither a voice's pitch nor
the clip's length gives the style away on its own. Styles, voices and word counts are balanced
(every combination equally often); every transcript is used once, so the splits share none.

espeak-ng writes 16-bit mono WAV files at 22050 Hz; the same arguments give the same clip, so a
seed gives the same folder (but for the breath noise of some voices, which espeak-ng has been
seen to draw otherwise on a loaded machine). Synthesis runs a few espeak-ng processes at a time.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polytask.data._builder_files import check_count, prepare_folder, stem_width, write_csv

SPEECH_COLUMNS = ("audio", "transcript", "style", "voice", "split")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOURS = ("red", "green", "blue", "yellow", "black", "white", "orange", "purple")
COMMANDS = (
    "go", "stop", "left", "right", "up", "down", "yes", "no", "on", "off", "open", "close",
    "start", "play", "pause", "next", "back",
)  # fmt: skip
OBJECTS = ("door", "light", "music", "window", "lamp", "radio")
SPEECH_WORDS = (*DIGITS, *COLOURS, *COMMANDS, *OBJECTS)
# Word patterns by length: C command, K colour, O object, D digit.
PATTERNS = {
    2: ("CO", "CD", "KO", "DD", "CK", "OD", "KD"),
    3: ("CKO", "COD", "DDD", "KOD", "CDD"),
    4: ("CKOD", "CDDD", "DDKO", "COCO", "KODD"),
}
_SLOTS = {"C": COMMANDS, "K": COLOURS, "O": OBJECTS, "D": DIGITS}
SPEECH_VOICES = ("en-us+m3", "en-us+f2", "en-gb+m1", "en-gb+f4", "en-gb-scotland+m7", "en-029+f1")
SPEECH_STYLES = ("slow", "normal", "fast")
RATES = {"slow": 140, "normal": 165, "fast": 195}  # words per minute, each ± RATE_JITTER
RATE_JITTER = 0.05
PITCH = (30, 70)  # espeak-ng's 0-99 pitch scale, drawn per utterance
AMPLITUDE = (70, 130)  # espeak-ng's loudness (100 normal), drawn per utterance
SAMPLE_RATE = 22050  # what espeak-ng writes


def espeak_program() -> str:
    """The espeak-ng program's path, or a RuntimeError that says how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError(
            "make_speech synthesises speech with the espeak-ng program, which is not on PATH: "
            "install it (Debian / Ubuntu: apt-get install espeak-ng; macOS: brew install "
            "espeak-ng; Windows: the installer at github.com/espeak-ng/espeak-ng/releases)"
        )
    return path


@dataclass(frozen=True)
class Utterance:
    """One clip to synthesise: its words, label classes and espeak-ng settings."""

    transcript: str
    style: str
    voice: str
    rate: int
    pitch: int
    amplitude: int

    def command(self, program: str, path: Path) -> list[str]:
        """The espeak-ng command line that writes this clip to `path`."""
        settings = ["-v", self.voice, "-s", str(self.rate), "-p", str(self.pitch)]
        return [program, *settings, "-a", str(self.amplitude), "-w", str(path), self.transcript]


def transcripts(count: int) -> list[str]:
    """Every transcript of `count` words (2-4) that the patterns allow, sorted."""
    found: set[str] = set()
    for pattern in PATTERNS[count]:
        out = {""}
        for slot in pattern:
            out = {f"{head} {word}".strip() for head in out for word in _SLOTS[slot]}
        found |= out
    return sorted(found)


def plan_utterances(n: int, seed: int) -> list[Utterance]:
    """`n` utterances whose style, voice and word count cycle so that every combination comes
    equally often (row i: style i mod 3, voice (i + i // 6) mod 6, 2 + (i // 18) mod 3 words);
    distinct transcripts drawn at random for each word count; random pitch, loudness and rate
    within the style."""
    rng = np.random.default_rng(seed)
    styles, voices = len(SPEECH_STYLES), len(SPEECH_VOICES)
    block = styles * voices
    counts = [2 + (i // block) % 3 for i in range(n)]
    drawn: dict[int, list[str]] = {}
    for count in (2, 3, 4):
        options, needed = transcripts(count), counts.count(count)
        if needed > len(options):
            raise ValueError(
                f"{n} utterances need {needed} distinct {count}-word transcripts but the "
                f"vocabulary gives {len(options)}: ask for at most {3 * len(options)} utterances"
            )
        picked = rng.choice(len(options), size=needed, replace=False)
        drawn[count] = [options[int(k)] for k in picked]
    out: list[Utterance] = []
    for i, count in enumerate(counts):
        style = SPEECH_STYLES[i % styles]
        voice = SPEECH_VOICES[(i + i // voices) % voices]
        rate = round(RATES[style] * (1 + rng.uniform(-RATE_JITTER, RATE_JITTER)))
        pitch = int(rng.integers(PITCH[0], PITCH[1] + 1))
        amplitude = int(rng.integers(AMPLITUDE[0], AMPLITUDE[1] + 1))
        out.append(Utterance(drawn[count].pop(), style, voice, rate, pitch, amplitude))
    return out


def _split_names(n: int, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Each row's split (train / val / test) by a seeded shuffle."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
            "and sum to less than 1"
        )
    order = np.random.default_rng([seed, 1]).permutation(n)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    names = ["train"] * n
    for k, row in enumerate(order[: n_test + n_val]):
        names[int(row)] = "test" if k < n_test else "val"
    return names


def _synthesise(program: str, utterance: Utterance, path: Path) -> None:
    """Run espeak-ng for one clip; a failure names the command and what espeak-ng said."""
    done = subprocess.run(utterance.command(program, path), capture_output=True, check=False)
    if done.returncode != 0 or not path.is_file():
        said = done.stderr.decode(errors="replace").strip()
        raise RuntimeError(
            f"espeak-ng failed ({done.returncode}) on {' '.join(utterance.command(program, path))}"
            f": {said or 'no message'}"
        )


def make_speech(
    out_dir: str | Path,
    utterances: int = 1500,
    seed: int = 0,
    workers: int = 2,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Path:
    """Synthesise `utterances` clips under `out_dir`: `wav/*.wav` (mono, 22050 Hz) and
    `manifest.csv` with the columns of `SPEECH_COLUMNS` (audio: the WAV's path relative to
    the manifest; transcript: lower-case words; style: slow / normal / fast; voice: the
    espeak-ng voice; split: train / val / test). `workers` espeak-ng processes run at a time.
    Returns the manifest's path."""
    check_count("utterances", utterances, 1)
    check_count("workers", workers, 1)
    program = espeak_program()
    splits = _split_names(utterances, val_fraction, test_fraction, seed)
    plan = plan_utterances(utterances, seed)
    out = prepare_folder(out_dir, ["wav"])
    width = stem_width(utterances)
    paths = [f"wav/{i:0{width}d}.wav" for i in range(utterances)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = [
            pool.submit(_synthesise, program, u, out / p) for u, p in zip(plan, paths, strict=True)
        ]
        for job in jobs:
            job.result()
    rows = [
        [path, u.transcript, u.style, u.voice, split]
        for path, u, split in zip(paths, plan, splits, strict=True)
    ]
    manifest = out / "manifest.csv"
    write_csv(manifest, SPEECH_COLUMNS, rows)
    return manifest
