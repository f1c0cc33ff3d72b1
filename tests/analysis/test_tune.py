"""`polytask tune`: folds cut from the training rows only (the test rows never reach a trial),
the split file's own CV folds used when it has them, the search space checked, the best
settings written as a config that loads, and the same trials for the same seed."""

import json
import sys

import numpy as np
import pytest
import yaml

import polytask.analysis._tune as tuning
from polytask.app import RunConfig
from polytask.app._data import load_frame, make_split
from polytask.cli._config_io import load_config, parse_config
from polytask.cli._main import main
from polytask.tasks import Task

pytest.importorskip("optuna", reason="polytask tune needs optuna (polytask[tune])")

RAW = {
    "data": {"builtin": "many_tasks",
             "options": {"n_tasks": 5, "rows_per_task": 30, "n_features": 3}},
    "tasks": {"from_column": "task", "target": "y", "kind": "regression"},
    "model": {"architecture": "mean_regularised", "hidden": [8]},
    "training": {"epochs": 2, "batch_size": 64, "progress": False},
}  # fmt: skip


def _parse(raw):  # type: ignore[no-untyped-def]
    return parse_config(dict(raw))


def test_folds_cover_the_training_rows_and_never_the_test_rows():
    config = _parse(RAW)
    frame = load_frame(config)
    split = make_split(config, len(frame), frame=frame)
    folds = tuning.cv_folds(config, 3)
    assert len(folds) == 3
    held = np.sort(np.concatenate([h for _, h in folds]))
    assert np.array_equal(held, np.sort(np.concatenate([split.train, split.val])))
    for fit_rows, rows in folds:
        assert not set(fit_rows) & set(rows)
        assert not (set(fit_rows) | set(rows)) & set(split.test)
        tasks = frame["task"].to_numpy()
        assert set(tasks[rows]) == set(tasks)  # within each task: every task in every fold


def test_a_split_files_own_cv_folds_are_used(tmp_path):
    n = len(load_frame(_parse(RAW)))
    train, test = np.arange(0, n, 3), np.arange(1, n, 3)
    np.savez(tmp_path / "s.npz", train_idx=train[::-1], test_idx=test,
             train_cv_fold=(train[::-1] % 2))  # fmt: skip
    raw = {**RAW, "data": {**RAW["data"], "split": {"file": str(tmp_path / "s.npz")}}}
    folds = tuning.cv_folds(_parse(raw), 5)
    assert len(folds) == 2  # the file's folds, not --folds
    for f, (fit_rows, rows) in enumerate(folds):
        assert set(rows) == {r for r in train if r % 2 == f} and not set(rows) & set(test)
        assert set(fit_rows) == set(train) - set(rows)
    own = tuning.file_folds(_parse(raw))  # what the command counts and says it tunes by
    assert own is not None and set(own.values()) == {0, 1} and set(own) == set(train.tolist())
    assert tuning.file_folds(_parse(RAW)) is None


def test_a_split_files_folds_cover_its_validation_rows_or_are_refused(tmp_path):
    """Found by an outside review: a file with val_idx (as `train`'s split.npz) and one fold id
    per train_idx row failed with an internal error; with one per train and validation row,
    or of any other length, the ids were dropped without a word for random folds."""
    n = len(load_frame(_parse(RAW)))
    train, val, test = np.arange(0, n, 3), np.arange(2, n, 3), np.arange(1, n, 3)

    def config(folds):  # type: ignore[no-untyped-def]
        np.savez(tmp_path / "v.npz", train_idx=train, val_idx=val, test_idx=test,
                 train_cv_fold=folds)  # fmt: skip
        return _parse({**RAW, "data": {**RAW["data"], "split": {"file": str(tmp_path / "v.npz")}}})

    both = np.concatenate([train, val])
    folds = tuning.cv_folds(config(both % 2), 5)
    assert [set(rows) for _, rows in folds] == [{r for r in both if r % 2 == f} for f in (0, 1)]
    for short in (train % 2, np.zeros(3, dtype=int)):
        with pytest.raises(
            ValueError,
            match=r"train_cv_fold has \d+ fold ids for the "
            rf"{len(both)} rows of train_idx then val_idx",
        ):
            tuning.cv_folds(config(short), 3)


