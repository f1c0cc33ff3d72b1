"""The text and speech examples (examples/text, examples/speech): their scripts, and each
config trained on a tiny slice of its data, made by the example's own builder, beating chance
on every task."""

import csv
import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from polytask.cli._config_io import load_config
from polytask.cli._main import main
from polytask.data import make_speech, make_text_corpus

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "examples" / "text" / "text.yaml"
SPEECH = ROOT / "examples" / "speech" / "speech.yaml"


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


def test_text_and_speech_configs_validate():
    text = load_config(TEXT)
    assert text.data.text is not None and text.data.text.split_column == "split"
    assert [t.kind for t in text.tasks] == ["sequence", "token", "seq2seq"]
    speech = load_config(SPEECH)
    assert speech.data.audio is not None and speech.data.audio.sample_rate == 22050
    assert [t.kind for t in speech.tasks] == ["ctc", "multiclass", "multiclass"]


def _slice(config_path: Path, tmp_path: Path, data: Path, **training: object) -> Path:
    """The example's config on the tiny data at `data` (its corpus or manifest), trained
    briefly into tmp_path/run."""
    config = yaml.safe_load(config_path.read_text())
    part = config["data"]["text"] if "text" in config["data"] else config["data"]["audio"]
    part["path" if "text" in config["data"] else "manifest"] = str(data)
    config["training"].update(training)
    config["output_dir"] = str(tmp_path / "run")
    path = tmp_path / config_path.name
    path.write_text(yaml.safe_dump(config))
    return path


def _train(config: Path, tmp_path: Path) -> dict[str, dict[str, float]]:
    assert main(["-q", "train", str(config), "--no-report"]) == 0
    metrics: dict[str, dict[str, float]] = json.loads(
        (tmp_path / "run" / "test_metrics.json").read_text()
    )
    return metrics


@pytest.mark.slow
def test_text_slice_beats_chance_on_all_three_tasks(tmp_path):
    corpus = make_text_corpus(tmp_path / "data", rows=600, seed=0)["corpus"]
    metrics = _train(_slice(TEXT, tmp_path, corpus, epochs=10), tmp_path)
    assert metrics["sentiment"]["accuracy"] > 0.5, metrics  # chance: 1/3 (balanced classes)
    assert metrics["entities"]["span_f1"] > 0.5, metrics  # chance: about 0
    # chance: the most frequent next token ("." or "was") is right for about 1 in 10 tokens;
    # one constant output sentence of the commonest words scores chrF 0.11
    assert metrics["translation"]["token_accuracy"] > 0.3, metrics
    assert metrics["translation"]["chrf"] > 0.2, metrics


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="the speech example synthesises its clips with espeak-ng (apt-get install espeak-ng)",
)
def test_speech_slice_beats_chance_on_all_three_tasks(tmp_path):
    manifest = make_speech(tmp_path / "data", utterances=360, seed=0)
    metrics = _train(_slice(SPEECH, tmp_path, manifest, epochs=15, batch_size=16), tmp_path)
    assert metrics["transcript"]["cer"] < 0.8, metrics  # chance (no characters): 1.0
    assert metrics["style"]["accuracy"] > 0.5, metrics  # chance: 1/3 (balanced)
    assert metrics["voice"]["accuracy"] > 0.3, metrics  # chance: 1/6 (balanced)
