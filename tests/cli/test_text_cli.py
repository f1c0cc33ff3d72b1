"""Text and audio data from config: train, compare and predict from the command line, a saved
model (its tokenizer included) reproducing the trainer's outputs, per-word predictions as JSON
cells, config mistakes refused with the fix, and bad input refused with its file and row (exit
code 2, nothing written)."""

import io
import json
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from polytask.app import FittedModel, RunConfig, fit, load_prepared
from polytask.cli._config_io import load_config
from polytask.cli._main import main
from polytask.data import DataError, DataWarning
from polytask.train._checkpoint import load_checkpoint
from tests.data.sequence_kinds import sequence_kinds  # noqa: F401 (a fixture)
from tests.data.test_audio import tone, write_wav

pytestmark = pytest.mark.usefixtures("sequence_kinds")  # the test text encoder bag

GOOD, BAD = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]

CONFIG = {
    "data": {
        "text": {"path": "data/train.jsonl", "tokenizer": "word", "vocab_size": 50},
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
    },
    "tasks": [
        {"name": "mood", "kind": "multiclass"},
        {"name": "words", "kind": "regression"},
        {"name": "polarity", "kind": "token", "kind_params": {"scheme": "none"}},
        {
            "name": "length",
            "kind": "sequence",
            "target": "words",
            "kind_params": {"output": "value", "pool": "first"},
        },
    ],
    "model": {"encoder": "bag", "encoder_params": {"channels": 8}},
    "training": {"epochs": 3, "batch_size": 8, "lr": 0.05, "progress": False},
    "output_dir": "run",
}


