"""The text and speech examples (examples/text, examples/speech): their scripts, and each
config trained on a tiny slice of its data, made by the example's own builder, beating chance
on every task."""

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(path: Path) -> ModuleType:
    """An example script imported as a module (its main() not run)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ravdess_manifest_lists_speech_files_by_actor(tmp_path, capsys):
    root = tmp_path / "ravdess"
    names = {
        "Actor_01": [
            "03-01-01-01-01-01-01.wav",
            "03-01-06-02-02-02-01.wav",
            "01-01-01-01-01-01-01.mp4",
        ],
        "Actor_20": ["03-01-05-01-01-01-20.wav", "03-02-05-01-01-01-20.wav"],  # a song: left out
        "Actor_22": ["03-01-08-02-02-01-22.wav", "notes.wav"],
    }
    for folder, files in names.items():
        (root / folder).mkdir(parents=True)
        for name in files:
            (root / folder / name).write_bytes(b"")
    script = _script(ROOT / "examples" / "speech" / "ravdess_manifest.py")
    script.main([str(root), "--out", str(tmp_path / "manifest.csv")])
    assert "4 files" in capsys.readouterr().out
    with (tmp_path / "manifest.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["audio", "transcript", "style", "voice", "split", "intensity", "sex"],
        ["ravdess/Actor_01/03-01-01-01-01-01-01.wav", "kids are talking by the door", "neutral",
         "actor_01", "train", "normal", "male"],
        ["ravdess/Actor_01/03-01-06-02-02-02-01.wav", "dogs are sitting by the door", "fearful",
         "actor_01", "train", "strong", "male"],
        ["ravdess/Actor_20/03-01-05-01-01-01-20.wav", "kids are talking by the door", "angry",
         "actor_20", "val", "normal", "female"],
        ["ravdess/Actor_22/03-01-08-02-02-01-22.wav", "dogs are sitting by the door",
         "surprised", "actor_22", "test", "strong", "female"],
    ]  # fmt: skip
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no RAVDESS audio-only speech files"):
        script.main([str(tmp_path / "empty")])