def test_a_split_files_folds_that_cut_a_group_are_refused_naming_them(tmp_path):
    """With split.by, file folds that put a group on both sides were refused naming a
    temporary fold file and train_idx / test_idx, which were fine."""
    task = load_frame(_parse(RAW))["task"].astype(str).to_numpy()
    test = np.flatnonzero(task == task[-1])  # one whole group held out
    train = np.flatnonzero(task != task[-1])
    np.savez(tmp_path / "g.npz", train_idx=train, test_idx=test, train_cv_fold=train % 2)
    raw = {**RAW, "data": {**RAW["data"], "split": {"file": str(tmp_path / "g.npz"),
                                                    "by": "task"}}}  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"g\.npz: train_cv_fold puts \d+ group\(s\) of task in "
        "more than one fold",
    ):
        tuning.cv_folds(_parse(raw), 3)


def test_no_trial_reads_the_test_rows(monkeypatch):
    config = _parse(RAW)
    frame = load_frame(config)
    test_rows = set(make_split(config, len(frame), frame=frame).test)
    seen: list[set[int]] = []
    real = tuning.load_prepared

    def watching(cfg: RunConfig):  # type: ignore[no-untyped-def]
        with np.load(cfg.data.split.file) as f:
            seen.append(set(f["train_idx"]) | set(f["test_idx"]))
        return real(cfg)

    monkeypatch.setattr(tuning, "load_prepared", watching)
    result = tuning.tune(RAW, _parse, trials=2, folds=2)
    assert len(seen) == 2 + 2 * 2 - sum(2 - t["folds_run"] for t in result.trials)
    assert all(not rows & test_rows for rows in seen)
    assert len(result.baseline) == 2 and len(result.trials) == 2


def test_the_search_space_is_checked_and_settings_land_in_the_mapping():
    with pytest.raises(ValueError, match=r"log needs \[low, high\] with low < high and low > 0"):
        tuning.check_space({"training.lr": {"log": [0, 1]}})
    with pytest.raises(ValueError, match="unknown 'grid'"):
        tuning.check_space({"training.lr": {"grid": [1, 2]}})
    with pytest.raises(ValueError, match="choice needs a non-empty list"):
        tuning.check_space({"model.hidden": {"choice": []}})
    set_ = tuning.with_settings(
        RAW, {"training.lr": 0.1, "model.hidden": [4], "balancer.name": "dwa"}
    )
    assert set_["training"]["lr"] == 0.1 and set_["model"]["hidden"] == [4]
    assert set_["balancer"] == {"name": "dwa"} and "balancer" not in RAW
    space = tuning.default_space(_parse(RAW))
    assert {"training.lr", "model.coupling", "model.hidden", "model.dropout"} <= set(space)


def test_a_default_space_the_model_refuses_says_it_is_the_default(monkeypatch):
    """A plugin architecture whose `hidden` means something else: the refusal named a 'search
    space' the user never gave."""
    pytest.importorskip("optuna")
    monkeypatch.setattr(
        tuning, "default_space", lambda *a, **k: {"model.dropout": {"range": [0.0, 1.5]}}
    )
    with pytest.raises(
        ValueError,
        match=r"tune's default search space \(no --space given\) "
        r"does not fit this model: search space 'model.dropout'.*Give --space",
    ):
        tuning.tune(RAW, _parse, trials=1)  # fmt: skip
    with pytest.raises(ValueError, match=r"^search space 'model.dropout'"):  # a given one
        tuning.tune(RAW, _parse, trials=1, space={"model.dropout": {"range": [0.0, 1.5]}})


def test_the_cli_writes_the_best_config_and_the_same_seed_gives_the_same_trials(tmp_path, capsys):
    slow = {**RAW["training"], "lr": 1e-5, "epochs": 15}  # a rate the space's trials beat
    data = {**RAW["data"], "options": {**RAW["data"]["options"], "rows_per_task": 100}}
    given = {**RAW, "data": data, "training": slow, "output_dir": "run"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(given))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({
        "training.lr": {"log": [3e-3, 3e-2]}, "model.hidden": {"choice": [[4], [8, 8]]}
    }))  # fmt: skip
    args = ["-q", "tune", str(tmp_path / "c.yaml"), "--trials", "3", "--folds", "2",
            "--space", str(tmp_path / "space.yaml")]  # fmt: skip
    code, said = main(args), capsys.readouterr()
    assert code == 0, said.err
    # the fold files leave the test rows out by design: no warning about them (was one a run)
    assert "split file" not in said.err, said.err
    printed = said.out
    assert "train it and score the test rows once: polytask train" in printed
    best = load_config(tmp_path / "c.best.yaml")
    assert best.output_dir.endswith("run-tuned")  # not the folder of the runs it compares with
    saved = json.loads((tmp_path / "run" / "tune" / "tune.json").read_text())
    assert best.training.lr == pytest.approx(saved["best"]["settings"]["training.lr"])
    assert set(saved["space"]) == {"training.lr", "model.hidden"}
    assert main([*args, "--out", str(tmp_path / "again")]) == 2  # c.best.yaml is there
    assert "c.best.yaml: an earlier tune's results: --overwrite replaces" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "again"), "--overwrite"]) == 0
    assert "polytask train " + str(tmp_path / "c.best.yaml") in capsys.readouterr().out
    again = json.loads((tmp_path / "again" / "tune.json").read_text())
    assert [t["settings"] for t in again["trials"]] == [t["settings"] for t in saved["trials"]]


