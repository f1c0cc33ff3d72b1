"""Text streamed from disk (`data.text.stream`): the same encoding, rows, batches and training
order as the file read whole, from CSV (records over several lines), JSON lines and CoNLL
files; only the rows of a batch are read, and no text is held; bad rows are refused by file
and row as in memory. A tokenizer made elsewhere (`data.text.tokenizer: {path: DIR}`) with an
`hf` checkpoint from config."""

import dataclasses
import json
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from polytask import Task
from polytask.app import FittedModel, fit, load_prepared
from polytask.cli._config_io import load_config
from polytask.cli._main import main
from polytask.data import DataError, DataWarning
from polytask.data._text import fits_to_dict
from polytask.data._text_files import TextFile, text_file
from polytask.data._text_stream import StreamedTextSource

WORDS = ["good", "great", "bad", "awful", "the", "film", "was", "very", "not", "plot"]


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 12))]
        rows.append({
            "text": " ".join(words),
            "mood": "up" if i % 3 else "down",
            "score": None if i % 7 == 3 else float(len(words)),
            "tags": ["P" if w in ("good", "great") else "O" for w in words],
            "echo": None if i % 5 == 1 else " ".join(reversed(words)),
        })  # fmt: skip
    return rows


TASKS = [
    {"name": "mood", "kind": "multiclass"},
    {"name": "score", "kind": "regression"},
    {"name": "tags", "kind": "token", "kind_params": {"scheme": "none"}},
    {"name": "echo", "kind": "seq2seq", "kind_params": {"width": 8, "heads": 2, "layers": 1}},
]


def _write(folder: Path, fmt: str, rows: list[dict]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path = folder / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n\n")  # blank lines end
    elif fmt == "csv":
        path = folder / "rows.csv"
        table = pd.DataFrame([{**r, "tags": json.dumps(r["tags"])} for r in rows])
        # quoted cells over several lines, with quotes inside, are one record
        table.loc[4, "text"] = table.loc[4, "text"] + '\n"very"'
        table.loc[4, "tags"] = json.dumps([*json.loads(table.loc[4, "tags"]), "O"])
        table.to_csv(path, index=False)
    else:
        path = folder / "rows.conll"
        lines = ["-DOCSTART- O", ""]
        for r in rows:
            lines += [f"{w} {t}" for w, t in zip(r["text"].split(), r["tags"], strict=True)] + [""]
        path.write_text("\n".join(lines))
    return str(path)


def _config(folder: Path, fmt: str, stream: bool, rows: list[dict] | None = None, **text):  # type: ignore[no-untyped-def]
    path = _write(folder, fmt, _rows(90) if rows is None else rows)
    tasks = TASKS if fmt != "conll" else [TASKS[2]]
    spec = {"path": path, "tokenizer": "word", "vocab_size": 40, "stream": stream,
            "bucket_size": 16} | text  # fmt: skip
    if fmt == "conll":
        spec["columns"] = ["words", "tags"]
    config = {
        "data": {"text": spec, "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 1}},
        "tasks": tasks,
        "model": {"encoder": "transformer", "encoder_params": {"width": 8, "depth": 1,
                                                               "heads": 2}},
        "training": {"epochs": 1, "batch_size": 4, "progress": False},
        "output_dir": str(folder / "run"),
    }  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return load_config(folder / "config.yaml")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "conll"])
