"""Synthetic chest X-ray style images: four findings, a patient's age and sex on one image.

Each grayscale image shows a body outline, two dark lung fields, a heart silhouette, the spine
and ribs. The patient's attributes change the anatomy subtly:

- sex (1 = male, 0 = female): men are wider with squarer shoulders; women have breast shadows
  over the lung bases;
- age (years, about 20 to 90): bones grow fainter (density), ribs closer together and lungs a
  little taller with age.

Each image also has its own exposure, zoom and position, smooth texture over the lungs
(vessels, overlapping tissue) and noise, so that no single brightness or width gives a label
away: ridge and logistic regression on the 32 × 32 pixels of 2000 images reach R² 0.41 on
age, 0.97 accuracy on sex and AUC 0.94 (opacity), 0.82 (effusion), 0.88 (cardiomegaly) and
about 0.5 for the nodule (a spot anywhere in a lung, which a linear model cannot find).

Findings are drawn where they belong: `opacity` a soft bright patch in a lung, `effusion` a
bright fill at a lung base with a meniscus, `cardiomegaly` a heart 1.2-1.5 times as wide,
`nodule` a small round spot. Their odds rise with age (`finding_probabilities`) and effusion is
likelier with cardiomegaly, so the tasks share signal. Every image is drawn with its findings,
but the finding labels are written for `labelled_fraction` of the rows only (empty cells: missing
labels); age and sex are always given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polytask.data._builder_files import (
    check_count,
    prepare_folder,
    save_png,
    stem_width,
    to_uint8,
    write_csv,
)

XRAY_FINDINGS = ("opacity", "effusion", "cardiomegaly", "nodule")
XRAY_COLUMNS = ("image", *XRAY_FINDINGS, "age", "sex")
AGE_MEAN, AGE_STD, AGE_RANGE = 55.0, 16.0, (18, 95)
# Finding log-odds: intercept at the mean age, slope per standard deviation of age.
_LOGITS = {"opacity": (-1.4, 0.6), "effusion": (-2.0, 0.7), "cardiomegaly": (-1.9, 0.9)}
_LOGITS["nodule"] = (-2.2, 0.8)
EFFUSION_WITH_CARDIOMEGALY = 1.2  # added to effusion's log-odds when the heart is enlarged
NOISE = 0.025
TEXTURE = 0.03
AIR = 0.03


LABEL_STREAM = 7
"""The random stream (with the seed) that chooses which images carry finding labels."""


def _sigmoid(z: float) -> float:
    """The logistic function."""
    return 1.0 / (1.0 + math.exp(-z))


def finding_probabilities(age: float, cardiomegaly: bool = False) -> dict[str, float]:
    """Each finding's chance at `age` (effusion's given whether the heart is enlarged)."""
    z = (age - AGE_MEAN) / AGE_STD
    out = {name: _sigmoid(a + b * z) for name, (a, b) in _LOGITS.items()}
    a, b = _LOGITS["effusion"]
    out["effusion"] = _sigmoid(a + b * z + EFFUSION_WITH_CARDIOMEGALY * cardiomegaly)
    return out


@dataclass(frozen=True)
class _Patient:
    """Who is X-rayed: age (years), sex (1 male) and findings (name: 0 / 1)."""

    age: int
    sex: int
    findings: dict[str, int]


def _patient(rng: np.random.Generator) -> _Patient:
    """Age, sex, then the findings given the age."""
    age = int(np.clip(round(rng.normal(AGE_MEAN, AGE_STD)), *AGE_RANGE))
    sex = int(rng.integers(0, 2))
    cardiomegaly = bool(rng.random() < finding_probabilities(age)["cardiomegaly"])
    chance = finding_probabilities(age, cardiomegaly)
    findings = {
        name: int(cardiomegaly) if name == "cardiomegaly" else int(rng.random() < chance[name])
        for name in XRAY_FINDINGS
    }
    return _Patient(age, sex, findings)


def _soft(level: np.ndarray, width: float) -> np.ndarray:
    """1 well inside a shape given by `level` <= 1, ramping to 0 over `width` at its edge."""
    return np.clip((1.0 - level) / width, 0.0, 1.0)


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float
) -> np.ndarray:
    """The ellipse's level (<= 1 inside)."""
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2


