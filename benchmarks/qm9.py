"""QM9: the 11 molecular properties of the MTL literature (mu, alpha, homo, lumo, r2, zpve, U0,
U, H, G, cv) as 11 regression tasks on one `molecule` encoder (continuous-filter message passing
on the xyz geometry, plain PyTorch), against one single-task model of the same size per property.

Data: the pip package qm9pack (its wheel ships the 130,831 molecules; `pip install qm9pack`,
nothing is fetched at run time); parsed once into a cache beside this file
(benchmarks/.cache/qm9.npz). Split: a random permutation of the molecules (seed 0) cut into
train / validation / test; `--full` uses the literature's 110,000 / 10,000 / 10,000, the
default quick variant 4,000 / 1,000 / 2,000. Targets in the package's units (Debye, bohr³,
hartree, bohr², cal/(mol K)), standardised for training; per-task test MAE in those units.
Targets: each less its least-squares fit on the molecule's composition (counts of H, C, N, O,
F; training rows), as SchNet subtracts atom reference energies: energies are mostly that sum,
which a network fits to 0.03 hartree only after very long training. MAE is unchanged by it.
Model selection: each model keeps its best validation epoch (the validation rows only); the
test rows are scored once per model and seed.

Δm: the mean over the 11 properties of the relative MAE change against the single-task models
of the same seed, positive when MTL is better. Published figures quoted beside ours (their sign
turned to ours): Nash-MTL (Navon et al. 2022), Δm −62.0% (their +62.0%, lower is better);
their protocol: PyG QM9 in PyG's units, 110k / 10k / 10k, the MPNN of Gilmer et al. 2017 with
Set2Set readout, 300 epochs, lr 1e-3 with plateau decay, 3 seeds. Results:
benchmarks/results/qm9[_full].md, rebuilt after every model from each trained model's test
MAEs, which are kept in results/qm9[_full].runs.csv with the settings that made them. A run
with the same settings (split sizes, epochs, gradient mode, encoder) trains only the models
and seeds the file lacks: a run stopped part way (a long `--full` run spans sessions) goes on
where it stopped; `--fresh` trains all again. Runs of other seeds may train beside it
(`--seed-from K`: seeds K..N-1, e.g. one process a core), each table holding every kept run;
`--table-only` rebuilds the table from the kept runs alone; `--docs FILE` also fills the short
table between a `<!-- qm9-full -->` (or `qm9-quick`) marker pair in FILE (the benchmarks guide).

    python benchmarks/qm9.py [--full] [--seeds 3] [--seed-from 0] [--epochs N] [--balancers ...]
                             [--table-only] [--docs docs/guide/benchmarks.md]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from polytask import TrainConfig, Trainer
from polytask.app import ModelConfig
from polytask.balancers import make_balancer
from polytask.data import TaskData
from polytask.gradients._registry import modes_for
from polytask.models import InputShape
from polytask.tasks import Task

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import commit  # noqa: E402

CACHE = HERE / ".cache" / "qm9.npz"
ELEMENTS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
TARGETS = {
    "mu": "Dipole_debye", "alpha": "Polarizability_bohr3", "homo": "HOMO_au",
    "lumo": "LUMO_au", "r2": "R2_bohr2", "zpve": "ZPVE_au", "U0": "InternalEnergy_0K_au",
    "U": "InternalEnergy_298K_au", "H": "Enthalphy_298K_au", "G": "GibbsFreeEnergy_298K_au",
    "cv": "Heatcapacity_Cv_cal_mol_K",
}  # fmt: skip
SIZES = {"quick": (4_000, 1_000, 2_000), "full": (110_000, 10_000, 10_000)}
BALANCERS = (  # the main balancers, EW first
    "ew", "uncertainty", "dwa", "mgda", "pcgrad", "cagrad", "nash_mtl", "famo", "upgrad", "db_mtl"
)  # fmt: skip
ENCODER = {"encoder": "molecule", "encoder_params": {"width": 32, "depth": 3, "basis": 16}}
SINGLE = "single-task (one model per property)"
SINGLE_EACH = "single-task"  # a kept run's name: "single-task mu", ...
PUBLISHED = (
    ("Nash-MTL (Navon et al. 2022)", "−62.0"),
    ("LS, equal weights (as reported there)", "−177.6"),
)


def load() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """All molecules as (N, 29, 4) atoms (atomic number, x, y, z; zero rows pad) and the 11
    targets, from qm9pack's CSV files (parsed once, then read from the cache)."""
    if CACHE.is_file():
        cached = np.load(CACHE)
        return cached["atoms"], {name: cached[name] for name in TARGETS}
    # found, not imported: the package's own reader needs setuptools' pkg_resources
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the QM9 suite reads the pip package qm9pack: pip install qm9pack")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    columns = ["Elements", "XYZ_Ang", *TARGETS.values()]
    frame = pd.concat(
        [pd.read_csv(folder / f"qm9_part{k}.csv", usecols=columns) for k in (1, 2, 3)],
        ignore_index=True,
    )
    atoms = np.zeros((len(frame), 29, 4), dtype=np.float32)
    for i, (elements, xyz) in enumerate(zip(frame["Elements"], frame["XYZ_Ang"], strict=True)):
        symbols = ast.literal_eval(elements)
        atoms[i, : len(symbols), 0] = [ELEMENTS[s] for s in symbols]
        numbers = xyz.replace("[", "").replace("]", "").replace("*^", "e")  # 1.2*^-6 in QM9
        atoms[i, : len(symbols), 1:] = np.array(numbers.split(","), dtype=float).reshape(-1, 3)
    targets = {name: frame[column].to_numpy(np.float64) for name, column in TARGETS.items()}
    CACHE.parent.mkdir(exist_ok=True)
    arrays: dict[str, Any] = {"atoms": atoms, **targets}  # not savez's bool allow_pickle
    np.savez_compressed(CACHE, **arrays)
    return atoms, targets


