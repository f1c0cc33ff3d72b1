"""CLI errors and start-up (issue 20, items 9, 12-16, 19): one clear sentence per problem that
names the path or the CLI flag, a full disk that leaves no partial file, SIGTERM that says what
it left to resume from, predictions from any checkpoint of a run, and a fast `--help`."""

import errno
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml

import polytask.cli._main as cli
from polytask._audience import command_line
from polytask.cli._main import build_parser, main
from polytask.data import make_customers
from polytask.train._checkpoint import save_checkpoint
from polytask.train._run_folder import check_fresh

CONFIG = {
    "data": {
        "path": "data.csv",
        "features": {"numeric": ["usage_0", "usage_1", "age"], "categorical": ["region"]},
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
    },
    "tasks": [{"name": "churn", "kind": "binary"}, {"name": "ltv", "kind": "regression"}],
    "model": {"hidden": [8]},
    "training": {"epochs": 2, "batch_size": 64, "progress": False, "keep_best": True},
    "output_dir": "run",
}


@pytest.fixture
def project(tmp_path):
    make_customers(300, seed=0).to_csv(tmp_path / "data.csv", index=False)
    return tmp_path


def _config(folder, **changes) -> str:
    cfg = {**CONFIG, **changes}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture
def trained(project, capsys):
    """A finished run (model.pt, best.pt, checkpoints/step-*.pt) in project/run."""
    assert main(["-q", "train", _config(project)]) == 0
    capsys.readouterr()
    return project / "run"


def _clean(err: str) -> None:
    assert "Traceback" not in err and "https://" not in err and "[Errno" not in err, err


# item 9: a full disk ------------------------------------------------------------------------


def test_train_onto_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(
    project, capsys, monkeypatch
):
    import torch

    real_save, calls = torch.save, []

    def fills_up(obj, path):  # the second checkpoint does not fit
        calls.append(path)
        if len(calls) > 1:
            real_save(obj, path)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . file write failed")
        real_save(obj, path)

    monkeypatch.setattr(torch, "save", fills_up)
    assert main(["-q", "train", _config(project)]) == 1
    err = capsys.readouterr().err
    _clean(err)
    assert "error: cannot write " in err and "no space left on its disk" in err
    assert "it needs about" in err and "inline_container" not in err
    kept = list((project / "run" / "checkpoints").iterdir())
    assert [p.name for p in kept] == ["step-00000003.pt"]  # whole, and no temporary file
    monkeypatch.undo()
    assert main(["-q", "predict", str(kept[0]), str(project / "data.csv")]) == 0


def test_predict_onto_a_full_disk_leaves_no_partial_file(trained, capsys, monkeypatch):
    out = trained.parent / "p.csv"
    real = pathlib.Path.write_bytes

    def half(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half)
    args = ["predict", str(trained / "model.pt"), str(trained.parent / "data.csv"), "-o"]
    assert main([*args, str(out)]) == 1
    err = capsys.readouterr().err
    _clean(err)
    assert f"cannot write {out}: no space left" in err and "it needs about" in err
    assert not out.exists() and not list(trained.parent.glob(".p.csv*"))


# item 12: predict from best.pt and checkpoints/step-*.pt ------------------------------------


def test_predict_from_best_and_step_checkpoints(trained, capsys):
    data = str(trained.parent / "data.csv")
    step = sorted((trained / "checkpoints").glob("step-*.pt"))[-1]
    for source in (trained / "model.pt", trained / "best.pt", step):
        out = trained.parent / f"{source.stem}.csv"
        assert main(["-q", "predict", str(source), data, "-o", str(out)]) == 0, capsys.readouterr()
    # model.pt restores the best weights: best.pt predicts the same
    pd.testing.assert_frame_equal(
        pd.read_csv(trained.parent / "model.csv"), pd.read_csv(trained.parent / "best.csv")
    )
    assert list(pd.read_csv(trained.parent / f"{step.stem}.csv").columns)[:2] == [
        "churn",
        "churn_prob",
    ]


def test_a_checkpoint_without_the_encoding_says_which_file_to_use(trained, capsys):
    old = trained / "checkpoints" / "step-00000099.pt"  # as a Trainer alone writes it
    save_checkpoint(old, {"model": {}}, {"step": 99})
    data = str(trained.parent / "data.csv")
    assert main(["predict", str(old), data]) == 2
    err = capsys.readouterr().err
    assert "is a training checkpoint without the data encoding" in err
    assert f"predict from {trained / 'model.pt'}" in err and "'tasks'" not in err
    (trained / "model.pt").unlink()
    assert main(["predict", str(old), data]) == 2
    err = capsys.readouterr().err
    assert "holds no model.pt: finish the run with `polytask train CONFIG --resume`" in err


