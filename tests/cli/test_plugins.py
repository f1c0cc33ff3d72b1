"""`polytask --import MODULE`: components registered by the user's own code reach the config
and the saved model on the command line; a model that needs one says how to load it."""

import sys

import pytest
import yaml

from polytask.app._fitted import _unregistered
from polytask.cli._main import main
from polytask.data import make_customers
from polytask.tasks import KINDS

PLUGIN = 'from polytask.tasks import KINDS\nKINDS["yesno"] = KINDS["binary"]\n'


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yesno_plugin.py").write_text(PLUGIN)
    make_customers(600).to_csv(tmp_path / "c.csv", index=False)
    config = {
        "data": {"path": "c.csv", "features": {"numeric": ["tenure_months", "monthly_spend"]},
                 "split": {"val_fraction": 0.2, "test_fraction": 0.2}},
        "tasks": [{"name": "churn", "kind": "yesno"}, {"name": "ltv", "kind": "regression"}],
        "model": {"hidden": [8]},
        "training": {"epochs": 1, "progress": False},
        "output_dir": "run",
    }  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    yield tmp_path
    KINDS.pop("yesno", None)
    sys.modules.pop("yesno_plugin", None)


def test_a_kind_registered_by_an_imported_file_trains_and_predicts(project, capsys):
    assert main(["-q", "train", "cfg.yaml", "--no-report"]) == 2  # not registered yet
    assert "polytask --import MODULE" in capsys.readouterr().err
    assert main(["-q", "--import", "yesno_plugin.py", "train", "cfg.yaml", "--no-report"]) == 0
    KINDS.pop("yesno")  # a new process: the model names a kind nobody registered
    assert main(["-q", "predict", "run/model.pt", "c.csv", "-o", "p.csv"]) == 2
    err = capsys.readouterr().err
    assert "needs task kind 'yesno', not registered in this process" in err
    assert "polytask --import MODULE" in err
    sys.modules.pop("yesno_plugin")
    assert (
        main(["-q", "--import", "yesno_plugin", "predict", "run/model.pt", "c.csv", "-o", "p.csv"])
        == 0
    )  # fmt: skip (by module name, found in the working folder)
    assert (project / "p.csv").read_text().startswith("churn,churn_prob,ltv")


def test_a_module_that_cannot_be_imported_is_named(project, capsys):
    assert main(["--import", "no_such_plugin", "train", "cfg.yaml"]) == 2
    assert "--import no_such_plugin: no module named 'no_such_plugin'" in capsys.readouterr().err
    assert main(["--import", "missing.py", "train", "cfg.yaml"]) == 2
    assert "--import missing.py: no such file" in capsys.readouterr().err


def test_unregistered_names_of_a_checkpoint_are_listed():
    meta = {"tasks": [{"kind": "count"}, {"kind": "binary"}],
            "model_config": {"architecture": "mine"}}  # fmt: skip
    assert _unregistered(meta) == "task kind 'count' and architecture 'mine'"
    assert _unregistered({"tasks": [{"kind": "binary"}], "model_config": {}}) is None