def test_a_streamed_file_gives_the_rows_and_batches_of_the_file_read_whole(tmp_path, fmt):
    whole = load_prepared(_config(tmp_path, fmt, stream=False))
    streamed = load_prepared(_config(tmp_path, fmt, stream=True))
    assert isinstance(streamed.train, StreamedTextSource)
    assert not isinstance(whole.train, StreamedTextSource)
    one, two = whole.preprocessor, streamed.preprocessor
    assert one.tokenizer_json == two.tokenizer_json and one.fits.keys() == two.fits.keys()
    assert fits_to_dict(one.fits) == fits_to_dict(two.fits)
    for part in ("train", "val", "test"):
        a, b = getattr(whole, part), getattr(streamed, part)
        assert len(a) == len(b) and np.array_equal(a.lengths, b.lengths)
        assert a.labels == b.labels and set(a.tasks) == set(b.tasks)
        assert {t: a.labelled_rows(t) for t in a.tasks} == {t: b.labelled_rows(t) for t in b.tasks}
    # the same bucketed training order, and each of its batches the same
    order_a = whole.train.order(torch.Generator().manual_seed(3))
    order_b = streamed.train.order(torch.Generator().manual_seed(3))
    assert torch.equal(order_a, order_b)
    for start in range(0, len(order_a), 4):
        index = order_a[start : start + 4]
        x, y = whole.train.rows(index), streamed.train.rows(index)
        assert torch.equal(x.x, y.x)
        assert x.targets.keys() == y.targets.keys()
        for name in x.targets:
            torch.testing.assert_close(
                x.targets[name], y.targets[name], rtol=0, atol=0, equal_nan=True
            )
        for i in index.tolist():  # the words a prediction is read against
            one_row, two_row = whole.train.text_row(i), streamed.train.text_row(i)
            assert (one_row.ids, one_row.word_ids, one_row.words) == (
                two_row.ids, two_row.word_ids, two_row.words
            )  # fmt: skip
    assert streamed.train.rows(torch.tensor([], dtype=torch.long)).x.shape[0] == 0


def test_a_streamed_source_reads_the_rows_of_each_batch_only_and_holds_no_text(
    tmp_path, monkeypatch
):
    rows = _rows(400, seed=2)
    for r in rows:
        r["text"] = " ".join([r["text"]] * 20)  # long texts: what memory would hold
        r["tags"] = r["tags"] * 20
    data = load_prepared(_config(tmp_path, "jsonl", stream=True, rows=rows, max_length=512))
    path = tmp_path / "rows.jsonl"
    held = len(pickle.dumps(data.train))
    assert held < Path(path).stat().st_size / 10  # offsets, lengths and labels only
    read: list[int] = []
    real = TextFile.read

    def counting(self, rows, columns):  # type: ignore[no-untyped-def]
        read.append(len(rows))
        return real(self, rows, columns)

    monkeypatch.setattr(TextFile, "read", counting)
    batch = data.train.rows(torch.tensor([5, 2, 9]))
    assert read == [3] and batch.x.shape[0] == 3
    data.train.text_row(2)  # a row of the last batch: not read again
    assert read == [3]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"text": "  "}, "rows.jsonl, row 6: the text is empty"),
        ({"tags": ["P"]}, "rows.jsonl, row 6, task 'tags': 1 tags for"),
        ({"mood": None, "text": ""}, "rows.jsonl, row 6: the text is empty"),
    ],
)
def test_bad_rows_are_refused_by_file_and_row_when_streamed(tmp_path, change, message):
    rows = _rows(90)
    rows[6] |= change
    config = _config(tmp_path, "jsonl", stream=True, rows=rows)
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        load_prepared(config)


def test_a_bad_json_line_is_refused_by_line_when_streamed(tmp_path):
    _config(tmp_path, "jsonl", stream=True)
    path = tmp_path / "rows.jsonl"
    lines = path.read_text().splitlines()
    lines[10] = '{"text": "good", oops}'
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"rows\.jsonl, line 11: not valid JSON"):
        load_prepared(load_config(tmp_path / "config.yaml"))
    assert len(text_file(path)) == 90
    lines[10] = '{"text": "good'  # a string left open: said so, not "control character"
    path.write_text("\n".join(lines) + "\n")
    from polytask.data._readers import read_jsonl

    for read in (lambda: load_prepared(load_config(tmp_path / "config.yaml")),
                 lambda: read_jsonl(path)):  # fmt: skip
        with pytest.raises(DataError, match=r"line 11: not valid JSON \(Unterminated string"):
            read()


def test_too_long_streamed_rows_are_cut_with_a_warning_or_refused(tmp_path):
    config = _config(tmp_path, "jsonl", stream=True, max_length=6, too_long="refuse")
    with pytest.raises(DataError, match=r"rows\.jsonl, row \d+: \d+ tokens, more than the limit"):
        load_prepared(config)
    config = _config(tmp_path, "jsonl", stream=True, max_length=6)
    with pytest.warns(DataWarning) as said:
        data = load_prepared(config)
    parts = [
        m
        for w in said
        if (m := re.search(r"(\w+) rows: \d+ of \d+ rows are longer", str(w.message)))
    ]
    assert [m.group(1) for m in parts] == ["train", "validation", "test"]
    assert int(data.train.lengths.max()) == 6