def _texts(n: int, seed: int) -> list[dict]:
    """`n` texts of 2 to 9 words, mostly good or mostly bad; a word count and a tag per word."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        words = [rng.choice(GOOD if (rng.random() < 0.8) == good else BAD)
                 for _ in range(rng.randint(2, 9))]  # fmt: skip
        tags = ["P" if w in GOOD else "N" for w in words]
        rows.append({"text": " ".join(words), "mood": "up" if good else "down",
                     "words": float(len(words)), "polarity": tags})  # fmt: skip
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def project(tmp_path):
    _write(tmp_path / "data" / "train.jsonl", _texts(60, 0))
    new = [r["text"] for r in _texts(5, 1)]
    (tmp_path / "data" / "new.txt").write_text("\n".join(new) + "\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return tmp_path


def _config(project: Path, **changes) -> Path:
    config = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        node = config
        *path, last = dotted.split(".")
        for key in path:
            node = node[key]
        node[last] = value
    path = project / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_then_predict_from_the_saved_model_reproduces_the_trainer(project, capsys):
    config = load_config(project / "config.yaml")
    data = load_prepared(config)
    assert (len(data.train), len(data.val), len(data.test)) == (36, 12, 12)
    assert data.train.bucket and not data.test.bucket
    fitted = fit(config, data)
    path = fitted.save(project / "model.pt")
    new = pd.DataFrame({"text": (project / "data" / "new.txt").read_text().splitlines()})
    encoding = data.preprocessor
    # the new texts as the trainer's model takes them: word ids, padded by hand
    vocab = encoding.tokenizer.get_vocab()
    ids = [[1, *(vocab.get(w, 3) for w in t.split())] for t in new.text]  # [BOS] first
    x = torch.zeros((5, max(map(len, ids))), dtype=torch.long)
    for i, row in enumerate(ids):
        x[i, : len(row)] = torch.tensor(row)
    assert fitted.trainer is not None
    expected = fitted.trainer.predict(x)

    loaded = FittedModel.load(path)
    assert loaded.preprocessor.tokenizer.get_vocab() == vocab  # the tokenizer was saved
    predicted = loaded.predict(new)
    probs = np.stack([predicted["mood_prob_down"], predicted["mood_prob_up"]], 1)
    assert np.allclose(probs, expected["mood"].numpy(), atol=1e-5)
    mean, std = encoding.target_fit(data.tasks[1]).scale
    assert np.allclose(predicted["words"], expected["words"].numpy() * std + mean, atol=1e-4)
    classes = encoding.target_fit(data.tasks[2]).classes
    for i, text in enumerate(new.text):
        n = len(text.split())
        tags = [classes[c] for c in expected["polarity"][i, 1 : n + 1].argmax(-1).tolist()]
        assert predicted["polarity"][i] == tags  # one tag per word, from the word's token
    assert np.allclose(predicted["length"], expected["length"].numpy() * std + mean, atol=1e-4)

    out = project / "predictions.csv"
    args = ["-q", "predict", str(path), str(project / "data" / "new.txt"), "-o", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    written = pd.read_csv(out)
    assert list(written.columns) == [
        "mood",
        "mood_prob_down",
        "mood_prob_up",
        "words",
        "polarity",
        "length",
    ]
    assert [json.loads(cell) for cell in written["polarity"]] == list(predicted["polarity"])
    assert np.allclose(written["words"], predicted["words"], atol=1e-6)


def test_train_compare_and_predict_from_the_command_line(project, capsys):
    config = str(project / "config.yaml")
    assert main(["-q", "train", config, "--no-report"]) == 0, capsys.readouterr().err
    metrics = json.loads((project / "run" / "test_metrics.json").read_text())
    assert set(metrics) == {"mood", "words", "polarity", "length"}
    assert "token_accuracy" in metrics["polarity"] and "rmse" in metrics["length"]
    _, meta = load_checkpoint(project / "run" / "model.pt")
    assert meta["preprocessor"]["kind"] == "text" and meta["preprocessor"]["tokenizer"]
    # new rows from a JSON lines table (with an id column) to stdout
    _write(
        project / "data" / "new.jsonl", [{"id": 7, "text": "good nice"}, {"id": 8, "text": "sad"}]
    )
    model = str(project / "run" / "model.pt")
    capsys.readouterr()
    args = ["-q", "predict", model, str(project / "data" / "new.jsonl"), "--id-column", "id"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "id,mood,mood_prob_down,mood_prob_up,words,polarity,length"
    table = pd.read_csv(io.StringIO(printed))
    assert list(table["id"]) == [7, 8]
    assert [len(json.loads(cell)) for cell in table["polarity"]] == [2, 1]  # a tag per word
    out = project / "cmp"
    assert main(["-q", "compare", config, "--seeds", "1", "--out", str(out), "--no-report"]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert {key.split("/")[0] for key in result["stl_per_seed"][0]} == {
        "mood",
        "words",
        "polarity",
        "length",
    }


def test_export_refuses_a_text_model(project, capsys):
    config = load_config(_config(project, **{"training.epochs": 1}))
    fitted = fit(config, load_prepared(config))
    model = str(fitted.save(project / "model.pt"))
    assert main(["-q", "export", model, "--out", str(project / "exp")]) == 2
    err = capsys.readouterr().err
    assert "export works on models of table rows; this model reads text" in err
    assert "predict with `polytask predict`" in err
    assert main(["-q", "edit", model, "--rename", "mood=feeling"]) == 2
    err = capsys.readouterr().err  # a rename is not a prediction: no advice to predict
    assert "edit works on models of table rows" in err and "train again" in err
    assert "polytask predict" not in err


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({3: {"text": "  "}}, "data/train.jsonl, row 3: the text is empty"),
        ({5: {"polarity": ["P"]}}, "data/train.jsonl, row 5, task 'polarity': 1 tags for"),
        ({7: {"polarity": "[oops"}}, "data/train.jsonl, row 7, task 'polarity': its tags"),
    ],
)
def test_bad_rows_stop_training_naming_file_and_row(project, capsys, rows, message):
    data = _texts(60, 0)
    for i, change in rows.items():
        data[i] |= change
    _write(project / "data" / "train.jsonl", data)
    assert main(["-q", "train", str(project / "config.yaml")]) == 2
    err = capsys.readouterr().err
    assert message.replace("data/", str(project / "data") + "/") in err
    assert not (project / "run").exists()  # nothing written, not even the folder


def test_too_long_texts_are_refused_or_cut(project, capsys):
    strict = _config(project, **{"data.text.max_length": 6, "data.text.too_long": "refuse"})
    assert main(["-q", "train", str(strict)]) == 2
    err = capsys.readouterr().err
    assert f"{project / 'data' / 'train.jsonl'}, row " in err and "more than the limit of 6" in err
    cut = _config(project, **{"data.text.max_length": 6, "training.epochs": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_prepared(load_config(cut))
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(said) == 3  # one per split, each saying how many rows were cut
    assert re.search(r"train rows: \d+ of 36 rows are longer than 6 tokens", said[0])
    assert "validation rows" in said[1] and "test rows" in said[2]
    assert "metrics of" not in said[0]  # training rows are not scored
    for scored in said[1:]:  # the tag task's metrics skip the words cut off: said, once
        assert "the metrics of ['polarity'] score only the tokens kept" in scored, scored
    assert max(data.train.lengths) == 6


def test_predict_on_an_empty_line_names_file_and_row(project, capsys):
    config = load_config(_config(project, **{"training.epochs": 1}))
    model = str(fit(config, load_prepared(config)).save(project / "model.pt"))
    new = project / "data" / "new.txt"
    new.write_text("good good\n\nbad\n")
    out = project / "p.csv"
    assert main(["-q", "predict", model, str(new), "-o", str(out)]) == 2
    assert f"{new}, row 1: the text is empty" in capsys.readouterr().err
    assert not out.exists()
    (project / "data" / "new.conll").write_text("good O\nfilm O\n")
    assert main(["-q", "predict", model, str(project / "data" / "new.conll")]) == 2
    assert "a CoNLL file, but this model was trained on a table of texts: give predict a " \
        "CSV or JSON lines file with a 'text' column" in capsys.readouterr().err  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model": {"architecture": "hard_sharing"}},
            "text data need a sequence encoder: set model.encoder: transformer",
        ),
        ({"model": {"architecture": "mmoe"}}, "architecture 'mmoe' takes table rows"),
        ({"data.features": {"numeric": ["a"]}}, "text data need no features"),
        ({"data.path": "x.csv"}, r"give exactly one of path .* text .* audio .* and molecules"),
        ({"data.text.split_column": "part", "data.split": {"file": "s.npz"}}, "not both"),
        (  # the fractions would be silently unused (the default values too, when written)
            {"data.text.split_column": "part"},
            r"data.text.split_column names every row's part, so data.split's seed, "
            r"test_fraction, val_fraction would not be used: leave data.split out",
        ),
        ({"data.text.path": "data/train.txt"}, "say so with format: conll and columns"),
        ({"data.text.path": "data/train.conll"}, "a CoNLL file needs columns"),
        ({"data.text.columns": ["a"]}, "text.columns names the fields of a CoNLL file"),
        ({"data.text.too_long": "cut"}, "too_long"),
        ({"data.text.tokenizer": "sentencepiece"}, "tokenizer"),
        ({"data.text.vocab_size": 3}, "text.vocab_size must be at least 8"),
    ],
)
def test_config_mistakes_are_refused_with_the_fix(project, changes, message):
    with pytest.raises(ValueError, match=message):
        load_config(_config(project, **changes))


def test_sequential_tasks_need_text_or_audio_data():
    with pytest.raises(ValueError, match=r"tasks \['tags'\] predict per token or a sequence"):
        RunConfig(
            data={"path": "x.csv", "features": {"numeric": ["a"]}},
            tasks=[{"name": "tags", "kind": "token"}],
        )


def test_a_conll_file_trains_per_word_tags_and_predicts_them(project, capsys):
    sentences = _texts(40, 2)
    lines = ["-DOCSTART- O", ""]
    for row in sentences:
        lines += [f"{w}\t{t}" for w, t in zip(row["text"].split(), row["polarity"], strict=True)]
        lines.append("")
    (project / "data" / "train.conll").write_text("\n".join(lines))
    config = _config(
        project,
        **{"data.text": {"path": "data/train.conll", "columns": ["words", "polarity"],
                         "tokenizer": "wordpiece", "vocab_size": 60},
           "tasks": [{"name": "polarity", "kind": "token", "kind_params": {"scheme": "none"}}],
           "training.epochs": 2},
    )  # fmt: skip
    assert main(["-q", "train", str(config), "--no-report"]) == 0, capsys.readouterr().err
    new = project / "data" / "new.conll"
    new.write_text("good\tP\nbad\tN\n\nsad\tN\n")  # tags present or not: only words are read
    out = project / "p.csv"
    assert main(["-q", "predict", str(project / "run" / "model.pt"), str(new), "-o", str(out)]) == 0
    cells = [json.loads(c) for c in pd.read_csv(out)["polarity"]]
    assert [len(c) for c in cells] == [2, 1] and {t for c in cells for t in c} <= {"P", "N"}


# audio


AUDIO_CONFIG = {
    "data": {
        "audio": {"manifest": "clips/manifest.csv", "sample_rate": 8000, "max_seconds": 0.5},
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
    },
    "tasks": [
        {"name": "pitch", "kind": "multiclass"},
        {"name": "seconds", "kind": "regression"},
        {"name": "said", "kind": "ctc"},
    ],
    "model": {
        "encoder": "audio",
        "encoder_params": {"n_mels": 16, "width": 16, "depth": 1, "heads": 2, "dropout": 0.0},
    },
    "training": {"epochs": 2, "batch_size": 8, "lr": 0.05, "progress": False},
    "output_dir": "run",
}


@pytest.fixture
def audio_project(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        seconds = float(rng.uniform(0.1, 0.4))
        low = i % 2 == 0
        name = write_wav(tmp_path / "clips" / "wav" / f"{i}.wav",
                         tone(200 if low else 1500, seconds, 16000), 16000)  # fmt: skip
        rows.append({"audio": f"wav/{name}", "pitch": "low" if low else "high",
                     "seconds": seconds, "said": "lo" if low else "hi"})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "clips" / "manifest.csv", index=False)
    for i in range(3):
        write_wav(tmp_path / "new" / f"n{i}.wav", tone(200, 0.2, 22050), 22050)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(AUDIO_CONFIG))
    return tmp_path


def test_audio_trains_and_predicts_on_a_folder_of_files(audio_project, capsys):
    config = str(audio_project / "config.yaml")
    assert main(["-q", "train", config, "--no-report"]) == 0, capsys.readouterr().err
    model = str(audio_project / "run" / "model.pt")
    _, meta = load_checkpoint(model)
    assert meta["preprocessor"]["kind"] == "audio" and meta["preprocessor"]["sample_rate"] == 8000
    out = audio_project / "p.csv"
    assert main(["-q", "predict", model, str(audio_project / "new"), "-o", str(out)]) == 0
    written = pd.read_csv(out, keep_default_na=False)  # an empty transcript stays ""
    assert list(written.columns) == [
        "audio",  # a folder's rows: which file each is, by default
        "pitch",
        "pitch_prob_high",
        "pitch_prob_low",
        "seconds",
        "said",
    ]
    assert len(written) == 3 and written["pitch_prob_low"].between(0, 1).all()
    assert list(written["audio"]) == sorted(written["audio"])
    assert all(set(t) <= set("lohi") for t in written["said"])  # the training characters
    metrics = json.loads((audio_project / "run" / "test_metrics.json").read_text())
    assert "cer" in metrics["said"]


def test_an_audio_file_lost_during_training_stops_it_naming_manifest_row_and_file(
    audio_project, capsys, monkeypatch
):
    import polytask.app as app

    prepare = app.load_prepared

    def then_lose_a_file(config):
        data = prepare(config)
        train = data.train
        (audio_project / "clips" / train.inputs.names[0]).write_bytes(b"gone")
        return data

    monkeypatch.setattr(app, "load_prepared", then_lose_a_file)
    assert main(["-q", "train", str(audio_project / "config.yaml"), "--no-report"]) == 2
    err = capsys.readouterr().err
    manifest = audio_project / "clips" / "manifest.csv"
    assert f"error: {manifest}, row " in err and "(audio wav/" in err
    assert "cannot read the audio file" in err


def test_audio_config_mistakes_are_refused(audio_project):
    with pytest.raises(ValueError, match=r"audio data need a sequence encoder: set model\.encoder"):
        RunConfig(data=AUDIO_CONFIG["data"], tasks=AUDIO_CONFIG["tasks"])
    with pytest.raises(ValueError, match="sample_rate must be at least 1000"):
        RunConfig(data={"audio": {"manifest": "m.csv", "sample_rate": 10}}, tasks=[])
    with pytest.raises(DataError, match="audio file not found"):
        (audio_project / "clips" / "wav" / "4.wav").unlink()
        load_prepared(load_config(audio_project / "config.yaml"))


@pytest.mark.slow
def test_seq2seq_targets_train_the_tokenizer_and_predict_texts(project, capsys):
    rows = _texts(40, 3)
    for row in rows:  # the target: the words reversed, then a word only targets hold
        row["reply"] = " ".join([*reversed(row["text"].split()), "over"])
    _write(project / "data" / "train.jsonl", rows)
    params = {"layers": 1, "heads": 2, "max_length": 12, "dropout": 0.0}
    seq2seq = {"name": "reply", "kind": "seq2seq", "kind_params": params}
    config = load_config(_config(project, tasks=[CONFIG["tasks"][0], seq2seq],
                                 **{"training.epochs": 2}))  # fmt: skip
    data = load_prepared(config)
    encoding = data.preprocessor
    assert "over" in encoding.tokenizer.get_vocab()  # learnt from the target texts
    fit_ = encoding.target_fit(data.tasks[1])
    assert fit_.vocab == encoding.vocab_size == data.tasks[1].num_classes
    target = data.train.rows(torch.tensor([0])).targets["reply"][0].tolist()
    assert target[-1] == 2 and encoding.tokenizer.decode(target) == rows[0]["reply"]  # then EOS
    fitted = fit(config, data)
    path = fitted.save(project / "model.pt")
    new = pd.DataFrame({"text": ["good bad", "nice"]})
    predicted = FittedModel.load(path).predict(new)
    assert list(predicted["reply"]) == list(fitted.predict(new)["reply"])
    assert all(isinstance(t, str) for t in predicted["reply"])
    out = project / "p.csv"
    assert (
        main(["-q", "predict", str(path), str(project / "data" / "new.txt"), "-o", str(out)]) == 0
    )
    assert list(pd.read_csv(out).columns) == ["mood", "mood_prob_down", "mood_prob_up", "reply"]


def test_split_settings_beside_a_split_column_are_refused_in_python_too():
    with pytest.raises(ValueError, match=r"text.split_column names every row's part, so "
                                         r"split's val_fraction would not be used"):  # fmt: skip
        RunConfig(
            data={"text": {"path": "t.jsonl", "split_column": "part"},
                  "split": {"val_fraction": 0.3}},
            tasks=[{"name": "tags", "kind": "token"}],
        )  # fmt: skip


def test_tasks_made_from_a_column_beside_a_split_column_need_no_split_within():
    """Tasks of one column get split.within by default, which a split column leaves unused:
    it is not added there (else the new refusal of unused split settings would fire)."""
    tasks = [{"name": n, "kind": "binary", "target": "y", "where": {"g": g}}
             for n, g in (("a", 1), ("b", 2))]  # fmt: skip
    model = {"encoder": "transformer"}
    columned = RunConfig(data={"text": {"path": "t.jsonl", "split_column": "part"}}, tasks=tasks,
                         model=model)  # fmt: skip
    assert columned.data.split.within is None
    plain = RunConfig(data={"text": {"path": "t.jsonl"}}, tasks=tasks, model=model)
    assert plain.data.split.within == "g"
