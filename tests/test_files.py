"""Strict JSON in the files polytask writes: an undefined metric is null, not a bare NaN."""

import json
import math

import numpy as np
import pandas as pd
import yaml

from polytask._files import json_text, strict_json
from polytask.cli._main import main


def _strict(text: str):  # type: ignore[no-untyped-def]
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_strict_json_turns_every_non_finite_float_into_null():
    value = {"a": {"r2": math.nan, "mae": 1.5}, "b": [math.inf, -math.inf, 2, "x", None]}
    assert _strict(json.dumps(strict_json(value))) == {
        "a": {"r2": None, "mae": 1.5}, "b": [None, None, 2, "x", None]}  # fmt: skip


def test_test_metrics_json_is_strict_when_a_metric_is_undefined(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    frame = pd.DataFrame(x, columns=["x0", "x1", "x2"])
    frame["flat"] = 5.0  # every test value the same: its r2 is undefined
    frame["y"] = x @ [1.0, -1.0, 0.5]
    frame.to_csv(tmp_path / "d.csv", index=False)
    config = {"data": {"path": "d.csv", "features": {"numeric": ["x0", "x1", "x2"]}},
              "tasks": [{"name": "flat", "kind": "regression"},
                        {"name": "y", "kind": "regression"}],
              "training": {"epochs": 1, "progress": False}, "output_dir": "run"}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["-q", "train", str(tmp_path / "c.yaml"), "--no-report"]) == 0
    saved = _strict((tmp_path / "run" / "test_metrics.json").read_text())
    assert saved["flat"]["r2"] is None and math.isfinite(saved["y"]["r2"])
    history = _strict((tmp_path / "run" / "metrics.json").read_text())
    assert any(row.get("val/flat/r2", 0) is None for row in history)
    assert main(["-q", "report", str(tmp_path / "run")]) == 0  # the report reads the null back

    out = tmp_path / "compared"
    assert main(["-q", "compare", str(tmp_path / "c.yaml"), "--seeds", "1", "--out", str(out)]) == 0
    compared = _strict((out / "compare.json").read_text())
    assert compared["tasks"][0]["mtl_std"] is None  # one seed: no spread
    assert main(["-q", "report", str(out)]) == 0


def test_json_text_refuses_nothing_and_writes_no_bare_nan():
    text = json_text({"loss": math.nan, "rows": [1.0, math.inf], "name": "a"}, indent=None)
    assert text == '{"loss": null, "rows": [1.0, null], "name": "a"}'
