"""Molecules from a config: a table of atoms (XYZ files, XYZ blocks or one-line atoms) read for
the `molecule` encoder, trained, saved and predicted on through the command line."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from polytask.app import RunConfig
from polytask.app._data import load_prepared
from polytask.cli import main
from polytask.cli._config_io import load_config
from polytask.data._molecules import parse_atoms, read_molecules
from polytask.tasks._columns import DataError


def _line(atoms: np.ndarray) -> str:
    symbols = {1: "H", 6: "C", 8: "O"}
    return "; ".join(f"{symbols[int(a[0])]} {a[1]:.4f} {a[2]:.4f} {a[3]:.4f}" for a in atoms)


def _molecules(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Random chains of 3-8 atoms (H, C, O about 1.2 Å apart) and a target from their
    composition and geometry: energies add up per element; close pairs lower it."""
    rng = np.random.default_rng(seed)
    molecules, energy = [], []
    for _ in range(n):
        count = int(rng.integers(3, 9))
        numbers = rng.choice([1, 6, 8], size=count)
        steps = rng.normal(size=(count, 3))
        steps *= 1.2 / np.linalg.norm(steps, axis=1, keepdims=True)
        positions = np.cumsum(steps, axis=0)
        molecules.append(np.column_stack([numbers, positions]).astype(np.float32))
        close = (np.linalg.norm(positions[:, None] - positions[None], axis=-1) < 1.6).sum()
        energy.append(-0.5 * (numbers == 1).sum() - 3.0 * (numbers == 6).sum()
                      - 4.0 * (numbers == 8).sum() - 0.3 * close)  # fmt: skip
    return molecules, np.array(energy)


