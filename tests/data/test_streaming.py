"""Streamed sources: a Parquet (or CSV) source gives exactly the batches of the in-memory data
on the same rows (shuffled, resumed, with workers, in training), block shuffling visits every
row once per epoch, an IterableSource mixes with in-memory sources and resumes exactly."""

import sys

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp
from polytask.data import CsvSource, IterableSource, ParquetSource
from polytask.data._loader import WindowLoader
from polytask.data._sampler import MultiSourceSampler
from polytask.data._schedules import make_schedule
from polytask.tasks._columns import DataError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyarrow.csv")  # pa.csv: loaded by the module, not by pyarrow itself

N, CLASSES = 600, ["a", "b", "c"]


def _memory(n: int = N, seed: int = 0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
    y[::7] = float("nan")
    c = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    c[::5] = -100
    return TaskData(x, {"y": y, "c": c})


def _table(data: TaskData):
    labels = [None if int(i) < 0 else CLASSES[int(i)] for i in data.targets["c"]]
    columns = {f"f{j}": data.x[:, j].numpy() for j in range(data.x.shape[1])}
    return pa.table({**columns, "y": data.targets["y"].numpy(), "c": pa.array(labels)})


def _parquet(tmp_path, data: TaskData, shards: int = 3, **kwargs) -> ParquetSource:
    table, size = _table(data), -(-len(data) // shards)
    for i in range(shards):
        pq.write_table(table.slice(i * size, size), tmp_path / f"part-{i}.parquet",
                       row_group_size=50)  # fmt: skip
    return ParquetSource(str(tmp_path / "part-*.parquet"), ["f0", "f1", "f2"],
                         {"y": "y", "c": "c"}, classes={"c": CLASSES}, **kwargs)  # fmt: skip


def _same(a, b) -> bool:
    return (
        torch.equal(a.x, b.x)
        and a.targets.keys() == b.targets.keys()
        and all(
            torch.allclose(a.targets[t], b.targets[t], equal_nan=True)
            and a.targets[t].dtype == b.targets[t].dtype
            for t in a.targets
        )
    )


def _sampler(sources, schedule: str = "joint", seed: int = 3) -> MultiSourceSampler:
    return MultiSourceSampler(sources, make_schedule(schedule), 32, seed)


def test_parquet_batches_match_in_memory_across_an_epoch_a_resume_and_workers(tmp_path):
    data = _memory()
    streamed = _parquet(tmp_path, data, cache_groups=2)
    memory, stream = _sampler({"d": data}), _sampler({"d": streamed})
    steps = memory.steps_per_epoch
    assert stream.steps_per_epoch == steps
    for _ in range(steps + 3):  # a whole epoch, and into the next
        assert _same(memory.next_batch(), stream.next_batch())
    state = stream.state_dict()
    expected = [memory.next_batch() for _ in range(steps)]
    resumed = _sampler({"d": _parquet(tmp_path, data)}, seed=99)
    resumed.load_state_dict(state)
    loader = WindowLoader(resumed, num_workers=2)
    try:
        got = [*loader.window(steps // 2), *loader.window(steps - steps // 2)]
    finally:
        loader.close()
    assert len(got) == steps and all(_same(a, b) for a, b in zip(expected, got, strict=True))
    assert len(streamed._cache) <= 2  # never more than cache_groups row groups held


def test_csv_source_matches_in_memory(tmp_path):
    data = _memory(200)
    table = _table(data)
    for i in range(2):
        pa.csv.write_csv(table.slice(i * 100, 100), tmp_path / f"part-{i}.csv")
    source = CsvSource(str(tmp_path / "part-*.csv"), ["f0", "f1", "f2"], {"y": "y", "c": "c"},
                       classes={"c": CLASSES})  # fmt: skip
    index = torch.randperm(200, generator=torch.Generator().manual_seed(0))[:50]
    got, want = source.rows(index), data.rows(index)
    assert torch.allclose(got.x, want.x) and torch.equal(got.targets["c"], want.targets["c"])
    assert torch.allclose(got.targets["y"], want.targets["y"], equal_nan=True)


def test_block_shuffle_visits_every_row_once_per_epoch_reading_each_group_once(tmp_path):
    source = _parquet(tmp_path, _memory(), shuffle="blocks", block_groups=3, cache_groups=3)
    reads = []
    read = source._read
    source._read = lambda group, columns: reads.append(group) or read(group, columns)
    sampler = _sampler({"d": source}, "round_robin")
    for _epoch in range(2):
        rows = torch.cat([sampler.draw()[0][1] for _ in range(sampler.steps_per_epoch)])
        assert torch.equal(rows.sort().values, torch.arange(N))
        assert not torch.equal(rows, torch.arange(N))
    for rows in [sampler.draw()[0][1] for _ in range(sampler.steps_per_epoch)]:
        sampler.gather([(0, rows)])
    assert sorted(reads) == list(range(len(source.groups)))


class _Stream(IterableDataset):
    """Rows of a TaskData as dicts (or batches of 7), counting how often it is opened."""

    def __init__(self, data: TaskData, batched: bool = False) -> None:
        self.data, self.batched, self.opened = data, batched, 0

    def __iter__(self):
        self.opened += 1
        step = 7 if self.batched else 1
        for start in range(0, len(self.data), step):
            part = self.data.rows(torch.arange(start, min(start + step, len(self.data))))
            item = {"x": part.x, **part.targets}
            yield item if self.batched else {k: v[0] for k, v in item.items()}


@pytest.mark.parametrize("batched", [False, True])
def test_iterable_source_with_an_in_memory_source_under_proportional_schedule(batched):
    stream_data, other = (
        _memory(300, seed=1),
        TaskData(torch.randn(100, 3), {"z": torch.randn(100)}),
    )
    source = IterableSource(_Stream(stream_data, batched), batched=batched)
    assert len(source) == 300 and set(source.target_like) == {"y", "c"}
    sampler = _sampler({"s": source, "m": other}, "proportional")
    seen = []
    for _ in range(4 * sampler.steps_per_epoch):
        (i, rows), = sampler.draw()  # fmt: skip
        batch = sampler.gather([(i, rows)])
        assert set(batch.targets) == {"y", "c", "z"}
        if i == 0:
            assert _same(batch, _collated(stream_data.rows(rows), other))
            seen.append(rows)
    assert sampler.counts[0] > 2 * sampler.counts[1]  # ∝ sizes 300 : 100
    walked = torch.cat(seen)[:300]
    assert torch.equal(walked, torch.arange(300))  # in order, no shuffle


def _collated(batch, other: TaskData):
    targets = dict(batch.targets) | {"z": torch.full((len(batch.x),), float("nan"))}
    return type(batch)(batch.x, targets)


def test_iterable_source_resumes_exactly_by_skipping_forward():
    data = _memory(300, seed=2)
    source = IterableSource(_Stream(data))
    sampler = _sampler({"s": source})
    for _ in range(5):
        sampler.next_batch()
    state = sampler.state_dict()
    expected = [sampler.next_batch() for _ in range(12)]  # into the next epoch
    stream = _Stream(data)
    resumed = _sampler({"s": IterableSource(stream, length=300)})
    resumed.load_state_dict(state)
    got = [resumed.next_batch() for _ in range(12)]
    assert all(_same(a, b) for a, b in zip(expected, got, strict=True))
    assert stream.opened == 3  # peek, the re-opened stream skipped to row 160, the next epoch
    loader = WindowLoader(resumed, num_workers=2)
    resumed.load_state_dict(state)
    try:
        assert all(_same(a, b) for a, b in zip(expected, loader.window(12), strict=True))
    finally:
        loader.close()


def test_missing_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"pip install polytask\[parquet\]"):
        ParquetSource(str(tmp_path / "*.parquet"), ["f0"], {"y": "y"})


def test_labels_without_classes_are_refused_or_read_from_metadata(tmp_path):
    data = _memory(100)
    table = _table(data)
    pq.write_table(table, tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="give its classes"):
        ParquetSource(tmp_path / "plain.parquet", ["f0"], {"c": "c"})
    meta = {b"polytask:classes": b'{"c": ["a", "b", "c"]}'}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "meta.parquet")
    source = ParquetSource(tmp_path / "meta.parquet", ["f0"], {"c": "c"})
    assert torch.equal(source.rows(torch.arange(100)).targets["c"], data.targets["c"])


def _fit(train, workers: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    tasks = [Task("y", "regression"), Task("c", "multiclass", num_classes=3)]
    config = TrainConfig(epochs=2, batch_size=32, lr=1e-2, patience=None, progress=False,
                         seed=0, restore_best=False, num_workers=workers)  # fmt: skip
    trainer = Trainer(hard_sharing_mlp(3, tasks, hidden=(16,)), config=config)
    trainer.fit(train, val=_memory(100, seed=5))
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("workers", [0, 2])
def test_training_on_parquet_ends_with_the_in_memory_parameters(tmp_path, workers):
    data = _memory()
    memory, streamed = _fit(data), _fit(_parquet(tmp_path, data), workers)
    assert memory.keys() == streamed.keys()
    assert all(torch.equal(memory[k], streamed[k]) for k in memory)


def test_trainer_fit_and_evaluate_take_streamed_sources(tmp_path):
    """Trainer.fit (train and validation) and evaluate take any DataSource: a streamed
    validation set is evaluated like the same rows in memory."""
    tasks = [Task("y", "regression")]
    config = TrainConfig(epochs=None, steps=2, progress=False, patience=None)
    trainer = Trainer(hard_sharing_mlp(3, tasks, hidden=(4,)), config=config)
    streamed = _parquet(tmp_path, _memory())
    history = trainer.fit(streamed, val=streamed)
    assert trainer.step == 2 and "val/y/loss" in history[-1]
    assert trainer.evaluate(streamed) == trainer.evaluate(_memory())


def test_shuffled_stream_rows_cover_the_data_like_in_memory(tmp_path):
    source = _parquet(tmp_path, _memory())
    assert np.array_equal(source.to_memory().x.numpy(), _memory().x.numpy())


def test_a_folder_of_shards_reads_its_files_and_text_features_are_refused_by_name(tmp_path):
    streamed = _parquet(tmp_path, _memory())
    folder = ParquetSource(str(tmp_path), ["f0", "f1", "f2"], {"y": "y", "c": "c"},
                           classes={"c": CLASSES})  # fmt: skip
    assert _same(folder.to_memory(), streamed.to_memory())
    with pytest.raises(DataError, match=r"feature columns \['c'\] are not numeric"):
        ParquetSource(str(tmp_path), ["f0", "c"], {"y": "y"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.parquet or \.csv files"):
        ParquetSource(str(tmp_path / "empty"), ["f0"], {"y": "y"})


def test_iterable_source_counts_rows_of_a_batched_list_and_refuses_one_pass_or_cut_targets():
    data = _memory(30, seed=4)
    items = [{"x": data.x[i : i + 7], "y": data.targets["y"][i : i + 7]} for i in range(0, 30, 7)]
    assert len(items) == 5
    source = IterableSource(items, batched=True)  # len(items) counts batches, not rows
    assert len(source) == 30
    assert torch.equal(source.rows(torch.arange(25, 30)).x, data.x[25:30])
    rows = ({"x": data.x[i], "y": data.targets["y"][i]} for i in range(30))
    with pytest.raises(DataError, match=r"one-pass iterator \(generator\).* re-iterable"):
        IterableSource(rows)
    counts = [{"x": data.x[i], "y": 5 if i == 0 else 310.5} for i in range(3)]
    stream = IterableSource(counts, length=3)  # the first target an integer: class indices
    with pytest.raises(DataError, match=r"target 310.5, but the first item's .* \(5.0, not 5\)"):
        stream.rows(torch.arange(3))


def test_integer_regression_targets_score_their_missing_labels_as_missing(tmp_path):
    """−100, an integer column's missing label (a Parquet count with blanks), is not a value."""
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    visits = torch.arange(40) % 7
    visits[::4] = -100
    task = Task("visits", "regression")
    trainer = Trainer(hard_sharing_mlp(3, [task], hidden=(4,)), config=TrainConfig(progress=False))
    as_int = trainer.evaluate(TaskData(x, {"visits": visits}))["visits"]
    floats = visits.float().masked_fill(visits == -100, float("nan"))
    as_float = trainer.evaluate(TaskData(x, {"visits": floats}))["visits"]
    assert as_int["rmse"] == pytest.approx(as_float["rmse"]) and as_int["rmse"] < 20
    kept = floats[~floats.isnan()]
    pred = trainer.predict(x)["visits"][~floats.isnan()]
    assert as_float["rmse"] == pytest.approx(float(((pred - kept) ** 2).mean().sqrt()), rel=1e-5)


def test_csv_source_encodes_times_and_blanks_as_the_preprocessor_does_in_memory(tmp_path, caplog):
    """pyarrow parses "09:00" as a time (written back "09:00:00") and reads a blank text cell
    as "": the file source must see the text pandas sees."""
    import pandas as pd

    from polytask.data import TabularPreprocessor
    from polytask.data._tabular import read_csv

    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({
        "a": rng.normal(size=n),
        "at": rng.choice(["2020-01-01 10:00", "2020-01-01 11:30"], n),
        "hhmm": rng.choice(["09:00", "17:30", ""], n),
        "shift": rng.choice(["08:00", "20:00"], n),
    })  # fmt: skip
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame = read_csv(tmp_path / "t.csv")
    tasks = [Task("shift", "binary")]
    pre = TabularPreprocessor.fit(frame, ["a"], ["at", "hhmm"], tasks)
    tasks = pre.resolve_tasks(tasks)
    want = pre.transform(frame, tasks)
    with caplog.at_level("WARNING"):
        got = CsvSource(str(tmp_path / "t.csv"), preprocessor=pre, tasks=tasks).to_memory()
    assert torch.equal(got.x, want.x) and got.x[:, 1:].sum(1).min() >= 1  # "at" always one-hot
    assert torch.equal(got.targets["shift"], want.targets["shift"])
    assert not got.targets["shift"].isnan().any()
    assert "not seen in training" not in caplog.text  # the blank is missing, not a category ''


def test_csv_source_reads_pandas_missing_words_as_missing(tmp_path):
    """pandas reads "None" and "<NA>" as missing; pyarrow read them as text, so a numeric
    column holding one failed ("holds non-numeric values") where the table in memory trains."""
    from polytask.data import TabularPreprocessor
    from polytask.data._tabular import read_csv

    path = tmp_path / "n.csv"
    path.write_text("age,region,y\n1.5,EU,1.0\nNone,None,2.0\n3,<NA>,3.0\n,AS,4\n")
    frame = read_csv(path)
    tasks = [Task("y", "regression")]
    pre = TabularPreprocessor.fit(frame, ["age"], ["region"], tasks)
    want = pre.transform(frame, tasks)
    got = CsvSource(str(path), preprocessor=pre, tasks=tasks).to_memory()
    assert torch.equal(got.x, want.x) and torch.equal(got.targets["y"], want.targets["y"])


def test_an_error_in_a_streamed_group_names_the_file_and_its_row(tmp_path):
    import pandas as pd

    from polytask.data import TabularPreprocessor

    frame = pd.DataFrame({"a": np.arange(300.0), "y": np.arange(300.0)})
    tasks = [Task("y", "regression")]
    pre = TabularPreprocessor.fit(frame.iloc[:200], ["a"], [], tasks)
    frame.loc[257, "a"] = np.inf
    path = tmp_path / "inf.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=100)
    with pytest.raises(DataError, match=r"inf.parquet: numeric feature 'a' .*\(row 257\)"):
        ParquetSource(str(path), preprocessor=pre, tasks=tasks).rows(torch.tensor([257]))
