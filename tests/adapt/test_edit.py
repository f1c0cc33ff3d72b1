"""Adding, removing and renaming tasks of a trained model: the kept tasks answer exactly as
before on every architecture that allows the edit, and the others refuse it with the fix."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from polytask.adapt import EditError, add_task, remove_tasks, rename_tasks
from polytask.app import FittedModel, ModelConfig
from polytask.data._tabular import DataError
from polytask.models._per_task import PerTaskSnapshots
from polytask.tasks import Task
from polytask.tasks._columns import DataWarning

from .conftest import untrained

REGRESSION = [Task(name=f"t{i}", kind="regression") for i in range(3)]
FUNNEL = [
    Task(name="click", kind="binary", target="label"),
    Task(name="buy", kind="binary", target="label"),
]
EDITABLE = {
    "hard_sharing": {"hidden": [16]},
    "mmoe": {"hidden": [16], "experts": 3},
    "cgc": {"hidden": [16]},
    "mtan": {"hidden": [16, 16]},
    "soft_sharing": {"hidden": [16]},
    "multi_input": {"hidden": [16]},
    "mean_regularised": {},
    "low_rank": {"hidden": [16], "rank": 2},  # each task's entry of a ParameterDict
    "task_embedding": {"hidden": [16]},
}
COUPLED = {"ple": {"hidden": [16]}, "ltb": {"hidden": [16, 16]}, "cross_stitch": {"hidden": [16]}}


def _raw(fitted: FittedModel, df: pd.DataFrame) -> dict[str, torch.Tensor]:
    fitted.model.eval()
    with torch.no_grad():
        return fitted.model(fitted.preprocessor.transform_features(df))


@pytest.mark.parametrize("architecture", sorted(EDITABLE))
def test_add_and_remove_keep_the_other_tasks_outputs_exactly(architecture, frame):
    fitted = untrained(architecture, REGRESSION, frame, **EDITABLE[architecture])
    before = _raw(fitted, frame)
    added = add_task(fitted, Task(name="n0", kind="regression"), frame)
    after = _raw(added, frame)
    assert added.model.task_names == ("t0", "t1", "t2", "n0")
    for name in ("t0", "t1", "t2"):
        assert torch.equal(after[name], before[name]), name
    removed = remove_tasks(added, ["t1"])
    assert removed.model.task_names == ("t0", "t2", "n0")
    kept = _raw(removed, frame)
    for name in ("t0", "t2", "n0"):
        torch.testing.assert_close(kept[name], after[name], rtol=1e-6, atol=1e-6)
    assert "t1" not in removed.preprocessor.target_scale
    assert fitted.model.task_names == ("t0", "t1", "t2")  # the input model is not changed


@pytest.mark.parametrize("architecture", sorted({**EDITABLE, **COUPLED, "esmm": {}, "aitm": {}}))
def test_rename_keeps_every_output_and_the_predictions_follow(architecture, frame):
    params = {**EDITABLE, **COUPLED}.get(architecture, {})
    tasks = FUNNEL if architecture in ("esmm", "aitm") else REGRESSION
    fitted = untrained(architecture, tasks, frame, **params)
    first = tasks[0].name
    renamed = rename_tasks(fitted, {first: "renamed"})
    before, after = fitted.predict(frame), renamed.predict(frame)
    assert list(after.columns) == [c.replace(first, "renamed", 1) for c in before.columns]
    pd.testing.assert_frame_equal(after.set_axis(before.columns, axis=1), before)
    assert renamed.tasks[0].target_columns == tasks[0].target_columns  # reads the same column


@pytest.mark.parametrize("name", ["trunk", "net", "0", "weight", "heads"])
def test_a_task_renamed_to_a_word_of_a_weights_path_keeps_every_output(name, frame):
    """trunk.net.0.weight was looked up as t0.net.0.weight after renaming t0 to trunk: the
    edit was refused as an architecture that ties weights to the task set (outside review)."""
    fitted = untrained("hard_sharing", REGRESSION, frame)
    renamed = rename_tasks(fitted, {"t0": name})
    before, after = fitted.predict(frame), renamed.predict(frame)
    pd.testing.assert_frame_equal(after.set_axis(before.columns, axis=1), before)
    swapped = rename_tasks(fitted, {"t0": "t1", "t1": "t0"})  # each reads the other's head
    pd.testing.assert_series_equal(swapped.predict(frame)["t1"], before["t0"], check_names=False)


@pytest.mark.parametrize("architecture", sorted(COUPLED))
def test_architectures_that_tie_shared_weights_to_the_task_set_refuse(architecture, frame):
    fitted = untrained(architecture, REGRESSION, frame, **COUPLED[architecture])
    with pytest.raises(EditError, match="retrain with the new task list"):
        add_task(fitted, Task(name="n0", kind="regression"), frame)
    with pytest.raises(EditError, match=f"architecture '{architecture}' ties its shared weights"):
        remove_tasks(fitted, ["t0"])


def test_funnel_architectures_refuse_a_removal_that_changes_a_later_stage(frame):
    fitted = untrained("esmm", FUNNEL, frame)
    with pytest.raises(EditError, match="task 'buy' would answer differently"):
        remove_tasks(fitted, ["click"])


def test_edit_errors_name_the_problem(frame):
    fitted = untrained("hard_sharing", REGRESSION, frame)
    with pytest.raises(EditError, match="already has a task 't0'"):
        add_task(fitted, Task(name="t0", kind="regression"), frame)
    with pytest.raises(DataError, match=r"target column\(s\) \['missing'\] not found"):
        add_task(fitted, Task(name="missing", kind="regression"), frame)
    with pytest.raises(DataError, match=r"\['T0_new'\] not found in the data \(did you mean"):
        add_task(fitted, Task(name="t0_new", kind="regression", target="T0_new"),
                 frame.assign(t0_new=1.0))  # fmt: skip
    with pytest.raises(EditError, match="input features of this model"):
        add_task(fitted, Task(name="x0", kind="regression"), frame)
    for labels in (1, 1.0, "1"):  # 0/1 labels of one class: fitted, but not without a word
        with pytest.warns(DataWarning, match=r"task 'won', the rows its head is fitted on: "
                                             r"every labelled row is class 1"):  # fmt: skip
            add_task(fitted, Task(name="won", kind="binary"), frame.assign(won=labels))
    with pytest.raises(DataError, match="has no numeric label"):
        add_task(fitted, Task(name="n0", kind="regression"), frame.assign(n0=float("nan")))
    with pytest.raises(EditError, match=r"unknown task\(s\) \['nope'\]"):
        remove_tasks(fitted, ["nope"])
    with pytest.raises(EditError, match="cannot remove every task it predicts"):
        remove_tasks(fitted, ["t0", "t1", "t2"])
    with pytest.raises(EditError, match=r"two tasks the name\(s\) \['t1'\]"):
        rename_tasks(fitted, {"t0": "t1"})
    with pytest.raises(EditError, match="learns from the inputs alone"):
        add_task(fitted, Task(name="rec", kind="reconstruction"), frame)
    snapshots = dataclasses.replace(
        fitted, model=PerTaskSnapshots.like(fitted.model, {"t0": 0, "t1": 1, "t2": 1})
    )
    with pytest.raises(EditError, match="selection: per_task"):
        rename_tasks(snapshots, {"t0": "a"})


def test_edited_model_round_trips_through_a_checkpoint(frame, tmp_path):
    fitted = untrained("mmoe", REGRESSION, frame, hidden=[16], experts=2)
    edited = rename_tasks(remove_tasks(fitted, ["t2"]), {"t0": "first"})
    loaded = FittedModel.load(edited.save(tmp_path / "edited.pt"))
    assert loaded.model.task_names == ("first", "t1")
    pd.testing.assert_frame_equal(loaded.predict(frame), edited.predict(frame))


def test_ensembles_and_blends_of_networks_keep_their_members_through_an_edit(frame, tmp_path):
    pre_fitted = untrained("hard_sharing", REGRESSION, frame, hidden=[16])
    spec = ModelConfig(
        "mean_regularised",
        ensemble=2,
        blend=[{"architecture": "hard_sharing", "hidden": [8], "weight": 0.3}],  # type: ignore[list-item]
    )
    tasks = list(pre_fitted.tasks)
    model = spec.build(pre_fitted.preprocessor.feature_names, tasks, seed=0)
    fitted = dataclasses.replace(pre_fitted, model=model, model_config=spec)
    before = _raw(fitted, frame)
    edited = rename_tasks(remove_tasks(fitted, ["t2"]), {"t0": "first"})
    assert edited.model_config.blend == spec.blend and edited.model_config.ensemble == 2
    after = _raw(edited, frame)
    torch.testing.assert_close(after["first"], before["t0"])
    torch.testing.assert_close(after["t1"], before["t1"])
    loaded = FittedModel.load(edited.save(tmp_path / "edited.pt"))
    pd.testing.assert_frame_equal(loaded.predict(frame), edited.predict(frame))
    mixed = untrained("multilevel", REGRESSION, frame)  # refitted between full-batch steps
    renamed = rename_tasks(mixed, {"t0": "first"})
    loaded = FittedModel.load(renamed.save(tmp_path / "multilevel.pt"))
    pd.testing.assert_frame_equal(loaded.predict(frame), renamed.predict(frame))


def test_a_forest_a_gp_or_a_blend_holding_one_refuses_an_edit_with_the_fix(frame):
    for spec in (
        ModelConfig("forest"),
        ModelConfig("gp", steps=2),
        ModelConfig("multilevel", blend=[{"architecture": "forest", "weight": 0.5}]),  # type: ignore[list-item]
    ):
        fitted = untrained("hard_sharing", REGRESSION, frame)
        model = spec.build(fitted.preprocessor.feature_names, list(fitted.tasks), seed=0)
        fitted = dataclasses.replace(fitted, model=model, model_config=spec)
        for edit in (
            lambda f: rename_tasks(f, {"t0": "a"}),
            lambda f: remove_tasks(f, ["t0"]),
            lambda f: add_task(f, Task(name="n0", kind="regression"), frame),
        ):
            grown = r"grown from its training rows \((Forest|MultiTaskGP)"
            with pytest.raises(EditError, match=grown):
                edit(fitted)