def test_nothing_is_written_when_no_trial_beats_the_config_and_bad_spaces_stop_early(
    tmp_path, capsys
):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**RAW, "output_dir": "run"}))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"training.lr": {"log": [1e-7, 1e-6]}}))
    args = ["-q", "tune", str(tmp_path / "c.yaml"), "--trials", "2", "--folds", "2",
            "--space", str(tmp_path / "space.yaml")]  # fmt: skip
    assert main(args) == 0
    assert "no trial beat the config as given" in capsys.readouterr().out
    assert not (tmp_path / "c.best.yaml").exists()
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"model.dropout": {"range": [0.1, 1.5]}}))
    assert main(args) == 2  # run/tune/tune.json holds the first search's trials
    assert "tune.json: an earlier tune's results: --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 2
    assert "search space 'model.dropout': the config refuses 1.5" in capsys.readouterr().err
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"training.lrr": {"log": [1e-3, 1e-2]}}))
    assert main([*args, "--overwrite"]) == 2  # the path is wrong, not its values
    assert "search space 'training.lrr': no such setting (did you mean 'lr'?)" in (
        capsys.readouterr().err
    )
    assert "trial 0" not in capsys.readouterr().err  # refused before any trial


def test_without_optuna_the_message_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r"pip install 'polytask\[tune\]'"):
        tuning.tune(RAW, _parse, trials=1)


def test_a_metric_undefined_on_the_fold_is_left_out_and_one_the_trial_breaks_fails_it():
    from polytask.tasks import Undefined

    directions = {"a": True, "b": False}
    nan = float("nan")
    value = tuning.defined_delta_m({"a": 0.8, "b": nan}, {"a": 0.5, "b": nan}, directions)
    assert value == pytest.approx(60.0)  # b undefined for the config as given too: a alone
    assert np.isnan(tuning.defined_delta_m({"a": nan}, {"a": nan}, {"a": True}))
    broken = {"a": 0.8, "b": Undefined("predictions not finite")}
    with pytest.raises(tuning.TrialFailed, match=r"undefined for b \(predictions not finite\)"):
        tuning.defined_delta_m(broken, {"a": 0.5, "b": 2.0}, directions)  # not a's +60% alone


def with_weights(raw, *weights):  # type: ignore[no-untyped-def]
    members = [{**m, "weight": w} for m, w in zip(raw["model"]["blend"], weights, strict=True)]
    return {**raw, "model": {**raw["model"], "blend": members}}