def split(n: int, sizes: tuple[int, int, int], seed: int = 0) -> list[np.ndarray]:
    """Train / validation / test row indices: one random permutation cut at `sizes`."""
    order = np.random.default_rng(seed).permutation(n)
    ends = np.cumsum(sizes)
    return [order[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def composition(atoms: np.ndarray) -> np.ndarray:
    """(N, 5): each molecule's count of H, C, N, O and F atoms."""
    numbers = atoms[:, :, 0].round().astype(int)
    return np.stack([(numbers == z).sum(1) for z in ELEMENTS.values()], 1).astype(np.float64)


def parts(
    atoms: np.ndarray, targets: dict[str, np.ndarray], rows: list[np.ndarray]
) -> list[TaskData]:
    """TaskData for each part: each target less its least-squares fit on the composition (with
    an intercept; fitted on the training rows: SchNet's atom reference energies, for every
    target), then standardised with the training rows' mean and std. Errors are those of the
    targets themselves (the fit is the same on both sides)."""
    train = rows[0]
    counts = np.hstack([composition(atoms), np.ones((len(atoms), 1))])
    targets = {
        k: v - counts @ np.linalg.lstsq(counts[train], v[train], rcond=None)[0]
        for k, v in targets.items()
    }
    scale = {k: (float(v[train].mean()), float(v[train].std())) for k, v in targets.items()}
    out = []
    for index in rows:
        ys = {k: torch.tensor((v[index] - scale[k][0]) / scale[k][1], dtype=torch.float32)
              for k, v in targets.items()}  # fmt: skip
        out.append(TaskData(torch.from_numpy(atoms[index]), ys, scale))
    return out


def train(tasks: list[Task], balancer: str, data: list[TaskData], training: TrainConfig
          ) -> tuple[dict[str, float], float]:  # fmt: skip
    """(test MAE per task, training seconds) of one model on `tasks`."""
    shape = InputShape(tuple(data[0].x.shape[1:]))
    model = ModelConfig("hard_sharing", dict(ENCODER)).build(shape, tasks, seed=training.seed)
    trainer = Trainer(model, make_balancer(balancer), training)
    began = time.perf_counter()
    trainer.fit(data[0], data[1])
    seconds = time.perf_counter() - began
    metrics = trainer.evaluate(data[2])
    return {t.name: float(metrics[t.name]["mae"]) for t in tasks}, seconds


def mode_for(balancer: str, training: TrainConfig) -> TrainConfig:
    """`training` with the first gradient mode that serves `balancer` when its own cannot
    (DB-MTL keeps per-task gradient state, which the representation mode does not give)."""
    modes = modes_for(make_balancer(balancer))
    if training.gradient_mode in modes:
        return training
    return dataclasses.replace(training, gradient_mode=modes[0])


Runs = dict[tuple[int, str], dict[str, float]]


def read_runs(path: Path, protocol: str) -> Runs:
    """The models kept in `path` that were trained with `protocol`'s settings, by (seed, model):
    their test MAE per task and training seconds."""
    if not path.is_file():
        return {}
    frame = pd.read_csv(path)
    kept = frame[frame["protocol"] == protocol].to_dict("records")
    return {
        (int(r["seed"]), str(r["model"])): {
            k: float(r[k]) for k in (*TARGETS, "seconds") if k in r and not pd.isna(r[k])
        }
        for r in kept
    }


def keep_run(path: Path, protocol: str, seed: int, model: str, mae: dict[str, float],
             seconds: float) -> None:  # fmt: skip
    """Adds one trained model's figures to `path` (written at once: a stopped run keeps it)."""
    record = {"protocol": protocol, "seed": seed, "model": model, **mae, "seconds": seconds,
              "commit": commit()}  # fmt: skip
    frame = pd.DataFrame([record], columns=["protocol", "seed", "model", *TARGETS, "seconds",
                                            "commit"])  # fmt: skip
    frame.to_csv(path, mode="a", header=not path.is_file(), index=False)


def rows_of(runs: Runs, seeds: list[int], labels: list[str]) -> dict[str, dict[str, list[float]]]:
    """The table's rows from the kept runs: the single-task row from the seeds whose 11 models
    are all kept, each MTL model's from its kept seeds, Δm where that seed's single-task
    models are all kept."""
    rows: dict[str, dict[str, list[float]]] = {SINGLE: {"time": []}}
    single: dict[int, dict[str, float]] = {}
    for seed in seeds:
        own = {name: runs.get((seed, f"{SINGLE_EACH} {name}")) for name in TARGETS}
        if all(own.values()):
            single[seed] = {name: r[name] for name, r in own.items() if r}
            rows[SINGLE]["time"].append(sum(r["seconds"] for r in own.values() if r))
            for name, value in single[seed].items():
                rows[SINGLE].setdefault(name, []).append(value)
    for label in labels:
        row: dict[str, list[float]] = {"time": [], "dm": []}
        for seed in seeds:
            mae = runs.get((seed, label))
            if mae is None:
                continue
            for name in TARGETS:
                row.setdefault(name, []).append(mae[name])
            row["time"].append(mae["seconds"])
            if seed in single:
                base = single[seed]
                row["dm"].append(100 * float(np.mean([(base[n] - mae[n]) / base[n]
                                                      for n in TARGETS])))  # fmt: skip
        if row["time"]:
            rows[label] = row
    return rows


def _commits(path: Path, protocol: str) -> list[str]:
    """The commits that trained the models kept in `path` for `protocol`."""
    if not path.is_file():
        return [commit()]
    frame = pd.read_csv(path)
    return [str(c) for c in frame.loc[frame["protocol"] == protocol, "commit"]] or [commit()]


def table(rows: dict[str, dict[str, list[float]]], header: str) -> str:
    """The Markdown table: per-task MAE (mean ± std over seeds), Δm and time per model."""
    names = list(TARGETS)
    lines = [header, "", "| model | " + " | ".join(f"{n} MAE ↓" for n in names)
             + " | Δm % | time s |", "|---" * (len(names) + 3) + "|"]  # fmt: skip

    def cell(values: list[float], digits: int = 4) -> str:
        a = np.asarray(values)
        if len(a) == 0:
            return "–"
        return f"{a.mean():.{digits}g} ± {a.std(ddof=1) if len(a) > 1 else 0:.2g}"

    for label, row in rows.items():
        dm = "0" if label == SINGLE else cell(row.get("dm", []), 3)
        lines.append(f"| {label} | " + " | ".join(cell(row.get(n, [])) for n in names)
                     + f" | {dm} | {np.mean(row['time']) if row['time'] else 0:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


NAMES = {"ew": "EW", "uncertainty": "UW", "dwa": "DWA", "mgda": "MGDA", "pcgrad": "PCGrad",
         "cagrad": "CAGrad", "nash_mtl": "Nash-MTL", "famo": "FAMO", "upgrad": "UPGrad",
         "db_mtl": "DB-MTL"}  # fmt: skip
SUMMARY = {"mu": "D", "alpha": "bohr³", "homo": "hartree", "U0": "hartree", "cv": "cal/(mol K)"}
"""The docs' short table: a property of each kind, with its unit."""


def summary(rows: dict[str, dict[str, list[float]]]) -> str:
    """The docs' short table: five properties, seeds, Δm and time, best Δm first."""

    def cell(values: list[float], digits: int = 4) -> str:
        a = np.asarray(values, dtype=float)
        spread = f" ± {a.std(ddof=1):.1g}" if len(a) > 1 else ""
        return f"{a.mean():.{digits}g}{spread}" if len(a) else "–"

    def delta(values: list[float]) -> str:
        a = np.asarray(values, dtype=float)
        if not len(a):
            return "–"
        spread = f" ± {a.std(ddof=1):.1f}" if len(a) > 1 else ""
        return f"{a.mean():.1f}{spread}".replace("-", "−")

    def name(label: str) -> str:
        balancer = label.removeprefix("MTL hard_sharing + ").split(" (")[0]
        return NAMES.get(balancer, balancer) + (" (jacobian)" if "jacobian" in label else "")

    heads = " | ".join(f"{name} ({unit})" for name, unit in SUMMARY.items())
    lines = [f"| model | seeds | {heads} | Δm % | time s (single-task: all 11) |",
             "|---" * (len(SUMMARY) + 4) + "|"]  # fmt: skip
    mtl = {label: row for label, row in rows.items() if label != SINGLE}
    single = rows.get(SINGLE)
    if single is not None and single["time"]:
        lines.append(f"| single-task | {len(single['time'])} | "
                     + " | ".join(cell(single.get(n, [])) for n in SUMMARY)
                     + f" | 0 | {np.mean(single['time']):.0f} |")  # fmt: skip
    ranked = sorted(mtl, key=lambda label: -np.mean(mtl[label]["dm"]) if mtl[label]["dm"] else 1e9)
    for label in ranked:
        row = mtl[label]
        lines.append(f"| {name(label)} | {len(row['time'])} | "
                     + " | ".join(cell(row.get(n, [])) for n in SUMMARY)
                     + f" | {delta(row['dm'])} | {np.mean(row['time']):.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def fill_docs(path: Path, marker: str, text: str) -> None:
    """Put `text` between `<!-- marker -->` and `<!-- /marker -->` in `path`."""
    doc = path.read_text()
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in doc or end not in doc:
        raise SystemExit(f"{path} has no {start} ... {end} markers to fill: add them where the "
                         "table goes")  # fmt: skip
    head, rest = doc.split(start, 1)
    doc = head + start + "\n\n" + text + "\n" + end + rest.split(end, 1)[1]
    path.write_text(doc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--full", action="store_true", help="110k / 10k / 10k (hours on a CPU)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed-from", type=int, default=0,
                        help="the first seed to train (seeds SEED_FROM..SEEDS-1): another "
                        "process may train the others beside it")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="default: 15 quick, 40 full")
    parser.add_argument("--balancers", nargs="+", default=list(BALANCERS))
    parser.add_argument("--rows", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                        help="other split sizes (a smoke test)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--gradient-mode", default="representation",
                        help="how gradient balancers see the task gradients (default: on the "
                        "shared representation; jacobian: exact, ~11x slower)")  # fmt: skip
    parser.add_argument("--out", default=None, help="default: results/qm9[_full].md")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: rebuild the table from the runs file")  # fmt: skip
    parser.add_argument("--docs", type=Path, default=None,
                        help="also fill the short table between <!-- qm9-full --> (or qm9-quick) "
                        "markers in this file, e.g. docs/guide/benchmarks.md")  # fmt: skip
    parser.add_argument("--fresh", action="store_true",
                        help="train every model again (default: keep the models that "
                        "results/qm9[_full].runs.csv holds for the same settings)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variant = "full" if args.full else "quick"
    epochs = args.epochs or (40 if args.full else 15)
    sizes = tuple(args.rows) if args.rows else SIZES[variant]
    data: list[TaskData] = []  # --table-only trains nothing, so reads no molecules
    if not args.table_only:
        atoms, targets = load()
        data = parts(atoms, targets, split(len(atoms), sizes))
    tasks = [Task(name, "regression", metrics=("mae",)) for name in TARGETS]
    out = Path(args.out or HERE / "results" / f"qm9{'_full' if args.full else ''}.md")
    store = out.with_suffix(".runs.csv")
    protocol = (f"{'/'.join(map(str, sizes))} molecules, {epochs} epochs, gradient mode "
                f"{args.gradient_mode}, {ENCODER}")  # fmt: skip
    if args.fresh and store.is_file():
        frame = pd.read_csv(store)
        frame[frame["protocol"] != protocol].to_csv(store, index=False)
    runs = read_runs(store, protocol)
    if not 0 <= args.seed_from < args.seeds:
        parser.error(f"--seed-from must be in 0..{args.seeds - 1} (--seeds {args.seeds})")
    seeds = list(range(args.seed_from, args.seeds))
    began = time.perf_counter()
    labels: list[str] = []

    rows = f" --rows {' '.join(map(str, sizes))}" if args.rows else ""

    def write() -> None:
        kept = {**read_runs(store, protocol), **runs}  # with what runs beside this one wrote
        done = sorted({seed for seed, _ in kept})
        header = (
            f"# QM9 ({variant}: {' / '.join(f'{s:,}' for s in sizes)} molecules)\n\n"
            f"Commit(s) `{'`, `'.join(sorted(set(_commits(store, protocol))))}`; seeds {done} "
            f"(`python benchmarks/qm9.py{' --full' if args.full else ''} --seeds {args.seeds} "
            f"--epochs {epochs}{rows} --balancers {' '.join(args.balancers)}`; the table is "
            f"rebuilt after every model from `{store.name}`, and a rerun trains only what it "
            "lacks); "
            f"encoder {ENCODER}, "
            "linear heads; targets less their least-squares fit on the composition "
            f"(training rows; SchNet's atom references); {epochs} epochs, batch 128, "
            "AdamW lr 1e-3 with a cosine "
            "decay, weight decay 1e-4, the best validation epoch kept; gradient balancers "
            f"on gradient mode {args.gradient_mode!r}. MAE in qm9pack's "
            "units; Δm against the single-task models of the same seed (positive: MTL "
            "better). Time: training seconds (single-task: all 11 models).\n\n"
            "Published, another protocol (PyG QM9: U0, U, H, G as atomization energies, in meV; "
            "110k / 10k / 10k, Gilmer et al.'s MPNN, "
            "300 epochs; sign as ours): "
            + "; ".join(f"{name} Δm {value}%" for name, value in PUBLISHED)
        )
        made = rows_of(kept, done, labels)
        out.write_text(table(made, header))
        if args.docs is not None:
            fill_docs(args.docs, f"qm9-{variant}", summary(made))

    for seed in seeds:
        training = TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, weight_decay=1e-4,
                               patience=None, seed=seed, progress=False, conflict_every=None,
                               lr_schedule="cosine", gradient_mode=args.gradient_mode)  # fmt: skip
        for task in tasks:
            name = f"{SINGLE_EACH} {task.name}"
            if (seed, name) not in runs and not args.table_only:
                mae, seconds = train([task], "ew", data, training)
                runs[(seed, name)] = {**mae, "seconds": seconds}
                keep_run(store, protocol, seed, name, mae, seconds)
                print(f"seed {seed} single {task.name}: {mae[task.name]:.5g} ({seconds:.0f} s)",
                      flush=True)  # fmt: skip
        for balancer in args.balancers:
            own = mode_for(balancer, training)
            label = f"MTL hard_sharing + {balancer}" + (
                f" (gradient mode {own.gradient_mode})" if own is not training else ""
            )
            if label not in labels:
                labels.append(label)
            if (seed, label) in runs or args.table_only:
                continue
            mae, seconds = train(tasks, balancer, data, own)
            runs[(seed, label)] = {**mae, "seconds": seconds}
            keep_run(store, protocol, seed, label, mae, seconds)
            minutes = (time.perf_counter() - began) / 60
            print(f"seed {seed} {balancer}: {seconds:.0f} s ({minutes:.0f} min so far)", flush=True)
            write()
    write()
    print(out.read_text())


if __name__ == "__main__":
    main()