def test_streamed_text_trains_and_the_saved_model_predicts(tmp_path, capsys):
    _config(tmp_path, "csv", stream=True)
    config = str(tmp_path / "config.yaml")
    assert main(["-q", "train", config, "--no-report"]) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert set(metrics) == {"mood", "score", "tags", "echo"}
    (tmp_path / "new.txt").write_text("good film\nthe plot was bad\n")
    out = tmp_path / "p.csv"
    args = ["-q", "predict", str(tmp_path / "run" / "model.pt"), str(tmp_path / "new.txt"),
            "-o", str(out)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    table = pd.read_csv(out)
    assert [len(json.loads(c)) for c in table["tags"]] == [2, 4]


# -- a tokenizer made elsewhere, with an hf checkpoint ------------------------------------


def _bert_folder(folder: Path, pad_first: bool = True) -> list[str]:
    """A tiny BERT checkpoint with its own WordPiece tokenizer.json (made here, no download),
    which adds [CLS] ... [SEP] around texts as BERT's does."""
    transformers = pytest.importorskip(
        "transformers", reason="the hf encoder's tests need transformers (polytask[transformers])"
    )
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if not pad_first:
        specials = specials[1:] + specials[:1]
    vocab = {t: i for i, t in enumerate([*specials, *WORDS])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]),
                                                 ("[SEP]", vocab["[SEP]"])],
    )  # fmt: skip
    tokenizer.enable_padding(pad_id=vocab["[PAD]"], pad_token="[PAD]", length=32)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=20, max_position_embeddings=40, pad_token_id=vocab["[PAD]"],
    )  # fmt: skip
    transformers.BertModel(config).save_pretrained(folder)
    return [*specials, *WORDS]


def test_an_hf_checkpoint_with_its_own_tokenizer_trains_from_config(tmp_path, capsys):
    tokens = _bert_folder(tmp_path / "bert")
    _config(tmp_path, "jsonl", stream=False)
    spec = yaml.safe_load((tmp_path / "config.yaml").read_text())
    spec["data"]["text"]["tokenizer"] = {"path": "bert"}  # both relative to the YAML
    spec["data"]["text"]["max_length"] = 32
    spec["model"] = {"encoder": "hf", "encoder_params": {"path": "bert"}}
    spec["tasks"] = TASKS[:3]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(spec))
    config = load_config(tmp_path / "config.yaml")
    data = load_prepared(config)
    assert data.preprocessor.vocab_size == len(tokens)
    batch = data.train.rows(torch.tensor([0, 1]))
    cls, sep = tokens.index("[CLS]"), tokens.index("[SEP]")
    assert batch.x[:, 0].tolist() == [cls, cls]  # inputs start with the checkpoint's [CLS]
    assert sep not in batch.x.tolist()[0] and sep not in batch.x.tolist()[1]  # nothing added
    words = data.train.text_row(0).words
    assert batch.x[0, 1 : len(words) + 1].tolist() == [tokens.index(w) for w in words]
    fitted = fit(config, data)
    path = fitted.save(tmp_path / "model.pt")
    loaded = FittedModel.load(path)
    predicted = loaded.predict(pd.DataFrame({"text": ["good film", "bad"]}))
    assert [len(t) for t in predicted["tags"]] == [2, 1]
    assert loaded.preprocessor.start_id == cls