def test_configs_tune_cannot_fold_are_refused_and_a_params_model_keeps_its_form(tmp_path):
    raw = {**RAW, "model": {"architecture": "mean_regularised", "params": {"hidden": [8]}}}
    space = tuning.default_space(_parse(raw), raw)
    assert "model.params.hidden" in space and "model.hidden" not in space
    assert "model.params.coupling" in space  # tasks pulled to their mean: how hard, tuned
    alone = tuning.default_space(_parse(raw), raw, single_task=True)
    assert "model.params.coupling" not in alone  # one task: nothing to couple
    assert alone.keys() == space.keys() - {"model.params.coupling"}
    exact = {**raw, "training": {**raw["training"], "optimizer": "lbfgs"}}
    lbfgs = tuning.default_space(_parse(exact), exact)  # its line search sets the step
    assert lbfgs.keys() == space.keys() - {"training.lr", "model.params.dropout"}
    linear = {**exact, "model": {**raw["model"], "params": {"hidden": []}}}
    kept = tuning.default_space(_parse(linear), linear)  # the classic linear model stays linear
    assert kept.keys() == lbfgs.keys() - {"model.params.hidden"}
    adam = {**raw, "model": {**raw["model"], "params": {"hidden": []}}}  # no layer to drop
    assert tuning.default_space(_parse(adam), adam).keys() == kept.keys() | {"training.lr"}
    mixed = {**exact, "model": {"architecture": "multilevel"}}  # linear by default; no coupling
    prior = tuning.default_space(_parse(mixed), mixed)
    assert prior == {"training.weight_decay": {"log": [1e-6, 1e-1]},
                     "model.covariance": {"choice": ["diagonal", "full"]}}  # fmt: skip
    full = {**mixed, "model": {"architecture": "multilevel", "params": {"covariance": "full"}}}
    shrunk = tuning.default_space(_parse(full), full)  # shrinkage 1 is the diagonal
    assert shrunk.keys() == {"training.weight_decay", "model.params.shrinkage"}
    forest = {"architecture": "forest", "weight": 0.3, "training": {"epochs": 1}}
    blended = {**mixed, "model": {"architecture": "multilevel", "blend": [forest, forest]}}
    shares = tuning.default_space(_parse(blended), blended)  # two members: together below 1
    assert shares.keys() == prior.keys() | {"model.blend.0.weight", "model.blend.1.weight"}
    assert shares["model.blend.1.weight"] == {"range": [0.05, 0.475]}
    both = tuning.with_settings(blended, {"model.blend.0.weight": 0.475,
                                          "model.blend.1.weight": 0.475})  # fmt: skip
    assert _parse(both).model.blend_weights() == pytest.approx((0.05, 0.475, 0.475))
    assert blended["model"]["blend"][0]["weight"] == 0.3  # the mapping given is left as it was
    uneven = with_weights(blended, 0.05, 0.9)  # valid as given; the space's bounds drawn apart
    tuning.check_bounds(uneven, _parse, tuning.default_space(_parse(uneven), uneven))
    grown = {**mixed, "model": {"architecture": "forest"}}  # a forest: its own parameters only
    assert tuning.default_space(_parse(grown), grown) == {
        "model.min_leaf": {"choice": [1, 3, 5, 10, 20]},
        "model.max_features": {"range": [0.2, 1.0]},
    }
    process = {**mixed, "model": {"architecture": "gp"}}  # a gp: whether to warp its targets
    assert tuning.default_space(_parse(process), process) == {
        "model.warp": {"choice": ["boxcox", "none"]}
    }
    for raw_config, space in ((mixed, prior), (full, shrunk)):  # every bound builds a model
        for path, spec in space.items():
            for value in next(iter(spec.values())):
                _parse(tuning.with_settings(raw_config, {path: value})).model.build(
                    3, [Task("t", "regression")]
                )
    sources = {"data": {"sources": [{"path": str(tmp_path / "a.csv")}]}}
    config = RunConfig.__new__(RunConfig)  # only its data is read
    object.__setattr__(config, "data", type("D", (), {
        "sources": sources, "text": None, "images": None, "audio": None})())  # fmt: skip
    with pytest.raises(ValueError, match="several data sources"):
        tuning.check_tunable(config)