def _blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sigma: float) -> np.ndarray:
    """A Gaussian bump of height 1."""
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))


def _inside(
    rng: np.random.Generator, centre: tuple[float, float], axes: tuple[float, float], reach: float
) -> tuple[float, float]:
    """A random point within `reach` of an ellipse's half-axes from its centre."""
    angle, radius = rng.uniform(0, 2 * math.pi), reach * math.sqrt(rng.uniform(0, 1))
    return (
        centre[0] + axes[0] * radius * math.cos(angle),
        centre[1] + axes[1] * radius * math.sin(angle),
    )


def _draw(
    rng: np.random.Generator, lesions: np.random.Generator, patient: _Patient, size: int
) -> np.ndarray:
    """The patient's radiograph, floats about [0, 1], (size, size). `lesions` draws the
    findings' shapes and places, `rng` everything else, so that the same patient with and
    without a finding differs by the finding only."""
    from scipy.ndimage import gaussian_filter  # here: importing polytask.data stays light

    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")
    # Each patient stands a little nearer or farther, higher or lower: sizes are relative.
    zoom, (shift_x, shift_y) = float(rng.uniform(0.88, 1.12)), rng.normal(0.0, 0.04, 2)
    x, y = x / zoom - shift_x, y / zoom - shift_y
    z_age = (patient.age - AGE_MEAN) / AGE_STD
    male = patient.sex == 1
    found = patient.findings

    # Body: a superellipse (squarer for men) with flat shoulders, tissue thicker in the middle;
    # the neck above it.
    cx0 = float(rng.normal(0.0, 0.03))
    half_width = (0.80 if male else 0.73) * float(rng.uniform(0.92, 1.08))
    power = 3.2 if male else 2.2
    level = np.abs((x - cx0) / half_width) ** power + np.abs((y - 0.25) / 1.05) ** 4
    body = np.maximum(_soft(level, 0.12), _soft(np.abs(x - cx0) / 0.17, 0.3))
    thickness = np.sqrt(np.clip(1.0 - ((x - cx0) / half_width) ** 2, 0.0, None))
    image = body * (0.30 + 0.12 * thickness)
    breast = float(rng.uniform(0.02, 0.07))  # drawn for men too: the rest is drawn alike
    if not male:
        for side in (-1, 1):
            image += breast * body * _blob(x, y, cx0 + side * 0.42 * half_width / 0.7, 0.6, 0.17)

    # Lungs: dark fields, a little taller with age.
    scale = half_width / 0.75
    lung_axes = (0.25 * scale, 0.52 * (1.0 + 0.04 * z_age) * float(rng.uniform(0.95, 1.05)))
    lung_centres = [(cx0 + side * 0.37 * scale, -0.04) for side in (-1, 1)]
    lungs = [_soft(_ellipse(x, y, *c, *lung_axes), 0.25) for c in lung_centres]
    image -= 0.2 * (lungs[0] + lungs[1])

    # Heart: bright over the lungs' lower medial parts, off to the patient's left (image right).
    heart_width = 0.24 * scale * float(rng.uniform(0.85, 1.15))
    if found["cardiomegaly"]:
        heart_width *= float(lesions.uniform(1.2, 1.5))
    image += 0.2 * _soft(_ellipse(x, y, cx0 + 0.1, 0.33, heart_width, 0.27), 0.2)

    # Bones fade with age; ribs come closer together.
    bone = 0.16 * (1.12 - 0.0045 * (patient.age - 20)) * float(rng.uniform(0.85, 1.15))
    spacing = 0.175 * (1.0 - 0.05 * z_age) * float(rng.uniform(0.94, 1.06))
    dx = np.abs(x - cx0)
    spine = _soft(dx / 0.07, 0.4) * (1.0 + 0.25 * np.cos(2 * math.pi * y / 0.17))
    image += 0.9 * bone * spine * body
    ribs = np.zeros_like(x)
    for k in range(9):
        centre_line = -0.72 + k * spacing + 0.3 * dx**2
        ribs += np.exp(-(((y - centre_line) / 0.028) ** 2))
    thorax = _soft(np.clip((y + 0.1) / 0.75, 0.0, None), 0.3)  # ribs end below the lungs
    image += bone * ribs * ((dx > 0.07) & (dx < 0.92 * half_width)) * body * thorax

    # Vessels and overlapping tissue: smooth random texture, strongest in the lungs.
    texture = gaussian_filter(rng.normal(0.0, 1.0, (size, size)), sigma=1.2 * size / 64)
    texture /= max(float(texture.std()), 1e-12)
    image += TEXTURE * texture * (lungs[0] + lungs[1] + 0.4 * body)

    # Findings.
    if found["opacity"]:
        side = int(lesions.integers(0, 2))
        cx, cy = _inside(lesions, lung_centres[side], lung_axes, 0.6)
        sigma = float(lesions.uniform(0.09, 0.16))
        centres = [np.array([cx, cy]) + lesions.normal(0.0, 0.06, 2) for _ in range(3)]
        patch = sum(_blob(x, y, float(u), float(v), sigma) for u, v in centres)
        image += float(lesions.uniform(0.07, 0.15)) * np.clip(patch, 0, 1.2) * lungs[side]
    if found["effusion"]:
        sides = [0, 1] if lesions.random() < 0.3 else [int(lesions.integers(0, 2))]
        for side in sides:
            (lcx, lcy), sign = lung_centres[side], (-1, 1)[side]
            height = float(lesions.uniform(0.15, 0.4))
            lateral = np.clip(sign * (x - lcx) / lung_axes[0], 0.0, 1.0)
            line = lcy + lung_axes[1] - height - 0.15 * lateral**2  # the meniscus rises laterally
            fill = 1.0 / (1.0 + np.exp(-(y - line) / 0.03))
            image += float(lesions.uniform(0.09, 0.18)) * fill * lungs[side]
    if found["nodule"]:
        side = int(lesions.integers(0, 2))
        cx, cy = _inside(lesions, lung_centres[side], lung_axes, 0.6)
        sigma = float(lesions.uniform(0.06, 0.08))
        image += float(lesions.uniform(0.25, 0.35)) * _blob(x, y, cx, cy, sigma)

    image = AIR + image * float(rng.uniform(0.8, 1.2))  # exposure
    image = gaussian_filter(image, sigma=0.5 * size / 64)
    return image + rng.normal(0.0, NOISE, image.shape)


