"""`train` into a folder that holds another run: refused, --resume, --overwrite; and a folder
another process trains into (issue 20, items 1 and 2)."""

import json

import pytest
import yaml

from polytask.cli._main import main
from polytask.data import make_customers
from polytask.report._run import BLEND_FILE
from polytask.train import load_checkpoint
from tests.train.helpers import locked_by_another_process


def _config(folder, epochs: int):
    cfg = {
        "data": {
            "path": "data.csv",
            "features": {"numeric": ["usage_0", "usage_1", "age"], "categorical": ["region"]},
            "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
        },
        "tasks": [{"name": "churn", "kind": "binary"}, {"name": "ltv", "kind": "regression"}],
        "model": {"hidden": [8]},
        "training": {"epochs": epochs, "batch_size": 64, "progress": False, "patience": None},
        "output_dir": "run",
    }
    path = folder / f"config{epochs}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def project(tmp_path):
    make_customers(300, seed=0).to_csv(tmp_path / "data.csv", index=False)
    return tmp_path


def _steps(run) -> int:
    return int(load_checkpoint(run / "model.pt")[1]["step"])


def test_a_second_run_into_the_same_folder_needs_resume_or_overwrite(project, capsys):
    long, short = _config(project, 6), _config(project, 2)
    run = project / "run"
    assert main(["train", str(long)]) == 0
    long_steps = _steps(run)
    capsys.readouterr()

    assert main(["train", str(short)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert _steps(run) == long_steps  # nothing of the refused run was written

    (run / "export").mkdir()  # e.g. `polytask export` of the earlier model
    (run / "export" / "model.onnx").write_text("old")
    for other in ("member1", "blend1"):  # an earlier ensemble's or blend's other members
        (run / other / "checkpoints").mkdir(parents=True)
        (run / other / "checkpoints" / "step-00000001.pt").write_text("old")
    (run / BLEND_FILE).write_text("[]")  # the earlier blend's members, which the report reads
    (run / "notes").mkdir()  # not the run's: kept
    assert main(["train", str(short), "--overwrite"]) == 0
    assert not (run / "export").exists()
    assert not (run / "member1").exists() and not (run / "blend1").exists()
    assert not (run / BLEND_FILE).exists()
    assert (run / "notes").is_dir()
    assert "removed the earlier run" in capsys.readouterr().out
    assert _steps(run) < long_steps
    assert [p.name for p in (run / "checkpoints").glob("step-*.pt")] == [
        f"step-{_steps(run):08d}.pt"
    ]
    saved = json.loads((run / "test_metrics.json").read_text())
    assert set(saved) == {"churn", "ltv"}


def test_overwrite_keeps_the_earlier_run_when_the_new_config_is_refused(project, capsys):
    run = project / "run"
    assert main(["train", str(_config(project, 2))]) == 0
    before = sorted(p.name for p in run.iterdir())
    esmm = {"model": {"architecture": "esmm"}}  # refused by the model: stages must be binary
    lbfgs = {"training": {"optimizer": "lbfgs", "lr": 1.0, "batch_size": 10, "epochs": 2}}
    warmup = {"training": {"epochs": 1, "lr_schedule": "warmup",
                           "lr_schedule_params": {"warmup": 1000}}}  # fmt: skip
    for change, refusal in ((esmm, "ESMM stages must be binary"),
                            (lbfgs, "set training.batch_size to at least"),
                            (warmup, "warm-up of 1000 steps is not shorter")):  # fmt: skip
        bad = {**yaml.safe_load(_config(project, 3).read_text()), **change}
        (project / "bad.yaml").write_text(yaml.safe_dump(bad))
        capsys.readouterr()
        assert main(["train", str(project / "bad.yaml"), "--overwrite"]) == 2
        assert refusal in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == before and (run / "model.pt").is_file()


def test_resume_says_what_it_resumes(project, capsys):
    cfg = _config(project, 2)
    assert main(["train", str(cfg), "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert main(["train", str(cfg), "--resume"]) == 0
    assert "resuming the run in" in capsys.readouterr().out
    assert main(["train", str(cfg), "--resume", "--overwrite"]) == 2


def test_a_folder_in_use_by_another_training_is_refused(project, capsys):
    run = project / "run"
    with locked_by_another_process(run) as pid:
        assert main(["train", str(_config(project, 2))]) == 2
        assert f"in use by another training process (pid {pid})" in capsys.readouterr().err
        assert not (run / "model.pt").exists()


def test_a_refused_run_leaves_no_folder_behind(project, capsys):
    config = _config(project, 2)
    raw = yaml.safe_load(config.read_text())
    raw["model"] = {"architecture": "multilevel"}  # refuses the default optimizer
    raw["tasks"] = [{"name": "ltv", "kind": "regression"}]
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config)]) == 2
    assert "set training.optimizer: lbfgs" in capsys.readouterr().err
    assert not (project / "run").exists()


def test_compare_keeps_one_configs_comparisons_per_folder(project, capsys):
    out = project / "compared"
    args = ["-q", "compare", "--seeds", "1", "--no-classic", "--out", str(out)]
    assert main([*args, str(_config(project, 1))]) == 0
    # the same config again, another kind of comparison: beside the first (the report's view)
    assert main([*args, str(_config(project, 1)), "--architectures", "hard_sharing"]) == 0
    assert (out / "compare.json").is_file() and (out / "architectures.json").is_file()
    capsys.readouterr()
    assert main([*args, str(_config(project, 2))]) == 2  # another config: refused, untouched
    assert "holds a comparison of another config" in capsys.readouterr().err
    assert (out / "architectures.json").is_file()
    assert main([*args, str(_config(project, 2)), "--overwrite"]) == 0
    assert not (out / "architectures.json").exists() and (out / "compare.json").is_file()
    ran = json.loads((out / "compare_config.json").read_text())
    assert ran["training"]["epochs"] == 2 and ran["output_dir"] == ""


@pytest.mark.report  # compare writes report.html, which is no sign of a training run
def test_a_folders_run_and_comparisons_are_of_one_config(project, capsys):
    """The report shows a folder's run beside its comparisons: another config's would pass for
    this config's, so train and compare each refuse the other's of another config, and
    --overwrite removes them."""
    out = project / "run"
    compare = ["-q", "compare", "--seeds", "1", "--no-classic"]
    assert main([*compare, str(_config(project, 1))]) == 0
    assert (out / "report.html").is_file()
    assert main(["-q", "train", str(_config(project, 1))]) == 0  # the same config: kept beside
    assert (out / "compare.json").is_file() and (out / "model.pt").is_file()
    (out / "model-new.pt").write_bytes((out / "model.pt").read_bytes())  # as adapt writes
    capsys.readouterr()
    assert main(["train", str(_config(project, 2)), "--overwrite", "--resume"]) == 2
    assert main(["train", str(_config(project, 2)), "--resume"]) == 2
    # the run and its comparison are config 1's: resuming asks for that config (removing the
    # comparison would not let another config's resume go ahead)
    assert "--resume continues a run with the config that wrote it" in capsys.readouterr().err
    assert main(["train", str(_config(project, 2)), "--overwrite"]) == 0
    said = capsys.readouterr().out
    assert not (out / "compare.json").exists() and not (out / "seed0").exists()
    assert "removed the earlier comparison (other data or settings)" in said
    assert "kept model-new.pt: made from the replaced model" in said
    # compare of another config over this run: refused, then the run removed with --overwrite
    assert main([*compare, str(_config(project, 1))]) == 2
    assert "holds a training run of another config" in capsys.readouterr().err
    assert (out / "model.pt").is_file()
    # both another config's comparison and run: the refusal names both, as --overwrite removes both
    (out / "seed0").mkdir()
    assert main([*compare, str(_config(project, 1))]) == 2
    err = capsys.readouterr().err
    assert "a comparison of another config (seed0" in err and "a training run of another" in err
    (out / "seed0").rmdir()
    assert main([*compare, str(_config(project, 1)), "--overwrite"]) == 0
    assert not (out / "model.pt").exists() and (out / "compare.json").is_file()
    # an unfinished comparison (its seed folders, no compare.json) is the config's too
    (out / "compare.json").unlink()
    assert main(["train", str(_config(project, 2))]) == 2
    assert "holds a comparison of another config (seed0" in capsys.readouterr().err
    # a setting a later version added does not make the folder another config's
    recorded = json.loads((out / "compare_config.json").read_text())
    del recorded["training"]["epochs"]
    (out / "compare_config.json").write_text(json.dumps(recorded))
    recorded["tasks"][0].pop("where", None)  # also in a list of settings
    del recorded["tasks"][1]["kind"]
    (out / "compare_config.json").write_text(json.dumps(recorded))
    (out / "fractions_notes").mkdir()  # the user's: no label-fraction folder (fraction0.5/ is)
    assert main(["-q", "train", str(_config(project, 1))]) == 0
    assert (out / "seed0").is_dir() and (out / "fractions_notes").is_dir()  # kept
    (out / "compare_config.json").unlink()
    assert main([*compare, str(_config(project, 1))]) == 2
    assert "a comparison whose config is not recorded" in capsys.readouterr().err


def test_a_users_mapping_differs_by_a_key_on_one_side_a_config_field_does_not(project):
    """A later polytask's added setting is tolerated; a kind_params or where key that only one
    config writes is another config (it was tolerated as if it were an added setting)."""
    from polytask.cli._config_io import load_config
    from polytask.cli._main import _compared_settings, _same_settings

    path = _config(project, 1)
    cfg = yaml.safe_load(path.read_text())
    cfg["tasks"][1] |= {"loss": "huber", "loss_params": {"delta": 2.0}}
    path.write_text(yaml.safe_dump(cfg))
    config = load_config(path)
    now = json.loads(_compared_settings(config))
    assert _same_settings(now, json.loads(_compared_settings(config)), config)
    older = json.loads(_compared_settings(config))
    del older["tasks"][1]["label_smoothing"]  # a field a later version might add
    assert _same_settings(older, now, config)
    fewer = json.loads(_compared_settings(config))
    fewer["tasks"][1]["loss_params"] = {}  # the user's key on one side only
    assert not _same_settings(fewer, now, config)
    more = json.loads(_compared_settings(config))
    more["tasks"][1]["loss_params"] = {"delta": 2.0, "extra": 1}
    assert not _same_settings(more, now, config)