def test_a_tokenizer_that_cannot_feed_polytask_is_refused_with_the_fix(tmp_path):
    _bert_folder(tmp_path / "bert", pad_first=False)
    _config(tmp_path, "jsonl", stream=False, tokenizer={"path": str(tmp_path / "bert")})
    with pytest.raises(DataError, match=r"does not pad with id 0 \(\[PAD\] = 4\)"):
        load_prepared(load_config(tmp_path / "config.yaml"))
    _bert_folder(tmp_path / "bert")  # ids 1 and 2: [UNK] and [CLS], not free for a decoder
    config = _config(tmp_path, "jsonl", stream=False, tokenizer={"path": str(tmp_path / "bert")})
    with pytest.raises(DataError, match=r"task 'echo' generates text.* id 1 is '\[UNK\]'"):
        load_prepared(config)
    _config(tmp_path, "jsonl", stream=False, tokenizer={"path": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match=r"no tokenizer\.json there"):
        load_prepared(load_config(tmp_path / "config.yaml"))


def test_a_compressed_file_cannot_be_streamed():
    from polytask.app import RunConfig

    with pytest.raises(ValueError, match="decompress it, or set stream: false"):
        RunConfig(
            data={"text": {"path": "rows.csv.gz", "stream": True}},
            tasks=[{"name": "mood", "kind": "multiclass"}],
            model={"encoder": "transformer"},
        )


def test_streamed_files_read_as_the_file_read_whole_on_awkward_input(tmp_path):
    from polytask.data._readers import read_conll, read_jsonl
    from polytask.data._text_files import FileRows

    # a JSON lines key that only later rows have is a column
    (tmp_path / "late.jsonl").write_text('{"text": "a"}\n{"text": "b", "topic": "x"}\n')
    file = text_file(tmp_path / "late.jsonl")
    assert file.columns == ["text", "topic"]
    late = FileRows(file, [0, 1]).column("topic")
    assert pd.isna(late[0]) and late[1] == "x"
    assert read_jsonl(tmp_path / "late.jsonl")["topic"].isna().tolist() == [True, False]
    # a line of Unicode spaces ends a CoNLL sentence in both readers
    (tmp_path / "s.conll").write_text("good P\nfilm O\n\u00a0\nbad N\n")
    file = text_file(tmp_path / "s.conll", "conll", ["words", "tags"])
    whole = read_conll(tmp_path / "s.conll", ["words", "tags"])
    assert len(file) == len(whole) == 2
    assert FileRows(file, [0, 1]).column("tags") == whole["tags"].tolist()
    # a CSV whose records cannot be found line by line is refused, saying what to do
    (tmp_path / "q.csv").write_text('text,label\n3" screen,1\nok,0\n')
    with pytest.raises(DataError, match=r"convert it to JSON lines, or set text\.stream: false"):
        text_file(tmp_path / "q.csv")
    (tmp_path / "blank.csv").write_text("\ntext,label\nfine,1\n")  # a blank line first
    assert FileRows(text_file(tmp_path / "blank.csv"), [0]).column("label") == ["1"]


def test_a_streamed_task_with_where_reads_its_column(tmp_path):
    rows = _rows(90)
    for i, r in enumerate(rows):
        r["source"] = "web" if i % 2 else "mail"
    config = _config(tmp_path, "jsonl", stream=True, rows=rows)
    tasks = (Task("mood_web", "multiclass", target="mood", where={"source": "web"}),)
    streamed = load_prepared(dataclasses.replace(config, tasks=tasks))
    plain = _config(tmp_path, "jsonl", stream=False, rows=rows)
    whole = load_prepared(dataclasses.replace(plain, tasks=tasks))
    index = torch.arange(len(whole.train))
    assert torch.equal(streamed.train.rows(index).targets["mood_web"],
                       whole.train.rows(index).targets["mood_web"])  # fmt: skip
    assert streamed.train.labelled_rows("mood_web") < len(streamed.train)


@pytest.mark.parametrize("stream", [False, True])
def test_a_class_only_test_rows_have_is_warned_about_streamed_or_not(tmp_path, stream):
    from polytask.app._data import make_split

    config = _config(tmp_path, "jsonl", stream=stream)
    rows = _rows(90)
    for i in make_split(config, len(rows)).test[:2]:
        rows[int(i)]["mood"] = "sideways"
    config = _config(tmp_path, "jsonl", stream=stream, rows=rows)
    with pytest.warns(DataWarning) as said:
        data = load_prepared(config)
    unseen = [str(w.message) for w in said if "no training row has" in str(w.message)]
    assert len(unseen) == 1
    assert unseen[0].startswith("task 'mood', test rows of ") and "2 rows hold classes" in unseen[0]
    assert "['sideways']" in unseen[0]
    test = make_split(config, len(rows)).test
    assert int(data.test.labelled_rows("mood")) == len(test) - 2  # left out, as said
