"""Texts reach the model as written: CSV cells of digits keep their zeros (as a streamed file
reads them), a .txt file's rows end at newlines only, and words a tokenizer makes no token of
are said (their tags would neither train nor score)."""

import warnings

import pandas as pd
import pytest

from polytask.app._config import TextConfig
from polytask.app._data import text_frame
from polytask.data._readers import read_lines
from polytask.data._text import TextEncoding, load_tokenizer
from polytask.tasks import Task


def test_csv_texts_and_sequence_targets_of_digits_are_read_as_written(tmp_path):
    path = tmp_path / "digits.csv"
    path.write_text("text,out,score\n07,3.10,1\n00,,2\n5,06,3\n")
    tasks = (Task("out", "seq2seq"), Task("score", "regression"))
    frame = text_frame(TextConfig(path=str(path)), tasks)
    assert frame["text"].tolist() == ["07", "00", "5"]  # was 7, 0, 5
    assert frame["out"].tolist()[::2] == ["3.10", "06"] and pd.isna(frame["out"][1])  # 3.1, 6.0
    assert frame["score"].tolist() == [1, 2, 3]  # a number stays a number
    model = TextEncoding.fit(frame, [Task("out", "seq2seq")], "word", max_length=8)
    assert model.read(path)["text"].tolist() == ["07", "00", "5"]  # predict reads them so too


def test_a_txt_file_has_one_row_per_newline_only(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes("first line\nsecond\u2028part\r\nthird\x0cpage\u0085x\nfourth\n".encode())
    rows = read_lines(path, "text")["text"].tolist()
    assert rows == ["first line", "second\u2028part", "third\x0cpage\u0085x", "fourth"]


def test_words_a_tokenizer_makes_no_token_of_are_said_for_per_word_tasks(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "maria", "paris"])}
    bert = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
    bert.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    bert.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    bert.save(str(tmp_path / "tokenizer.json"))
    train = pd.DataFrame({"text": ["maria paris"] * 4, "ner": [["B-PER", "B-LOC"]] * 4})
    task = Task("ner", "token")
    encoding = TextEncoding.fit(train, [task], load_tokenizer(tmp_path), max_length=16)
    tasks = encoding.resolve_tasks([task])
    odd = pd.DataFrame(
        {"text": ["maria \u200b paris \x7f"], "ner": [["B-PER", "B-LOC", "B-LOC", "B-PER"]]}
    )
    with pytest.warns(UserWarning, match=r"2 words in 1 rows .* become no token .*\['ner'\]"):
        encoding.source(odd, tasks=tasks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoding.source(train, tasks=tasks)  # every word has a token: nothing to say
        encoding.source(odd)  # no per-word task: nothing lost
