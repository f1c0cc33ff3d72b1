"""Write a speech manifest for a local copy of RAVDESS (no download).

RAVDESS (the Ryerson Audio-Visual Database of Emotional Speech and Song, zenodo.org/record/1188976,
CC BY-NC-SA 4.0) has one folder per actor (Actor_01 ... Actor_24) of WAV files named by seven
codes: modality-channel-emotion-intensity-statement-repetition-actor, e.g.
03-01-06-01-02-01-12.wav (audio only, speech, fearful, normal intensity, "Dogs are sitting by
the door", first take, actor 12). This script lists the audio-only speech files in the columns
of the speech example's manifest, so its config can point at it instead of the synthetic data:

- audio: the WAV's path relative to the manifest;
- transcript: the statement, in lower case without punctuation;
- style: the emotion (neutral, calm, happy, sad, angry, fearful, disgust, surprised);
- voice: the actor (actor_01 ... actor_24);
- split: by actor, so that no speaker is in two splits (default: actors 21-24 test, 19-20 val);
- intensity (normal / strong) and sex (odd actors male, even female) as extra columns.

    python examples/speech/ravdess_manifest.py PATH/TO/RAVDESS [--out manifest.csv]
        [--test-actors 21,22,23,24] [--val-actors 19,20]

RAVDESS speaks only two sentences, so the transcript task is easy there; emotion (`style`) and
speaker (`voice`, 24 classes; use a split by take instead of by actor for it) are the hard ones.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "kids are talking by the door", "02": "dogs are sitting by the door"}
COLUMNS = ("audio", "transcript", "style", "voice", "split", "intensity", "sex")


def _actors(text: str) -> set[int]:
    return {int(a) for a in text.split(",") if a.strip()}


def manifest_rows(
    root: Path, out: Path, test_actors: set[int], val_actors: set[int]
) -> list[list[str]]:
    """One row per audio-only speech file under `root` (modality 03, channel 01), sorted."""
    rows = []
    for path in sorted(root.rglob("*.wav")):
        codes = path.stem.split("-")
        if len(codes) != 7 or not all(c.isdigit() for c in codes):
            continue  # not a RAVDESS file name
        modality, channel, emotion, intensity, statement, _, actor = codes
        if modality != "03" or channel != "01":
            continue  # video files' audio tracks, songs
        number = int(actor)
        split = "test" if number in test_actors else "val" if number in val_actors else "train"
        rows.append(
            [
                Path(os.path.relpath(path, out.parent)).as_posix(),
                STATEMENTS[statement],
                EMOTIONS[emotion],
                f"actor_{number:02d}",
                split,
                INTENSITIES[intensity],
                "male" if number % 2 else "female",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and write the manifest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the RAVDESS folder (Actor_01 ... Actor_24)")
    parser.add_argument(
        "--out", type=Path, help="the manifest to write (default ROOT/manifest.csv)"
    )
    parser.add_argument("--test-actors", default="21,22,23,24", help="actors of the test split")
    parser.add_argument("--val-actors", default="19,20", help="actors of the validation split")
    args = parser.parse_args(argv)
    out = args.out or args.root / "manifest.csv"
    rows = manifest_rows(args.root, out, _actors(args.test_actors), _actors(args.val_actors))
    if not rows:
        raise SystemExit(
            f"no RAVDESS audio-only speech files (03-01-*.wav) under {args.root}: point at the "
            "folder that holds the Actor_01 ... Actor_24 folders"
        )
    with out.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(f"wrote {out} ({len(rows)} files)")


if __name__ == "__main__":
    main()