def test_single_task_tuning_scores_one_model_per_task_and_compare_trains_baselines_with_it(
    tmp_path, capsys, monkeypatch
):
    slow = {**RAW["training"], "lr": 1e-5, "epochs": 10}  # a rate the space's trials beat
    given = {**RAW, "training": slow, "output_dir": "run"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(given))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"training.lr": {"log": [3e-3, 3e-2]}}))
    fitted_tasks: list[list[str] | None] = []
    real_fit = tuning.fit_single_task

    def watching(cfg, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        fitted_tasks.append([t.name for t in data.tasks])
        return real_fit(cfg, data, *args, **kwargs)

    monkeypatch.setattr(tuning, "fit_single_task", watching)
    args = ["-q", "tune", str(tmp_path / "c.yaml"), "--trials", "2", "--folds", "2",
            "--space", str(tmp_path / "space.yaml"), "--single-task"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "single-task models" in printed and "--baseline-config" in printed
    assert len(fitted_tasks) == 2 + 2 * 2  # the given config and each trial, on every fold
    single = load_config(tmp_path / "c.single.yaml")
    assert single.training.lr > 1e-3 and not (tmp_path / "c.best.yaml").exists()
    # its own results file and run folder, beside (never over) the multi-task search's
    assert (tmp_path / "run" / "tune" / "tune_single.json").is_file()
    assert not (tmp_path / "run" / "tune" / "tune.json").exists()
    assert single.output_dir.endswith("run-single-tuned")

    import polytask.analysis._baselines as baselines

    seen: list[tuple[float, int]] = []
    real = baselines.fit_single_task

    def recording(cfg, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((cfg.training.lr, cfg.training.seed))
        return real(cfg, data, *args, **kwargs)

    monkeypatch.setattr(baselines, "fit_single_task", recording)
    compare = ["-q", "compare", str(tmp_path / "c.yaml"), "--seeds", "2", "--no-classic",
               "--no-report", "--baseline-config", str(tmp_path / "c.single.yaml")]  # fmt: skip
    assert main(compare) == 0, capsys.readouterr().err
    assert seen == [(single.training.lr, 0), (single.training.lr, 1)]
    assert "single-task models: the model and training settings of" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "run" / "compare.json").read_text())["single_task_settings"]
    assert recorded["training"]["lr"] == single.training.lr
    assert recorded["file"] == str(tmp_path / "c.single.yaml")
    # the same folder without --baseline-config would mix two comparisons: refused
    assert main(compare[:-2]) == 2
    assert "single-task models had other settings" in capsys.readouterr().err
    other = {**given, "tasks": {**given["tasks"], "target": "x0"}}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    assert main([*compare[:-1], str(tmp_path / "other.yaml")]) == 2
    assert "its tasks differ from the config's" in capsys.readouterr().err


def test_a_gain_within_the_folds_noise_is_not_a_gain():
    noisy = {"delta_m": 0.1, "fold_delta_m": [0.5, -0.3, 0.1]}
    assert tuning.standard_error(noisy) == pytest.approx(0.4 / np.sqrt(3))
    assert not tuning.clear_gain(noisy)
    steady = {"delta_m": 2.0, "fold_delta_m": [2.0, 2.2, 1.8]}
    assert tuning.standard_error(steady) == pytest.approx(0.2 / np.sqrt(3))
    assert tuning.clear_gain(steady)
    assert not tuning.clear_gain({**steady, "delta_m": -2.0, "fold_delta_m": [-2.0, -2.2, -1.8]})
    one_fold = {"delta_m": 0.5, "fold_delta_m": [0.5, float("nan")]}
    assert np.isnan(tuning.standard_error(one_fold)) and tuning.clear_gain(one_fold)


def test_the_cli_writes_nothing_for_a_gain_within_the_noise(tmp_path, capsys, monkeypatch):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**RAW, "output_dir": "run"}))
    found = tuning.TuneResult({"training.lr": {"log": [1e-3, 1e-2]}}, 3)
    found.trials = [{"number": 0, "settings": {"training.lr": 0.002}, "state": "complete",
                     "delta_m": 0.01, "fold_delta_m": [0.3, -0.2, -0.07], "folds_run": 3,
                     "seconds": 1.0}]  # fmt: skip
    monkeypatch.setattr(tuning, "tune", lambda *a, **k: found)
    assert main(["-q", "tune", str(tmp_path / "c.yaml"), "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "CV Δm +0.01% is within the folds' noise (standard error ±0.15% over 3 folds)" in out
    assert not (tmp_path / "c.best.yaml").exists()
    saved = json.loads((tmp_path / "run" / "tune" / "tune.json").read_text())
    assert saved["best"]["fold_delta_m"] == [0.3, -0.2, -0.07]


def test_a_diverging_trial_fails_alone_and_the_search_goes_on():
    lines: list[str] = []
    space = {"training.lr": {"choice": [1e9, 1e30]}}  # every trial's loss overflows
    result = tuning.tune(RAW, _parse, trials=2, folds=2, space=space, report=lines.append)
    assert [t["state"] for t in result.trials] == ["diverged", "diverged"]
    assert all(t["error"].startswith("fold 0: step") for t in result.trials)  # in tune.json
    assert result.best is None  # no trial to choose: the config as given stays
    assert all("diverged (fold 0: step" in line and "non-finite loss" in line for line in lines[1:])
    assert tuning.settings_table(result)[0][1] == "diverged"


def test_a_split_by_group_folds_and_validates_on_whole_groups(tmp_path, monkeypatch):
    import pandas as pd

    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(24), 5)
    y = rng.normal(size=24)[patients] + 0.1 * rng.normal(size=120)
    frame = pd.DataFrame({"patient": patients, "x0": rng.normal(size=120), "y": y})
    frame.to_csv(tmp_path / "patients.csv", index=False)
    holdout = np.flatnonzero(patients >= 20)
    np.savez(tmp_path / "split.npz", train_idx=np.flatnonzero(patients < 20), test_idx=holdout)
    raw = {
        "data": {"path": str(tmp_path / "patients.csv"), "features": {"numeric": ["x0"]},
                 "split": {"file": str(tmp_path / "split.npz"), "by": "patient",
                           "val_fraction": 0.2}},
        "tasks": [{"name": "y", "kind": "regression"}],
        "model": {"hidden": [4]},
        "training": {"epochs": 1, "batch_size": 32, "progress": False},
    }  # fmt: skip
    fits: list[tuple[set[int], set[int], set[int]]] = []
    real = tuning.load_prepared

    def watching(cfg: RunConfig):  # type: ignore[no-untyped-def]
        split = make_split(cfg, len(frame), frame=frame)
        fits.append(tuple(set(patients[rows]) for rows in (split.train, split.val, split.test)))
        return real(cfg)

    monkeypatch.setattr(tuning, "load_prepared", watching)
    tuning.tune(raw, _parse, trials=1, folds=2, space={"training.lr": {"log": [1e-3, 1e-2]}})
    assert len(fits) >= 2
    for train, val, held in fits:  # fold by patient; each fold's validation patients new too
        assert val and not train & val and not train & held and not val & held
        assert not held & set(range(20, 24))  # the file's test patients never reach a trial


def test_space_bounds_yaml_reads_as_strings_are_numbers():
    loaded = yaml.safe_load("training.lr: {log: [1e-4, 1.0e6]}\nmodel.dropout: {range: [0, x]}")
    assert isinstance(loaded["training.lr"]["log"][0], str)  # YAML 1.1's float needs a dot
    space = tuning.check_space({"training.lr": loaded["training.lr"]})
    assert space["training.lr"]["log"] == [1e-4, 1e6]
    with pytest.raises(ValueError, match=r"range needs \[low, high\] with low < high, got"):
        tuning.check_space({"model.dropout": loaded["model.dropout"]})


def test_a_huge_cv_delta_m_prints_in_three_digits():
    assert tuning.delta_text(11.634) == "+11.63" and tuning.delta_text(-0.004) == "-0.00"
    assert tuning.delta_text(-17647446275.02) == "-1.76e+10"


def test_the_trials_table_shows_a_quick_trial_s_time_in_tenths():
    found = tuning.TuneResult({"training.lr": {"log": [1e-3, 1e-2]}}, 3)
    found.trials = [
        {"number": n, "settings": {"training.lr": 0.002}, "state": "complete", "delta_m": 1.0,
         "seconds": s}
        for n, s in enumerate([0.42, 37.4])
    ]  # fmt: skip
    assert [row[3] for row in tuning.settings_table(found)] == ["0.4", "37"]


def test_tune_without_optuna_is_one_clear_error(tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def without_optuna(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("No module named 'optuna'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_optuna)
    assert main(["-q", "tune", str(tmp_path / "absent.yaml"), "--trials", "1"]) == 2
    said = capsys.readouterr().err
    assert said.startswith("error: polytask tune needs Optuna: pip install 'polytask[tune]'")
    assert "Traceback" not in said


def test_best_folds_and_an_empty_space_are_checked_before_any_trial(tmp_path, capsys):
    """Before: --best replaced the config or its data file, was refused only after every
    trial (naming a temp file), and wrote relative paths that broke in another folder;
    --folds beyond the rows trained first; an empty space ran trials of nothing."""
    from polytask.data import make_customers

    make_customers(600).to_csv(tmp_path / "d.csv", index=False)
    config = {"data": {"path": "d.csv", "features": {"numeric": ["tenure_months", "age"]}},
              "tasks": [{"name": "churn", "kind": "binary"}], "output_dir": "run",
              "training": {"epochs": 1, "progress": False}}  # fmt: skip
    (tmp_path / "c.yaml").write_text(text := yaml.safe_dump(config))
    (tmp_path / "sub").mkdir()
    tune = ["-q", "tune", str(tmp_path / "c.yaml"), "--trials", "1"]
    expected = {
        "c.yaml": "is the config this command reads",
        "d.csv": "is the file",
        "sub": "is a folder: give a file name",
        "absent/x.yaml": "no folder",
        "sub/x.yaml": "relative paths (data, output_dir) are read from its folder",
    }
    for best, message in expected.items():
        assert main([*tune, "--best", str(tmp_path / best)]) == 2
        assert message in capsys.readouterr().err, best
    assert (tmp_path / "c.yaml").read_text() == text and not (tmp_path / "absent").exists()
    assert main([*tune, "--folds", "481"]) == 2  # 480 training and validation rows
    assert "make a fold of 0 rows (at least 5 needed" in capsys.readouterr().err
    (tmp_path / "space.yaml").write_text("{}\n")
    assert main([*tune, "--space", str(tmp_path / "space.yaml")]) == 2
    assert "the search space is empty" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing trained


def test_each_tasks_labelled_rows_spread_evenly_over_the_folds(tmp_path):
    """Folds were cut over a task's rows labelled or not: with most labels missing, one
    task's labelled held-out rows fell 3/7/2 over three folds (outside review)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"task": np.repeat(["a", "b", "c"], 60), "x0": rng.normal(size=180)})
    frame["y"] = frame["x0"] + rng.normal(size=180)
    frame.loc[rng.random(180) < 0.6, "y"] = np.nan
    frame.to_csv(tmp_path / "few.csv", index=False)
    config = _parse({**RAW, "data": {"path": str(tmp_path / "few.csv"),
                                      "features": {"numeric": ["x0"]}}})  # fmt: skip
    labelled = frame["y"].notna().to_numpy()
    tasks = frame["task"].to_numpy()
    for task in "abc":
        counts = [int((labelled[rows] & (tasks[rows] == task)).sum()) for _, rows in
                  tuning.cv_folds(config, 3)]  # fmt: skip
        assert max(counts) - min(counts) <= 1, (task, counts)


def test_fold_counts_beyond_the_groups_and_a_diverging_config_are_said(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"site": np.repeat(np.arange(8), 30), "x0": rng.normal(size=240)})
    frame["y"] = frame["x0"] + rng.normal(size=240)
    frame.to_csv(tmp_path / "sites.csv", index=False)
    raw = {
        "data": {"path": str(tmp_path / "sites.csv"), "features": {"numeric": ["x0"]},
                 "split": {"by": "site", "test_fraction": 0.25, "val_fraction": 0.2}},
        "tasks": [{"name": "y", "kind": "regression"}],
        "training": {"epochs": 1, "batch_size": 32, "progress": False},
    }  # fmt: skip
    config = _parse(raw)
    split = make_split(config, len(frame), frame=frame)
    sites = len(set(frame["site"].to_numpy()[np.concatenate([split.train, split.val])]))
    with pytest.raises(ValueError, match=rf"give --folds {sites} or fewer"):
        tuning.cv_folds(config, sites + 1)
    raw["training"]["lr"] = 1e30  # the config as given cannot train: no trial to score
    with pytest.raises(ValueError, match="the config as given diverged on fold 0"):
        tuning.tune(raw, _parse, trials=1, folds=2, space={"training.weight_decay": {
            "log": [1e-6, 1e-3]}})  # fmt: skip


def test_a_bound_the_built_model_refuses_stops_the_search_before_any_training(tmp_path, capsys):
    """Found by review: dropout on a linear mean_regularised trunk is refused only when the
    model is built, so the default space (which drew it) failed at the first trial, after the
    config as given had trained on every fold; a bound is now checked on the built model."""
    from polytask.data import make_customers

    make_customers(600).to_csv(tmp_path / "d.csv", index=False)
    config = {"data": {"path": "d.csv", "features": {"numeric": ["tenure_months", "age"]}},
              "tasks": [{"name": "churn", "kind": "binary"}, {"name": "ltv", "kind": "regression"}],
              "model": {"architecture": "mean_regularised", "hidden": []},
              "output_dir": "run", "training": {"epochs": 1, "progress": False}}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "space.yaml").write_text("model.dropout: {range: [0.0, 0.5]}\n")
    tune = ["-q", "tune", str(tmp_path / "c.yaml"), "--trials", "1"]
    assert main([*tune, "--space", str(tmp_path / "space.yaml")]) == 2
    said = capsys.readouterr().err
    assert "search space 'model.dropout': the config refuses 0.5" in said, said
    assert "hidden: [] has none" in said and not (tmp_path / "run").exists()
