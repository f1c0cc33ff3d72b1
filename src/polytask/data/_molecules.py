"""Molecules as inputs: a table whose column holds each molecule's atoms and 3-D positions, read
into the padded (A, 4) rows of the `molecule` encoder (atomic number, x, y, z in ångström; 0
pads). A cell is the path of an XYZ file (relative to the table's folder), an XYZ block (atom
count, comment, then `symbol x y z` lines) or the atoms on one line, `C 0 0 0; O 0 0 1.21`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from polytask.data._sequences import fit_error
from polytask.data._tensors import TaskData
from polytask.data._text import fits_from_dict, fits_to_dict
from polytask.tasks._columns import DataError, check_columns, json_scalar
from polytask.tasks._kinds import TargetFit
from polytask.tasks._task import Task

if TYPE_CHECKING:
    from polytask.models.encoders import InputShape

_ELEMENTS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu "
    "Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn"
)
SYMBOLS = tuple(_ELEMENTS.split())
NUMBERS = {s.lower(): z for z, s in enumerate(SYMBOLS, start=1)}
"""Element symbol (any case) → atomic number, hydrogen to radon."""


def parse_atoms(cell: Any, folder: Path) -> np.ndarray:
    """One molecule's (n, 4) atoms from a table cell (module docs); a ValueError says what is
    wrong with it."""
    if not isinstance(cell, str) or not cell.strip():
        raise ValueError("the cell is empty: give an XYZ file, an XYZ block or 'C 0 0 0; ...'")
    text = cell.strip()
    lines = text.splitlines()
    if len(lines) == 1 and ";" not in text and (len(text.split()) < 4 or (folder / text).is_file()):
        path = folder / text
        if not path.is_file():
            raise ValueError(
                f"XYZ file {path} not found (paths are relative to {folder}); a cell is an XYZ "
                "file, an XYZ block or 'C 0 0 0; O 0 0 1.21' (SMILES are not read: make 3-D "
                "coordinates first, e.g. with RDKit)"
            )
        lines = path.read_text().strip().splitlines()
    if lines and lines[0].strip().isdigit():  # an XYZ block: count, comment, atoms
        count = int(lines[0])
        # what follows the atoms is not read: QM9's frequencies, SMILES and InChI lines, or
        # the next frames of a trajectory
        atoms = [line for line in lines[2 : 2 + count] if line.strip()]
        if len(atoms) != count:
            raise ValueError(f"the XYZ block says {count} atoms but lists {len(atoms)}")
    else:
        atoms = [a for line in lines for a in line.split(";") if a.strip()]
    if not atoms:
        raise ValueError("no atoms")
    out = np.zeros((len(atoms), 4), dtype=np.float32)
    for i, atom in enumerate(atoms):
        parts = atom.split()
        if len(parts) < 4:
            raise ValueError(f"atom {i + 1} {atom.strip()!r}: give 'symbol x y z'")
        if len(parts) >= 8 and parts[4].isalpha():  # a charge column is a number
            raise ValueError(
                f"atom {i + 1} {atom.strip()!r}: several atoms on one line (a fifth field "
                f"{parts[4]!r}); separate atoms with ';' or new lines: 'C 0 0 0; O 0 0 1.21'"
            )
        symbol = parts[0].lower()
        number = NUMBERS.get(symbol) or _atomic_number(symbol)
        if not 0 < number <= len(SYMBOLS):
            raise ValueError(f"atom {i + 1}: unknown element {parts[0]!r}")
        try:
            out[i] = (number, *(float(v.replace("*^", "e")) for v in parts[1:4]))
        except ValueError:
            raise ValueError(f"atom {i + 1} {atom.strip()!r}: x, y, z must be numbers") from None
        if not np.isfinite(out[i, 1:]).all():  # a NaN atom would be near none: no bonds
            raise ValueError(f"atom {i + 1} {atom.strip()!r}: x, y, z must be finite numbers")
    return out


def _atomic_number(text: str) -> int:
    """An atomic number written as a number ("6", "6.0"); 0 for anything else."""
    try:
        value = float(text)
    except ValueError:
        return 0
    return int(value) if value.is_integer() else 0


def read_molecules(
    frame: pd.DataFrame,
    column: str,
    folder: Path,
    where: str,
    max_atoms: int | None = None,
    max_number: int | None = None,
    trained: bool = True,
) -> np.ndarray:
    """(N, A, 4) padded atoms of every row of `frame` (A: the most atoms of any row, or
    `max_atoms`); a bad cell, a row of more than `max_atoms` atoms or of an element beyond
    `max_number` is refused naming its row (`trained`: of a trained model, else of a config)."""
    check_columns(frame, [column], "molecule column", where)
    parsed = []
    for label, cell in zip(frame.index, frame[column], strict=True):
        try:
            atoms = parse_atoms(cell, folder)
        except ValueError as err:
            raise DataError(f"{where}, row {json_scalar(label)}: {column}: {err}") from None
        row = f"{where}, row {json_scalar(label)}"
        if max_atoms is not None and len(atoms) > max_atoms:
            raise DataError(
                f"{row}: {len(atoms)} atoms; the model was trained on molecules of at most "
                f"{max_atoms} (its input size): train it with such molecules among its rows"
            )
        largest = int(atoms[:, 0].max())
        if max_number is not None and largest > max_number:
            fix = (
                "train a model with a larger model.encoder_params.max_atomic_number"
                if trained
                else f"set model.encoder_params.max_atomic_number to at least {largest}"
            )
            raise DataError(
                f"{row}: element {SYMBOLS[largest - 1]} (atomic number {largest}) is beyond the "
                f"encoder's max_atomic_number {max_number} ({SYMBOLS[max_number - 1]}): {fix}"
            )
        parsed.append(atoms)
    most = max((len(a) for a in parsed), default=1)
    out = np.zeros((len(parsed), max_atoms or most, 4), dtype=np.float32)
    for i, atoms in enumerate(parsed):
        out[i, : len(atoms)] = atoms
    return out


@dataclass(frozen=True)
class MoleculeEncoding:
    """How molecules and targets are encoded, saved with a model: atoms read from `column`,
    padded to `max_atoms` (the largest molecule of any row it was fitted on); each task's
    `TargetFit` in `fits`."""

    fits: Mapping[str, TargetFit]
    max_atoms: int
    column: str = "xyz"
    max_atomic_number: int | None = None
    elements: tuple[int, ...] | None = None
    """The atomic numbers the training molecules hold (None: not recorded, an older model):
    rows holding others are warned about (the model learnt nothing of those elements)."""

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        tasks: Sequence[Task],
        column: str,
        folder: Path,
        where: str,
        train: np.ndarray | None = None,
        max_atomic_number: int | None = None,
    ) -> MoleculeEncoding:
        """Each task's targets fitted on the `train` rows of `frame` (default: all), the input
        sized for the largest molecule of any row (an input, not a label: a larger validation
        or test molecule must fit too); elements beyond `max_atomic_number` are refused."""
        atoms = read_molecules(frame, column, folder, where, None, max_atomic_number, False)
        trained = atoms if train is None else atoms[train]
        elements = tuple(int(z) for z in np.unique(trained[..., 0]) if z > 0)
        frame = frame if train is None else frame.iloc[train]
        fits = {}
        for task in tasks:
            check_columns(frame, task.target_columns, f"task {task.name!r}: target columns",
                          where)  # fmt: skip
            try:
                fits[task.name] = task.fit_target(frame)
            except ValueError as err:
                raise fit_error(err, task, where, [json_scalar(v) for v in frame.index]) from None
        return cls(fits, atoms.shape[1], column, max_atomic_number, elements)

    @property
    def model_input(self) -> InputShape:
        """`InputShape((max_atoms, 4))`, what the `molecule` encoder takes."""
        from polytask.models.encoders import InputShape

        return InputShape((self.max_atoms, 4))

    def target_fit(self, task: Task) -> TargetFit:
        return dataclasses.replace(self.fits.get(task.name, TargetFit()), inputs=self.max_atoms)

    def resolve_tasks(self, tasks: Sequence[Task]) -> list[Task]:
        """Fill in what the training data settle (e.g. `num_classes`)."""
        return [t.kind_spec.resolve(t, self.target_fit(t)) for t in tasks]

    def source(
        self,
        frame: pd.DataFrame,
        base: str | Path | None = None,
        tasks: Sequence[Task] = (),
        *,
        where: str | None = None,
    ) -> TaskData:
        """The rows of `frame` (XYZ paths relative to `base`) with `tasks`' targets (none:
        inputs only), in memory."""
        where = where or "the molecule table"
        folder = Path(base) if base is not None else Path()
        atoms = read_molecules(
            frame, self.column, folder, where, self.max_atoms, self.max_atomic_number
        )
        self._warn_unseen(atoms, where)
        x = torch.from_numpy(atoms)
        targets = {}
        for task in tasks:
            check_columns(frame, task.target_columns, f"task {task.name!r}: target columns",
                          where)  # fmt: skip
            targets[task.name] = task.encode_target(frame, self.target_fit(task))
        scale = {t.name: s for t in tasks if (s := self.target_fit(t).scale) is not None}
        return TaskData(x, targets, scale)

    def _warn_unseen(self, atoms: np.ndarray, where: str) -> None:
        """Warn about rows holding an element no training molecule held."""
        if self.elements is None:
            return
        numbers = atoms[..., 0].astype(int)
        unseen = (numbers > 0) & ~np.isin(numbers, self.elements)
        if not unseen.any():
            return
        rows = int(unseen.any(axis=1).sum())
        symbols = ", ".join(SYMBOLS[z - 1] for z in sorted(set(numbers[unseen].tolist())))
        warnings.warn(
            f"{where}: {rows} rows hold elements no training molecule holds ({symbols}): the "
            "model learnt nothing about them (their counts are read as none), so its "
            "predictions for these rows are guesses; train with such molecules among its rows",
            UserWarning,
            stacklevel=3,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, saved in a model's checkpoint (`kind: molecules`)."""
        return {"kind": "molecules", "max_atoms": self.max_atoms, "column": self.column,
                "max_atomic_number": self.max_atomic_number,
                "elements": None if self.elements is None else list(self.elements),
                "targets": fits_to_dict(self.fits)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MoleculeEncoding:
        limit, elements = d.get("max_atomic_number"), d.get("elements")
        return cls(fits_from_dict(d["targets"]), int(d["max_atoms"]), str(d["column"]),
                   None if limit is None else int(limit),
                   None if elements is None else tuple(int(z) for z in elements))  # fmt: skip