# item 13: demo arguments, pydantic messages -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        (["--n", "10"], "argument --n: must be at least 500"),
        (["--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
        (["--n", "many"], "argument --n: expected a whole number, got 'many'"),
    ],
)
def test_demo_arguments_are_checked_up_front(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        main(["demo", *args, "--out", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    _clean(err)


def test_a_pydantic_error_anywhere_is_one_clean_sentence(tmp_path, capsys, monkeypatch):
    from polytask.cli import _demo

    real = _demo.demo_config
    monkeypatch.setattr(_demo, "demo_config", lambda **kw: real(**{**kw, "epochs": 0}))
    assert main(["demo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("error: epochs must be at least 1, got 0")
    _clean(err)
    assert "validation error" not in err and "type=" not in err


# item 14: a directory or device where a file is expected ------------------------------------


def test_a_directory_or_device_is_named_as_such(project, capsys):
    folder = project / "folder"
    folder.mkdir()
    cases = [
        (["train", str(folder)], f"config file {folder} is a directory"),
        (
            ["predict", str(folder), str(project / "data.csv")],
            f"checkpoint {folder} is a directory",
        ),
        (["predict", "model.pt", os.devnull], f"data file {os.devnull} is not a regular file"),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "does not exist" not in err, err
    split = {**CONFIG["data"], "split": {"file": "folder"}}
    assert main(["train", _config(project, data=split)]) == 2
    assert f"split file {folder} is a directory" in capsys.readouterr().err


def test_predict_on_a_run_folder_names_its_model_file(trained, capsys):
    assert main(["predict", str(trained), str(trained.parent / "data.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{trained} is a directory: give the model file in it, {trained / 'model.pt'}" in err


# item 15: unknown keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"path": "data.csv", "features": {"numerical": ["age"]}},
            "data.features.numerical: unknown field (did you mean 'numeric'?); allowed here: "
            "numeric, categorical",
        ),
        (
            {"path": "data.csv", "features": {"numeric": ["age"]}, "split": {"sed": 1}},
            "data.split.sed: unknown field (did you mean 'seed'?); allowed here: file,",
        ),
        (
            {"sources": [{"path": "data.csv", "tsks": ["churn"]}], "features": {}},
            "data.sources[0].tsks: unknown field (did you mean 'tasks'?); allowed here: path,",
        ),
        (
            {"path": "data.csv", "featurs": {}},
            "data.featurs: unknown field (did you mean 'features'?); allowed here: path,",
        ),
    ],
)
def test_an_unknown_key_lists_the_allowed_ones_and_the_nearest(project, capsys, data, message):
    assert main(["train", _config(project, data=data)]) == 2
    err = capsys.readouterr().err
    assert message in err and "?;" not in err.replace("?);", ""), err


def test_unknown_keys_in_every_section_suggest_the_nearest(project, capsys):
    cfg = {**CONFIG, "training": {"epoch": 2}, "balancer": {"nme": "ew"}}
    assert main(["train", _config(project, **cfg)]) == 2
    err = capsys.readouterr().err
    assert "training.epoch: unknown field (did you mean 'epochs'?)" in err
    assert "balancer.nme: unknown field (did you mean 'name'?); allowed here: name, params" in err


@pytest.mark.parametrize(
    ("section", "got"),
    [
        ({"training": ["epochs"]}, "training: a mapping of settings, name: value (e.g. "
         "training: {epochs: ...}); its settings: epochs, steps,"),
        ({"training": 30}, "its settings: epochs, steps,"),
    ],
)  # fmt: skip
def test_a_list_for_a_section_says_it_is_a_mapping_and_its_settings(project, capsys, section, got):
    assert main(["train", _config(project, **{**CONFIG, **section})]) == 2
    err = capsys.readouterr().err
    assert got in err, err
    assert ("got a list" if isinstance(section["training"], list) else "got the number 30") in err
    assert "instance of" not in err


@pytest.mark.parametrize(
    ("images", "said"),
    [
        ({"size": [32]}, "data.images.size: a list of 2 values, got 1 ([32])"),
        ({"size": [32, 32], "augment": {"crop_scale": [0.1, 0.2, 0.3]}},
         "data.images.augment.crop_scale: a list of 2 values, got 3 ([0.1, 0.2, 0.3])"),
    ],
)  # fmt: skip
def test_a_list_of_the_wrong_length_says_how_many_values(project, capsys, images, said):
    data = {"images": {"manifest": "m.csv", **images}}
    assert main(["train", _config(project, data=data)]) == 2
    err = capsys.readouterr().err
    assert said in err and "required field" not in err, err


@pytest.mark.parametrize(
    ("tokenizer", "said"),
    [
        ("sentencepiece", "data.text.tokenizer: Input should be 'bpe', 'wordpiece' or 'word', "
                          "or a mapping of settings (got 'sentencepiece')"),
        ({"path": 3}, "data.text.tokenizer.path: Input should be a valid string (got 3)"),
    ],
)  # fmt: skip
def test_a_choice_or_a_mapping_is_one_message_for_the_form_given(project, capsys, tokenizer, said):
    data = {"text": {"path": "t.jsonl", "tokenizer": tokenizer}}
    assert main(["train", _config(project, data=data)]) == 2
    err = capsys.readouterr().err
    assert said in err and "TokenizerFile" not in err and "literal[" not in err, err
    assert err.strip().splitlines()[-2].startswith("error: "), err  # and the one problem


# item 16: CLI wording, SIGTERM, read-only folders -------------------------------------------


def test_a_resume_with_other_settings_names_cli_flags(trained, capsys):
    changed = {**CONFIG["training"], "lr": 0.5}
    assert main(["train", _config(trained.parent, training=changed), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was written by a different run: config.training.lr: 0.001 → 0.5" in err
    assert "--overwrite" in err and "--out" in err and "strict=False" not in err


def test_a_resume_on_changed_data_is_refused(trained, capsys):
    """Rows added to the file: the run resumed silently, and the old positions pointed at
    other rows, so the test part held rows the first steps had trained on."""
    import pandas as pd

    data = trained.parent / "data.csv"
    more = make_customers(100, seed=5)
    pd.concat([more, pd.read_csv(data)]).to_csv(data, index=False)
    training = {**CONFIG["training"], "epochs": 4}  # a longer run: allowed on resume
    assert main(["train", _config(trained.parent, training=training), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was written by a different run: data.rows: [180, 60, 60] → [240, 80, 80]" in err
    assert "data.split: " in err and "with the config and data that wrote it" in err


def test_messages_name_the_cli_or_python_by_caller(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-00000001.pt").write_bytes(b"")
    with pytest.raises(Exception, match=r"Trainer\.resume") as python:
        check_fresh(tmp_path / "checkpoints")
    with command_line(), pytest.raises(Exception, match="--resume continues it") as cli_side:
        check_fresh(tmp_path / "checkpoints")
    assert "Trainer" not in str(cli_side.value) and "--resume" not in str(python.value)


def test_a_balancer_without_validation_rows_names_the_config_field(project, capsys):
    split = {**CONFIG["data"], "split": {"val_fraction": 0.0, "test_fraction": 0.2}}
    args = ["train", _config(project, data=split, balancer={"name": "auto_lambda"})]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "data.split.val_fraction > 0" in err and "fit()" not in err


def test_sigterm_stops_with_one_line_about_the_checkpoint(project, capsys, monkeypatch):
    from polytask.train._callbacks import Checkpointer

    real = Checkpointer.on_eval_end

    def then_sigterm(self, trainer, logs):  # as `kill PID` would, once a checkpoint is written
        real(self, trainer, logs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Checkpointer, "on_eval_end", then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    training = {**CONFIG["training"], "epochs": 50}
    assert main(["-q", "train", _config(project, training=training)]) == 143
    err = capsys.readouterr().err
    assert re.search(r"warning: terminated at step \d+ of \d+; the newest checkpoint is ", err)
    assert (
        "`polytask train CONFIG --resume` (with the --out it used) continues from it exactly" in err
    )
    assert err.strip().endswith("terminated (SIGTERM)") and "Trainer.resume" not in err
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the CLI's only


def test_a_read_only_output_folder_is_named(project, capsys, monkeypatch):
    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):
        if "ro" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    assert main(["train", _config(project), "--out", str(project / "ro" / "run")]) == 2
    err = capsys.readouterr().err
    _clean(err)
    assert f"{project / 'ro' / 'run'} is not writable (Read-only file system)" in err
    assert "choose another place with --out" in err


# item 19: -v after the subcommand, -o over an input, status lines, lazy imports -------------


def test_verbose_and_quiet_work_before_and_after_the_subcommand():
    parse = build_parser().parse_args
    assert parse(["train", "c.yaml", "-v"]).verbose is True
    assert parse(["-v", "train", "c.yaml"]).verbose is True
    assert parse(["train", "c.yaml"]).verbose is False
    assert parse(["predict", "-q", "m.pt", "d.csv"]).quiet is True
    assert parse(["-q", "predict", "m.pt", "d.csv"]).quiet is True


def test_verbose_after_the_subcommand_logs_info_lines(project, capsys):
    assert main(["train", _config(project), "-v"]) == 0
    assert "info: " in capsys.readouterr().err


def test_predict_refuses_to_overwrite_its_inputs(trained, capsys):
    data = trained.parent / "data.csv"
    before = data.read_bytes(), (trained / "model.pt").read_bytes()
    link = trained.parent / "link.csv"
    link.symlink_to(data)
    for output in (data, trained / ".." / "data.csv", link, trained / "model.pt"):
        assert main(["predict", str(trained / "model.pt"), str(data), "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert "this command reads: writing there would overwrite it" in err, err
    assert (data.read_bytes(), (trained / "model.pt").read_bytes()) == before
    assert main(["predict", str(trained / "model.pt"), str(data), "-o", str(trained)]) == 2
    assert "is a directory: give a file name" in capsys.readouterr().err


def test_status_lines_on_stderr_unless_quiet(project, capsys):
    training = {**CONFIG["training"], "progress": True}
    assert main(["train", _config(project, training=training)]) == 0
    err = capsys.readouterr().err
    assert "reading " in err and f"loading data from {project / 'data.csv'}" in err
    assert "training into " in err and " epoch 1 step " in err  # plain lines: not a terminal
    assert main(["-q", "train", _config(project, training=training), "--overwrite"]) == 0
    out, err = capsys.readouterr()
    assert "--overwrite: removed" not in out
    assert "loading data" not in err and "reading " not in err and " epoch " not in err


def test_help_and_version_do_not_import_torch():
    script = textwrap.dedent(
        """
        import sys
        from polytask.cli._main import main
        for args in (["--help"], ["train", "--help"], ["predict", "--help"], ["--version"]):
            try:
                main(args)
            except SystemExit:
                pass
        heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "sklearn", "scipy"})
        print("heavy:", heavy, file=sys.stderr)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "heavy: []" in out.stderr, out.stderr[-2000:]
    assert "usage: polytask train" in out.stdout and "polytask 0." in out.stdout


def test_retain_freed_memory_is_imported_only_for_a_command(monkeypatch):
    import polytask.train._allocator as allocator

    monkeypatch.setattr(allocator, "retain_freed_memory", lambda: True)
    assert cli.retain_freed_memory() is True


# siblings ------------------------------------------------------------------------------------


def test_out_pointing_at_a_file_is_named(project, capsys):
    (project / "afile").write_text("x")
    for out in (project / "afile", project / "afile" / "sub"):
        assert main(["-q", "train", _config(project), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{project / 'afile'} is a file, not a folder: --out needs a folder" in err, err


def test_predict_into_a_read_only_folder_names_the_output_not_a_temporary_file(
    trained, capsys, monkeypatch
):
    import tempfile

    def read_only(*args, **kwargs):
        name = os.path.join(kwargs["dir"], kwargs["prefix"] + "x" + kwargs["suffix"])
        raise OSError(errno.EROFS, "Read-only file system", name)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    out = trained.parent / "p.csv"
    args = ["-q", "predict", str(trained / "model.pt"), str(trained.parent / "data.csv")]
    assert main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    _clean(err)
    assert err.strip() == (
        f"error: {out} is not writable (Read-only file system): choose another place with -o"
    )


def test_a_full_disk_while_writing_metrics_names_the_run_folder(project, capsys, monkeypatch):
    from polytask.train.loggers import CSVLogger

    def full(self, path):  # open() worked, write() failed: no file name in the error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CSVLogger, "write", full)
    assert main(["-q", "train", _config(project), "--out", str(project / "r")]) == 1
    err = capsys.readouterr().err
    _clean(err)
    assert f"cannot write {project / 'r'}: no space left on its disk" in err


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"tasks": [{"name": "churn", "kind": "binary", "metrics": ["aucc"]}]},
            "unknown binary metric 'aucc' (did you mean 'auc'?); allowed: auc, accuracy, f1\n",
        ),
        (
            {"data": {"builtin": "customers", "options": {"nn": 300}}},
            "data.options: unknown option 'nn' (did you mean 'n'?); allowed: n, relatedness,",
        ),
        (
            {"training": {"schedule": "temperature", "schedule_params": {"temperatur": 2}}},
            "has no parameter ['temperatur'] (did you mean 'temperature'?)",
        ),
    ],
)
def test_unknown_names_elsewhere_suggest_the_nearest_and_no_python(
    project, capsys, changes, message
):
    assert main(["-q", "train", _config(project, **changes)]) == 2
    err = capsys.readouterr().err
    assert message in err and "polytask.Metric" not in err, err


def test_the_interrupt_message_names_the_callers_way_to_resume(tmp_path):
    from polytask import Task, TrainConfig, Trainer, hard_sharing_mlp
    from polytask._signals import Terminated

    net = hard_sharing_mlp(3, [Task("a", "regression")], hidden=(4,))
    none = Trainer(net, config=TrainConfig(keep_last=0, keep_best=False), run_dir=tmp_path)
    assert "no checkpoint was written" in none._interrupted(KeyboardInterrupt())
    assert "keep_last >= 1" in none._interrupted(KeyboardInterrupt())
    trainer = Trainer(net, run_dir=tmp_path)  # keep_last 1: stopped before the first window
    early = trainer._interrupted(KeyboardInterrupt())
    assert "no checkpoint yet, nothing to resume from: the first is written at the end" in early
    assert "keep_last" not in early
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-00000003.pt").write_bytes(b"")
    python = trainer._interrupted(KeyboardInterrupt())
    assert python.startswith("interrupted at step 0") and "Trainer.resume(run_dir)" in python
    with command_line():
        line = trainer._interrupted(Terminated())
    assert line.startswith("terminated at step 0") and "Trainer" not in line
    assert "`polytask train CONFIG --resume` (with the --out it used) continues" in line
    with command_line("compare"):
        line = trainer._interrupted(Terminated())
    assert line == "terminated at step 0 of 0; `polytask compare` does not resume: run it again"


def test_predict_to_a_full_stdout_is_one_line(trained, capsys, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    args = ["-q", "predict", str(trained / "model.pt"), str(trained.parent / "data.csv")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err == "error: cannot write the output: no space left on its disk or quota\n"


def test_a_key_given_twice_is_refused_home_paths_expand_and_balancer_numbers_are_numbers(
    tmp_path, capsys, monkeypatch
):
    """PyYAML kept the last of two `training:` keys without a word; `output_dir: ~/x` made a
    folder named ~ beside the config; a balancer's 2e0 (text to YAML) was recorded as text,
    so the same config written 2.0 counted as another (outside review)."""
    from polytask.app import BalancerConfig
    from polytask.cli._config_io import load_config

    path = tmp_path / "twice.yaml"
    path.write_text("data: {builtin: customers}\ntasks: [{name: churn, kind: binary}]\n"
                    "training: {epochs: 1}\ntraining: {epochs: 3}\n")  # fmt: skip
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "the key 'training' is given twice: keep one" in err
    assert f'in "{path}", line 4' in err  # the file, not PyYAML's "<unicode string>"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = tmp_path / "home.yaml"
    home.write_text("data: {builtin: customers}\ntasks: [{name: churn, kind: binary}]\n"
                    "output_dir: ~/runs/x\n")  # fmt: skip
    assert load_config(home).output_dir == str(tmp_path / "home" / "runs" / "x")
    assert BalancerConfig("dwa", {"temperature": "2e0"}) == BalancerConfig(
        "dwa", {"temperature": 2.0}
    )


def test_a_split_file_with_a_test_fraction_is_refused(project, capsys):
    """The file's test_idx rows are the test rows: test_fraction 0.5 was ignored silently."""
    split = {**CONFIG["data"], "split": {"file": "s.npz", "test_fraction": 0.5}}
    assert main(["train", _config(project, data=split)]) == 2
    assert (
        "data.split.test_fraction 0.5 would not be used: the split file's test_idx rows are "
        "the test rows; leave test_fraction out" in capsys.readouterr().err
    )


def test_ctrl_c_before_a_command_starts_is_one_line(project, capsys, monkeypatch):
    """Ctrl-C in the first seconds (torch loading) printed a 30-50 line traceback."""
    import polytask.cli._main as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_starting", interrupted)
    assert main(["train", _config(project)]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted" and "Traceback" not in err