def test_cells_are_xyz_files_xyz_blocks_or_one_line_atoms(tmp_path):
    (tmp_path / "co.xyz").write_text("2\ncarbon monoxide\nC 0 0 0\nO 0 0 1.128\n")
    from_file = parse_atoms("co.xyz", tmp_path)
    block = parse_atoms("2\n\nc 0 0 0\nO 0.0 0.0 1.128", tmp_path)  # any case, empty comment
    line = parse_atoms("C 0 0 0; O 0 0 1.128", tmp_path)
    expected = np.array([[6, 0, 0, 0], [8, 0, 0, 1.128]], dtype=np.float32)
    for atoms in (from_file, block, line):
        np.testing.assert_allclose(atoms, expected)
    assert parse_atoms("Cl 1*^-6 0 0", tmp_path)[0].tolist() == pytest.approx([17, 1e-6, 0, 0])
    assert len(parse_atoms("C 0 0 0 -0.53; O 0 0 1 0.5", tmp_path)) == 2  # a charge column
    for cell, message in [("", "empty"), ("missing.xyz", "not found"),
                          ("3\nx\nC 0 0 0\nO 0 0 1", "says 3 atoms but lists 2"),
                          ("Qx 0 0 0", "unknown element 'Qx'"), ("C 0 0 a; O 0 0 1", "numbers"),
                          ("C 0 0; O 0 0 1", "give 'symbol x y z'"),
                          # found by review: read as one atom, the O dropped
                          ("C 0 0 0 O 0 0 1.128", "several atoms on one line")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            parse_atoms(cell, tmp_path)


def test_qm9s_own_xyz_files_and_other_variants_are_read_and_nan_coordinates_refused(tmp_path):
    """QM9's files follow the atoms with frequencies, SMILES and InChI lines (refused as more
    atoms than the count); a NaN coordinate was read, leaving its atom with no bond."""
    qm9 = ("5\ngdb 1\tC\nC -0.0127 1.0858 0.0080 -0.535689\nH 0.0022 -0.0060 0.0020 0.133921\n"
           "H 1.0117 1.4638 0.0003 0.133922\nH -0.5408 1.4475 -0.8766 0.133923\n"
           "H -0.5238 1.4379 0.9064 0.133923\n1341.307 1341.3284 3151.7078\nC\tC\n"
           "InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4\n")  # fmt: skip
    (tmp_path / "dsgdb9nsd_000001.xyz").write_text(qm9)
    atoms = parse_atoms("dsgdb9nsd_000001.xyz", tmp_path)
    assert atoms[:, 0].tolist() == [6, 1, 1, 1, 1]
    assert atoms[2].tolist() == pytest.approx([1, 1.0117, 1.4638, 0.0003], abs=1e-6)
    frames = parse_atoms("2\nfirst\nC 0 0 0\nO 0 0 1.1\n2\nsecond\nC 0 0 0\nO 0 0 1.3", tmp_path)
    assert frames[1].tolist() == pytest.approx([8, 0, 0, 1.1])  # the first frame
    assert parse_atoms("C 0 0 0 -0.53", tmp_path).tolist() == [[6, 0, 0, 0]]  # a charge column
    assert parse_atoms("6.0 0 0 0; 8 0 0 1", tmp_path)[:, 0].tolist() == [6, 8]
    for cell in ("C 0 0 0; O nan 0 1.2", "C 0 0 0; O 0 inf 1.2"):
        with pytest.raises(ValueError, match=r"atom 2 .*: x, y, z must be finite numbers"):
            parse_atoms(cell, tmp_path)
    with pytest.raises(ValueError, match="says 3 atoms but lists 2"):
        parse_atoms("3\nx\nC 0 0 0\nO 0 0 1", tmp_path)
    with pytest.raises(ValueError, match=r"unknown element '6\.5'"):
        parse_atoms("6.5 0 0 0", tmp_path)


def test_rows_are_padded_and_a_bad_row_or_a_too_large_molecule_is_named(tmp_path):
    frame = pd.DataFrame({"xyz": ["C 0 0 0; O 0 0 1.1", "H 0 0 0", "C 0 0 0; H 1 0 0; H 0 1 0"]},
                         index=[10, 11, 12])  # fmt: skip
    atoms = read_molecules(frame, "xyz", tmp_path, "mols.csv")
    assert atoms.shape == (3, 3, 4) and atoms[1, 1:].sum() == 0  # padding: zero rows
    with pytest.raises(DataError, match=r"mols\.csv, row 12: 3 atoms; .* at most 2"):
        read_molecules(frame, "xyz", tmp_path, "mols.csv", max_atoms=2)
    larger = frame.assign(xyz=["; ".join(["H 0 0 0"] * 4), "H 0 0 0", "C 0 0 0"])
    with pytest.raises(DataError, match=r"row 10: 4 atoms; .* at most 2"):  # its own count
        read_molecules(larger, "xyz", tmp_path, "mols.csv", max_atoms=2)
    sulfur = frame.assign(xyz=["C 0 0 0", "S 0 0 0; H 0 0 1.3", "H 0 0 0"])
    with pytest.raises(DataError, match=r"row 11: element S \(atomic number 16\) is beyond the "
                       r"encoder's max_atomic_number 9 \(F\): set model\.encoder_params\."
                       r"max_atomic_number to at least 16"):  # fmt: skip
        read_molecules(sulfur, "xyz", tmp_path, "mols.csv", max_number=9, trained=False)
    assert read_molecules(sulfur, "xyz", tmp_path, "m.csv", max_number=16)[1, 0, 0] == 16
    bad = frame.assign(xyz=["C 0 0 0", "Zz 0 0 0", "H 0 0 0"])
    with pytest.raises(DataError, match=r"mols\.csv, row 11: xyz: atom 1: unknown element"):
        read_molecules(bad, "xyz", tmp_path, "mols.csv")
    with pytest.raises(DataError, match="molecule column \\['atoms'\\] not found"):
        read_molecules(frame, "atoms", tmp_path, "mols.csv")


def test_a_config_of_molecules_trains_and_predicts_from_the_command_line(tmp_path, capsys):
    molecules, energy = _molecules(400, seed=0)
    cells = [_line(m) for m in molecules]
    for i in range(5):  # a few rows as XYZ files beside the table
        (tmp_path / f"m{i}.xyz").write_text(
            f"{len(molecules[i])}\nrow {i}\n" + cells[i].replace("; ", "\n") + "\n"
        )
        cells[i] = f"m{i}.xyz"
    frame = pd.DataFrame({"id": range(400), "atoms": cells, "energy": energy,
                          "large": (energy < np.median(energy)).astype(int)})  # fmt: skip
    frame.to_csv(tmp_path / "mols.csv", index=False)
    config = {
        "data": {"molecules": {"path": "mols.csv", "column": "atoms"},
                 "split": {"val_fraction": 0.15, "test_fraction": 0.25, "seed": 0}},
        "tasks": [{"name": "energy", "kind": "regression", "metrics": ["mae"]},
                  {"name": "large", "kind": "binary"}],
        "model": {"architecture": "hard_sharing", "encoder": "molecule",
                  "encoder_params": {"width": 16, "depth": 2, "basis": 8}},
        "training": {"epochs": 40, "batch_size": 32, "lr": 0.003, "progress": False},
        "output_dir": "run",
    }  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["-q", "train", str(tmp_path / "c.yaml"), "--no-report"]) == 0, (
        capsys.readouterr().err
    )
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    test = load_prepared(load_config(tmp_path / "c.yaml")).test
    y = test.targets["energy"].numpy() * test.target_scale["energy"][1]
    mean_predictor = float(np.abs(y - y.mean()).mean())
    assert metrics["energy"]["mae"] < 0.3 * mean_predictor  # learnt from the atoms
    assert metrics["large"]["auc"] > 0.85
    out = tmp_path / "predictions.csv"
    assert main(["-q", "predict", str(tmp_path / "run" / "model.pt"), str(tmp_path / "mols.csv"),
                 "-o", str(out), "--id-column", "id"]) == 0  # fmt: skip
    predicted = pd.read_csv(out)
    assert list(predicted.columns) == ["id", "energy", "large", "large_prob"]
    assert len(predicted) == 400 and predicted["energy"].notna().all()
    assert np.corrcoef(predicted["energy"], energy)[0, 1] > 0.9
    big = frame.head(2).assign(atoms=["; ".join(["H 0 0 0"] * 12)] * 2)  # beyond its largest
    big.to_csv(tmp_path / "big.csv", index=False)
    assert (
        main(["-q", "predict", str(tmp_path / "run" / "model.pt"), str(tmp_path / "big.csv")]) == 2
    )
    assert "12 atoms; the model was trained on molecules of at most 8" in capsys.readouterr().err
    assert main(["-q", "compare", str(tmp_path / "c.yaml"), "--seeds", "1"]) == 0, (
        capsys.readouterr().err
    )  # single-task molecule models (the classic baselines take table rows only)
    compared = json.loads((tmp_path / "run" / "compare.json").read_text())
    assert set(compared["stl_per_seed"][0]) == {"energy", "large"}