def make_xrays(
    root: str | Path,
    n: int = 2000,
    size: int = 64,
    seed: int = 0,
    labelled_fraction: float = 0.6,
) -> Path:
    """Write `n` synthetic radiographs (grayscale PNG, size × size) under `root` with
    `manifest.csv`: image, the four findings (0 / 1; empty where unlabelled), age (years) and
    sex (1 male, 0 female). round(n · labelled_fraction) rows, chosen by `seed`, carry finding
    labels. Returns the manifest's path."""
    check_count("n", n, 1)
    check_count("size", size, 16)
    if not 0 <= labelled_fraction <= 1:
        raise ValueError(f"labelled_fraction must be in [0, 1], got {labelled_fraction}")
    out = prepare_folder(root, ["images"])
    labelled = np.zeros(n, dtype=bool)
    # a stream of its own: random_split(n, ..., seed) permutes with default_rng(seed) too,
    # and the same draw made every test and validation image labelled, training 38%
    chooser = np.random.default_rng([seed, LABEL_STREAM])
    labelled[chooser.permutation(n)[: round(n * labelled_fraction)]] = True
    width = stem_width(n)
    rows: list[list[str | int | float | None]] = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        patient = _patient(rng)
        path = f"images/{i:0{width}d}.png"
        lesions = np.random.default_rng([seed, i, 1])
        save_png(to_uint8(_draw(rng, lesions, patient, size)), out / path)
        findings = [patient.findings[f] if labelled[i] else None for f in XRAY_FINDINGS]
        rows.append([path, *findings, patient.age, patient.sex])
    manifest = out / "manifest.csv"
    write_csv(manifest, XRAY_COLUMNS, rows)
    return manifest
