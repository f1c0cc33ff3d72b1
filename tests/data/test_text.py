"""Text data: the tokenizer (special ids, saved and reloaded to the same ids), readers (JSON
lines, CoNLL), dynamic padding, length bucketing (less padding, every row once, exact resume),
per-word targets, and bad input refused naming its file and row."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from polytask.balancers import make_balancer
from polytask.data import DataError, DataWarning
from polytask.data._readers import format_of, read_conll, read_jsonl, read_table
from polytask.data._sampler import MultiSourceSampler
from polytask.data._schedules import make_schedule
from polytask.data._sequences import bucketed_order
from polytask.data._text import TextEncoding
from polytask.models import build_model
from polytask.tasks import IGNORE_INDEX, Task
from polytask.tasks._kinds import BOS_ID, PAD_ID, UNK_ID
from polytask.train import TrainConfig, Trainer
from tests.data.sequence_kinds import sequence_kinds  # noqa: F401 (a fixture)

TEXTS = ["the cat sat on the mat", "a dog", "The Cat ran", "dogs and cats and mats", "hi"]


def _frame(texts=TEXTS, **columns) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, **columns})


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "word"])
def test_the_tokenizer_saved_with_the_model_gives_the_same_ids(kind):
    encoding = TextEncoding.fit(_frame(), [], tokenizer=kind, vocab_size=60, lowercase=True)
    tokenizer = encoding.tokenizer
    assert [tokenizer.token_to_id(t) for t in ("[PAD]", "[BOS]", "[EOS]", "[UNK]")] == [0, 1, 2, 3]
    saved = json.loads(json.dumps(encoding.to_dict()))  # as a checkpoint stores it
    reloaded = TextEncoding.from_dict(saved)
    new = ["the mat sat", "zebra cat", "THE DOG"]
    original, again = encoding.encode(new), reloaded.encode(new)
    assert np.array_equal(original.ids, again.ids) and np.array_equal(original.offsets,
                                                                      again.offsets)  # fmt: skip
    assert reloaded.vocab_size == encoding.vocab_size and reloaded.model_input.vocab_size > 4
    # lowercase: "THE DOG" and "the dog" are the same tokens
    assert again.text_row(2).ids == reloaded.encode(["the dog"]).text_row(0).ids


def test_word_tokenizer_has_one_token_per_known_word_and_unk_for_others():
    encoding = TextEncoding.fit(_frame(), [], tokenizer="word", vocab_size=100)
    row = encoding.encode(["the cat zebra"]).text_row(0)
    vocab = encoding.tokenizer.get_vocab()
    assert row.ids == [BOS_ID, vocab["the"], vocab["cat"], UNK_ID]
    assert row.word_ids == [None, 0, 1, 2] and row.words == ["the", "cat", "zebra"]


def test_word_ids_map_subword_tokens_to_their_words():
    encoding = TextEncoding.fit(_frame(), [], tokenizer="bpe", vocab_size=30)
    row = encoding.encode(["cats sat"]).text_row(0)
    pieces = encoding.tokenizer.encode(["cats"], is_pretokenized=True).ids
    assert row.ids[0] == BOS_ID and row.word_ids[0] is None  # every input starts with [BOS]
    assert row.word_ids[1 : len(pieces) + 1] == [0] * len(pieces) and len(pieces) > 1
    assert set(row.word_ids[len(pieces) + 1 :]) == {1}


def test_batches_are_padded_to_their_longest_row():
    tasks = [Task("label", "multiclass")]
    frame = _frame(label=["a", "b", "a", "b", None])
    encoding = TextEncoding.fit(frame, tasks, tokenizer="word", vocab_size=100)
    source = encoding.source(frame, None, encoding.resolve_tasks(tasks))
    lengths = [len(t.split()) + 1 for t in TEXTS]  # [BOS] and a token per word
    assert list(source.lengths) == lengths
    batch = source.rows(torch.tensor([1, 4]))  # 3 and 2 tokens
    assert batch.x.shape == (2, 3) and batch.x.dtype == torch.long
    assert batch.x[1, 2] == PAD_ID and (batch.x[0] != PAD_ID).all()
    assert (batch.x[:, 0] == BOS_ID).all()
    assert batch.targets["label"].tolist() == [1, IGNORE_INDEX]
    full = source.rows(torch.tensor([0, 1, 2, 3, 4]))
    assert full.x.shape == (5, max(lengths))
    assert ((full.x != PAD_ID).sum(1) == torch.tensor(lengths)).all()
    for i in range(5):
        row = source.text_row(i)
        assert full.x[i, : len(row.ids)].tolist() == row.ids
    assert source.input_shape == (128,) and source.to_memory().x.shape == (5, max(lengths))


def test_per_word_targets_are_padded_with_the_inputs_and_missing_rows_marked_whole():
    tags = [json.dumps(["D", "N", "V", "P", "D", "N"]), "D N", None, ["N", "C", "N", "C", "N"],
            "X"]  # fmt: skip
    tasks = [Task("pos", "token", target="tags", kind_params={"scheme": "none"})]
    frame = _frame(tags=tags)
    encoding = TextEncoding.fit(frame, tasks, tokenizer="word", vocab_size=100)
    [task] = encoding.resolve_tasks(tasks)
    assert encoding.target_fit(task).classes == ["C", "D", "N", "P", "V", "X"]
    assert encoding.target_fit(task).vocab == encoding.vocab_size
    assert encoding.target_fit(task).tokenizer is encoding.tokenizer
    source = encoding.source(frame, None, [task])
    assert source.labelled_rows("pos") == 4
    assert source.target_fits["pos"].tokenizer is encoding.tokenizer
    batch = source.rows(torch.tensor([1, 2, 3]))
    assert batch.targets["pos"].shape == batch.x.shape == (3, 6)
    assert batch.targets["pos"][0].tolist() == [IGNORE_INDEX, 1, 2, *[IGNORE_INDEX] * 3]
    assert (batch.targets["pos"][1] == IGNORE_INDEX).all()  # the unlabelled row, whole width
    known = source.known_targets()["pos"]
    assert known.shape == (5, 7) and (known[2] == IGNORE_INDEX).all()


def test_a_tag_count_that_differs_from_the_words_names_file_row_and_task():
    tasks = [Task("pos", "token", target="tags", kind_params={"scheme": "none"})]
    frame = _frame(tags=["D N V P D N", "D", "D N N", "N C N C N", "X"])
    encoding = TextEncoding.fit(frame, tasks, tokenizer="word", vocab_size=100)
    with pytest.raises(DataError, match=r"^data/train.csv, row 1, task 'pos': 1 tags for 2 words"):
        encoding.source(frame, None, encoding.resolve_tasks(tasks), where="data/train.csv")
    worse = _frame(tags=["D N V P D N", "D", "D N", "N C N C N", "X Y"])  # rows 1, 2 and 4
    with pytest.raises(DataError, match=r"row 1, .* \(2 more rows refused for this task\)$"):
        encoding.source(worse, None, encoding.resolve_tasks(tasks))


def test_tags_separated_by_commas_are_told_so():
    tasks = [Task("ner", "token", target="tags")]
    frame = _frame(tags=["B-PER,O,O", "O", "O, O, O", "O O O", "B-PER O"])
    with pytest.raises(DataError, match=r"'ner': its tags .* are BIO tags separated by commas"):
        TextEncoding.fit(frame, tasks, tokenizer="word", vocab_size=100)
    penn = _frame(tags=["PRP VBD , PRP", "O", "O O O", "O O O O O", "X"])  # the tag "," of Penn
    with pytest.raises(DataError, match=r"'ner': its tags \[.*','.*\] are not BIO"):
        TextEncoding.fit(penn, tasks, tokenizer="word", vocab_size=100)
    lower = _frame(tags=["b-per o o", "o", "o o o", "o o o o o", "i-per"])
    said = r"'ner': its tags \['b-per', 'i-per', 'o'\] have lower-case BIO prefixes; .* \(B-LOC"
    with pytest.raises(DataError, match=said):
        TextEncoding.fit(lower, tasks, tokenizer="word", vocab_size=100)
    pos = [Task("pos", "token", target="tags", kind_params={"scheme": "none"})]
    plain = _frame(tags=[", N", "D", "D N N", "N , N C N", "X"])  # a "," tag alone is a tag
    assert (
        ","
        in TextEncoding.fit(plain, pos, tokenizer="word", vocab_size=100).target_fit(pos[0]).classes
    )


def test_a_truncated_row_keeps_the_tags_of_the_words_it_still_holds():
    tasks = [Task("pos", "token", target="tags", kind_params={"scheme": "none"})]
    frame = _frame(texts=["a b c d e", "b a"], tags=["X Y X Y X", "Y X"])
    encoding = TextEncoding.fit(frame, tasks, tokenizer="word", vocab_size=50, max_length=3)
    with pytest.warns(DataWarning):
        source = encoding.source(frame, None, encoding.resolve_tasks(tasks))
    assert source.rows(torch.tensor([0])).targets["pos"].tolist() == [[IGNORE_INDEX, 0, 1]]


def test_a_bad_training_cell_names_its_row_in_the_file():
    tasks = [Task("pos", "token", target="tags", kind_params={"scheme": "none"})]
    frame = _frame(texts=["a b", "c", "d e"], tags=["X Y", "X", '["X", '])
    frame.index = [10, 11, 12]  # e.g. the training rows of a split
    with pytest.raises(DataError, match=r"^t.jsonl, row 12, task 'pos': its tags .* are not a "
                                        r"JSON list"):  # fmt: skip
        TextEncoding.fit(frame, tasks, tokenizer="word", vocab_size=50, where="t.jsonl")


def test_an_empty_text_is_refused_naming_file_and_row():
    frame = _frame(texts=["fine", "also fine", "   ", "ok"])
    with pytest.raises(DataError, match=r"^data/train.jsonl, row 2: the text is empty"):
        TextEncoding.fit(frame, [], where="data/train.jsonl")
    encoding = TextEncoding.fit(_frame(), [])
    missing = _frame(texts=["fine", None])
    with pytest.raises(DataError, match=r"^new.csv, row 1: the text is missing \(null or blank\)"):
        encoding.source(missing, where="new.csv")


def test_too_long_texts_are_cut_with_one_warning_or_refused_naming_the_row():
    frame = _frame(texts=["a b c d e f", "a b", "a b c d", "c"])
    encoding = TextEncoding.fit(frame, [], tokenizer="word", vocab_size=50, max_length=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = encoding.source(frame, where="t.csv", split="train")
    [warning] = [w for w in caught if issubclass(w.category, DataWarning)]
    assert "t.csv, train rows: 2 of 4 rows are longer than 4 tokens" in str(warning.message)
    assert list(source.lengths) == [4, 3, 4, 2]  # [BOS] counts
    assert source.text_row(0).words == list("abcdef")  # every word kept for the targets
    strict = TextEncoding.fit(
        frame, [], tokenizer="word", vocab_size=50, max_length=4, too_long="refuse"
    )
    with pytest.raises(DataError, match=r"^t.csv, row 0: 7 tokens, more than the limit of 4 "
                                        r"\(1 more row like it\)"):  # fmt: skip
        strict.source(frame, where="t.csv")


def test_sequence_level_targets_are_encoded_as_for_tables():
    tasks = [Task("label", "binary"), Task("score", "regression")]
    frame = _frame(label=[1, 0, 1, None, 0], score=[1.0, 2.0, 3.0, 4.0, None])
    encoding = TextEncoding.fit(frame, tasks, vocab_size=50)
    source = encoding.source(frame, None, tasks)
    mean, std = encoding.target_fit(tasks[1]).scale
    assert mean == pytest.approx(2.5) and source.target_scale["score"] == (mean, std)
    batch = source.rows(torch.arange(5))
    assert torch.isnan(batch.targets["label"][3]) and torch.isnan(batch.targets["score"][4])
    assert batch.targets["score"][0] == pytest.approx((1.0 - mean) / std)


def _waste(source, order, batch_size):
    """Padding positions over all batches in `order`."""
    lengths = torch.as_tensor(source.lengths)
    total = 0
    for start in range(0, len(order), batch_size):
        part = lengths[order[start : start + batch_size]]
        total += int((part.max() - part).sum())
    return total


def test_bucketing_cuts_padding_and_keeps_every_row_once_per_epoch():
    rng = np.random.default_rng(0)
    texts = [" ".join(["w"] * int(n)) for n in rng.integers(1, 60, 400)]
    encoding = TextEncoding.fit(_frame(texts=texts), [], tokenizer="word", vocab_size=20)
    plain = encoding.source(_frame(texts=texts), batch_size=16)
    bucketed = encoding.source(_frame(texts=texts), batch_size=16, bucket=True, bucket_size=160)
    generator = torch.Generator().manual_seed(0)
    plain_order, order = plain.order(generator), bucketed.order(generator)
    assert sorted(order.tolist()) == list(range(400))  # every row once
    assert _waste(bucketed, order, 16) < 0.2 * _waste(plain, plain_order, 16)
    # each batch's rows come from one window, sorted there: lengths in a run rise
    lengths = torch.as_tensor(bucketed.lengths)[order].view(25, 16)
    assert (lengths.diff(dim=1) >= 0).all()
    # two epochs differ
    assert not torch.equal(order, bucketed.order(generator))


def test_bucketed_order_keeps_a_short_last_run_last():
    lengths = np.arange(10)[::-1].copy()
    order = bucketed_order(lengths, torch.Generator().manual_seed(1), 4, 100)
    assert sorted(order.tolist()) == list(range(10))
    assert sorted(order[8:].tolist()) == [0, 1]  # the two longest: the tail of the sorted rows
    assert {frozenset(order[:4].tolist()), frozenset(order[4:8].tolist())} == {
        frozenset({9, 8, 7, 6}),
        frozenset({5, 4, 3, 2}),
    }


def test_a_resumed_sampler_draws_the_same_bucketed_batches():
    rng = np.random.default_rng(1)
    texts = [" ".join(["w"] * int(n)) for n in rng.integers(1, 30, 50)]
    frame = _frame(texts=texts, label=[i % 2 for i in range(50)])
    tasks = [Task("label", "binary")]
    encoding = TextEncoding.fit(frame, tasks, tokenizer="word", vocab_size=20)
    source = encoding.source(frame, None, tasks, batch_size=8, bucket=True, bucket_size=24)

    def sampler():
        return MultiSourceSampler({"text": source}, make_schedule("proportional"), 8, seed=3)

    first = sampler()
    for _ in range(9):  # past the end of the first epoch (7 steps)
        first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch().x for _ in range(10)]
    resumed = sampler()
    resumed.load_state_dict(state)
    again = [resumed.next_batch().x for _ in range(10)]
    assert all(torch.equal(a, b) for a, b in zip(expected, again, strict=True))


def test_jsonl_rows_and_bad_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a b", "tags": ["X", "Y"]}\n\n{"text": "c", "tags": ["Z"]}\n')
    frame = read_table(path)
    assert list(frame.text) == ["a b", "c"] and frame.tags[0] == ["X", "Y"]
    path.write_text('{"text": "a"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"rows.jsonl, line 2: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"text": "a"}\n["a list"]\n')
    with pytest.raises(DataError, match=r"rows.jsonl, line 2: a JSON list, not an object"):
        read_jsonl(path)
    path.write_text('{"text": "a\tb"}\n')  # a raw tab inside a string (json's "... at")
    with pytest.raises(DataError, match=r"line 1: not valid JSON \(Invalid control character "
                                        r"at column 12\); each line"):  # fmt: skip
        read_jsonl(path)


def test_conll_sentences_become_rows_with_tag_lists(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(
        "-DOCSTART- -X- O\n\nEU\tNNP\tB-ORG\nrejects VBZ O\n\n\nPeter NNP B-PER\n"
        "Blackburn NNP I-PER\n"
    )
    frame = read_conll(path, ["words", "pos", "ner"])
    assert list(frame.columns) == ["text", "pos", "ner"]
    assert list(frame.text) == ["EU rejects", "Peter Blackburn"]
    assert frame.ner.tolist() == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    words = read_conll(path, ["words"])  # words only, e.g. to predict
    assert list(words.columns) == ["text"] and len(words) == 2
    path.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"train.txt, line 2: 1 fields for the 2 columns"):
        read_conll(path, ["words", "ner"])
    # found by review: a model trained on CoNLL predicting on a .txt of one sentence a line
    # took each line's first word, gluing them into one sentence
    assert read_conll(path, ["words"], tagged=2).text.tolist() == ["EU rejects"]
    path.write_text("John saw Paris .\nMary left Rome .\n")
    with pytest.raises(DataError, match=r"line 1: 4 fields .* one word per line"):
        read_conll(path, ["words"], tagged=3)


def test_formats_by_suffix():
    assert format_of("a/b.jsonl") == "jsonl" and format_of("b.csv.gz") == "csv"
    assert format_of("x.conll") == "conll" and format_of("x.txt", "conll") == "conll"
    with pytest.raises(ValueError, match=r"cannot tell the format of x\.tsv"):
        format_of("x.tsv")


def test_conll_tags_train_per_word_targets(tmp_path):
    path = tmp_path / "ner.conll"
    path.write_text("EU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n")
    frame = read_conll(path, ["words", "ner"])
    tasks = [Task("ner", "token")]
    encoding = TextEncoding.fit(frame, tasks, tokenizer="wordpiece", vocab_size=60)
    source = encoding.source(frame, None, encoding.resolve_tasks(tasks))
    target = source.rows(torch.tensor([0])).targets["ner"][0]
    classes = encoding.target_fit(tasks[0]).classes
    first = [target[i].item() for i in range(len(target)) if target[i] != IGNORE_INDEX]
    assert [classes[c] for c in first] == ["B-ORG", "O", "B-MISC"]
    sentence = [*tasks, Task("topic", "multiclass")]  # a label per text: not in a CoNLL file
    with pytest.raises(DataError, match=r"ner.conll: task 'topic' reads one value per text from "
                                        r"\['topic'\], but a CoNLL file holds only columns of "
                                        r"one value per word \(words, ner\): give sentence "
                                        r"labels in a CSV or JSON lines file"):  # fmt: skip
        TextEncoding.fit(frame, sentence, tokenizer="word", vocab_size=60, where=str(path),
                         conll_columns=["words", "ner"])  # fmt: skip


@pytest.mark.usefixtures("sequence_kinds")  # the test text encoder bag
def test_a_resumed_trainer_on_bucketed_text_ends_bit_identical(tmp_path):
    rng = np.random.default_rng(2)
    texts = [" ".join(rng.choice(["a", "b", "c", "d"], int(n))) for n in rng.integers(1, 12, 40)]
    frame = _frame(texts=texts, label=[t.count("a") % 2 for t in texts])
    tasks = [Task("label", "binary")]
    encoding = TextEncoding.fit(frame, tasks, tokenizer="word", vocab_size=20)
    source = encoding.source(frame, None, tasks, batch_size=8, bucket=True, bucket_size=16)

    def trainer(epochs: int) -> Trainer:
        model = build_model("hard_sharing", encoding.model_input, tasks, seed=0, encoder="bag")
        config = TrainConfig(epochs=epochs, batch_size=8, lr=0.05, progress=False, seed=4)
        return Trainer(model, make_balancer("ew"), config)

    whole = trainer(4)
    whole.fit(source)
    first = trainer(2)
    first.fit(source)
    first.save(tmp_path / "mid.pt")
    resumed = trainer(4)
    resumed.load(tmp_path / "mid.pt")
    resumed.fit(source)
    assert resumed.step == whole.step == 20
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_target_texts_a_tokenizer_cannot_read_back_are_warned_of():
    # WordPiece spaces every punctuation mark: translations are written and scored so
    df = pd.DataFrame({
        "text": ["hello there", "the cat sat", "it is far"] * 20,
        "fr": ["It's 3.5 km from the U.S. border, isn't it?", "le chat", "e-mail: x@y.com"] * 20,
    })  # fmt: skip
    task = Task("fr", "seq2seq")
    with pytest.warns(DataWarning) as caught:
        TextEncoding.fit(df, [task], tokenizer="wordpiece", vocab_size=200)
    said = [str(w.message) for w in caught if "read back" in str(w.message)]
    assert len(said) == 1 and "40 of 60 training target texts" in said[0]
    assert "'It \\' s 3. 5 km" in said[0] or "It ' s 3. 5 km" in said[0]
    assert "tokenizer: bpe" in said[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # bpe reads every one back
        TextEncoding.fit(df, [task], tokenizer="bpe", vocab_size=200)


def test_bpe_gives_a_word_that_starts_with_punctuation_its_own_first_token():
    """Found by review: Punctuation() split the ▁ off every word that began with punctuation, so
    ',' '(' '%' '$5' all began with one bare ▁ token, where a token task reads each word's tag
    (a POS tagger whose tags follow from the word scored 0.74 with bpe, 1.0 with word)."""
    from polytask.data import train_tokenizer

    texts = ["The U.S. economy grew 3.5 % in 2023 , analysts said ( Reuters ) ."] * 20
    tokenizer = train_tokenizer(texts, "bpe", 200)
    words = texts[0].split()
    encoded = tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
    first: dict[int, str] = {}
    for token, word in zip(encoded.tokens, encoded.word_ids, strict=True):
        first.setdefault(word, token)
    starts = {words[w]: t for w, t in first.items()}
    assert "▁" not in starts.values(), starts
    assert starts[","] != starts["("] != starts["%"] and starts["economy"] == "▁economy"
    plain = tokenizer.encode("said, (Reuters)", add_special_tokens=False).tokens
    assert "," in plain and "▁(" in plain  # free text still splits punctuation off its word


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "word"])
def test_special_token_strings_in_the_text_are_words_not_padding(kind):
    """Found by review: a text holding "[PAD]" gave id 0 inside the row, which the encoder
    masks as padding while a token task trained and scored a tag there; and a word tokenizer
    trained on texts holding "[UNK]" stopped with a RuntimeError (its ids off by one)."""
    from polytask import Task
    from polytask.data import TextEncoding, train_tokenizer

    tokenizer = train_tokenizer(["a b [UNK] d", "the [PAD] token"] * 3, kind, 60)
    assert [tokenizer.token_to_id(t) for t in ("[PAD]", "[BOS]", "[EOS]", "[UNK]")] == [0, 1, 2, 3]
    train = pd.DataFrame({"text": ["good movie", "bad movie", "the [PAD] token"],
                          "ner": ["O O", "O O", "O B-X O"]})  # fmt: skip
    tasks = [Task("ner", "token")]
    encoding = TextEncoding.fit(train, tasks, tokenizer=kind, vocab_size=60)
    rows = encoding.source(train, tasks=encoding.resolve_tasks(tasks)).rows(torch.arange(3))
    assert 0 not in rows.x[2].tolist()  # the batch's longest row: no padding in it
    labelled = rows.targets["ner"][2] != -100
    assert bool((rows.x[2][labelled] != 0).all())  # every tagged word the encoder can see
