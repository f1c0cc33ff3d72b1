"""Label scarcity: thinning keeps the asked fraction of one task's labels; the curve trains
MTL and single-task models per fraction and seed."""

import dataclasses

import pytest
import torch

from polytask import Task
from polytask.analysis._scarcity import keep_label_fraction, label_fraction_curve
from polytask.app import ModelConfig, load_frame, prepare
from polytask.cli._demo import demo_config
from polytask.data._tensors import TaskData


def test_keep_label_fraction_thins_one_task_only():
    y = torch.arange(100, dtype=torch.float32)
    y[::10] = float("nan")  # 90 labelled
    cls = torch.randint(0, 3, (100,))
    data = TaskData(torch.zeros(100, 2), {"r": y, "c": cls})
    task = Task("r", "regression")
    thinned = keep_label_fraction(data, task, 0.2, seed=0)
    kept = ~torch.isnan(thinned.targets["r"])
    assert int(kept.sum()) == 18  # round(0.2 · 90)
    assert torch.equal(thinned.targets["r"][kept], y[kept])  # kept labels unchanged
    assert torch.equal(thinned.targets["c"], cls)
    other = keep_label_fraction(data, task, 0.2, seed=1)
    assert not torch.equal(kept, ~torch.isnan(other.targets["r"]))  # the subset depends on seed
    classes = keep_label_fraction(data, Task("c", "multiclass", num_classes=3), 0.5, seed=0)
    assert int((classes.targets["c"] == -100).sum()) == 50
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        keep_label_fraction(data, task, 0.0, seed=0)


def test_curve_has_one_point_per_fraction_with_paired_seeds():
    config = demo_config(n=400, epochs=2, output_dir="unused")
    config = dataclasses.replace(config, model=ModelConfig(hidden=(8,)))
    data = prepare(config, load_frame(config))
    curve = label_fraction_curve(config, data, "churn", [0.1, 1.0], [0, 1])
    rows = curve.rows()
    assert [r["fraction"] for r in rows] == [0.1, 1.0]
    assert rows[0]["labelled"] < rows[1]["labelled"]
    assert all(len(p.mtl) == len(p.stl) == 2 for p in curve.points)
    with pytest.raises(ValueError, match=r"unknown task 'chrn' \(did you mean 'churn'\?\)"):
        label_fraction_curve(config, data, "chrn", [0.5], [0])


def test_a_change_no_seed_defines_is_said_not_printed_as_nan(tmp_path):
    """A seed whose single-task F1 is 0 made the change NaN: '+nan' printed, no report, and
    `polytask report` a TypeError traceback for good (outside review)."""
    import json
    import math

    from polytask.analysis._scarcity import CurvePoint, LearningCurve
    from polytask.cli._render import curve_delta

    task = Task("churn", "binary", primary_metric="f1")
    curve = LearningCurve(task, [0, 1], [CurvePoint(0.05, 26, [0.2, 0.6], [0.0, 0.5]),
                                         CurvePoint(1.0, 520, [0.3, 0.4], [0.0, 0.0])])  # fmt: skip
    some, none = curve.rows()
    assert some["delta_pct"] == pytest.approx(20.0) and some["delta_seeds"] == 1
    assert math.isnan(none["delta_pct"]) and none["delta_seeds"] == 0
    assert curve_delta(some) == "+20.0 (1 of 2 seeds)"
    assert curve_delta(none).startswith("n/a: a single-task value of 0")
    curve.to_json(tmp_path / "label_fraction.json")
    saved = json.loads((tmp_path / "label_fraction.json").read_text())["rows"][1]
    assert curve_delta(saved).startswith("n/a")  # null in the file: the report reads it too
    assert curve_delta({"delta_pct": 5.0, "seeds": 2}) == "+5.0"  # a file of an older run