def test_molecule_data_need_the_molecule_encoder_and_no_features():
    data = {"molecules": {"path": "mols.csv"}}
    tasks = [{"name": "energy", "kind": "regression"}]
    with pytest.raises(ValueError, match="need the molecule encoder"):
        RunConfig(data=data, tasks=tasks, model={"hidden": [8]})
    with pytest.raises(ValueError, match="molecules need no features"):
        RunConfig(
            data={**data, "features": {"numeric": ["x"]}},
            tasks=tasks,
            model={"encoder": "molecule"},
        )
    with pytest.raises(ValueError, match="give exactly one of"):
        RunConfig(data={**data, "path": "x.csv"}, tasks=tasks, model={"encoder": "molecule"})


def test_the_input_fits_the_largest_molecule_of_any_part(tmp_path):
    """The size is an input's, not a label's: a test molecule larger than every training one
    must still be read (a split must not decide whether training runs)."""
    from polytask.data._molecules import MoleculeEncoding
    from polytask.tasks import Task

    frame = pd.DataFrame({"xyz": ["C 0 0 0", "C 0 0 0; O 0 0 1.1", "; ".join(["H 0 0 0"] * 5)],
                          "e": [1.0, 2.0, 3.0]})  # fmt: skip
    tasks = [Task("e", "regression")]
    encoding = MoleculeEncoding.fit(frame, tasks, "xyz", tmp_path, "m.csv", np.array([0, 1]))
    assert encoding.max_atoms == 5 and encoding.target_fit(tasks[0]).scale == (1.5, 0.5)
    assert encoding.elements == (6, 8)  # the training rows' C and O
    with pytest.warns(UserWarning, match=r"m\.csv: 1 rows hold elements no training molecule "
                      r"holds \(H\)"):  # fmt: skip
        assert encoding.source(frame.iloc[[2]], tmp_path, tasks, where="m.csv").x.shape == (
            1, 5, 4)  # fmt: skip
    again = MoleculeEncoding.from_dict(encoding.to_dict())
    assert again == encoding
    older = {k: v for k, v in encoding.to_dict().items() if k != "elements"}
    assert MoleculeEncoding.from_dict(older).elements is None  # no record: nothing to say
