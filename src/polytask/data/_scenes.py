"""Procedural scenes for dense, detection and keypoint tasks on the same images.

A pinhole camera, pitched down, looks at a ground plane that ends in a backdrop at `FAR`
metres; 0..max_objects shapes stand on the ground: circles (spheres, shaded), squares and
triangles (flat, facing the camera). Everything is rendered with a depth buffer, so the
segmentation, depth, surface normals, boxes and keypoint visibilities all agree:

- segmentation: 0 background, 1 circle, 2 square, 3 triangle (`SCENE_CLASSES`), the nearest
  surface of each pixel;
- depth: metres along the viewing axis (about 2 at the bottom row to `FAR`);
- normals: unit vectors in camera axes (x right, y up, z towards the camera): (0, 0, 1) on the
  squares, triangles and backdrop, a sphere's outward normal on circles, the ground's up
  direction (0, cos pitch, sin pitch) on the ground;
- objects: one box per object with visible pixels (the box of those pixels) and its class name;
- keypoints: per object (in the objects' order) top, bottom, left, right (`SCENE_KEYPOINTS`) as
  [x, y, v]: v = 2 visible, 1 hidden behind a nearer object, 0 outside the image (x = y = 0).

Coordinates are pixels of the image, (0, 0) its top-left corner: pixel (row i, column j) covers
[j, j + 1) × [i, i + 1). Every image comes from its own generator seeded by (seed, row), so a
small `n` gives the first rows of a larger one.
"""

from __future__ import annotations

import colorsys
import json
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

SCENE_CLASSES = ("background", "circle", "square", "triangle")
SCENE_OBJECTS = SCENE_CLASSES[1:]
SCENE_KEYPOINTS = ("top", "bottom", "left", "right")
SCENE_FLIP_PAIRS = ((2, 3),)
SCENE_COLUMNS = (
    "image",
    "segmentation",
    "depth",
    "normals",
    "objects",
    "keypoints",
    "count",
    "has_circle",
)

FAR = 10.0  # the backdrop's depth (metres)
CAMERA_HEIGHT = 1.5
PITCH = math.radians(15.0)
OBJECT_DEPTH = (3.0, 7.5)  # where objects stand
OBJECT_RADIUS = (0.45, 0.9)  # half their width (metres)
MIN_VISIBLE_PIXELS = 4
MIN_VISIBLE_FRACTION = 0.25  # of the part inside the image: objects hidden more are left out
LIGHT = np.array([-0.4, 0.6, 0.7]) / np.linalg.norm([-0.4, 0.6, 0.7])
NOISE = 0.015


def scene_classes() -> list[str]:
    """Segmentation class names by index (0 background); detection labels are the rest."""
    return list(SCENE_CLASSES)


@dataclass(frozen=True)
class SceneCamera:
    """The pinhole camera of `make_scenes` images of one size (pixels, metres, radians)."""

    focal: float
    cx: float
    cy: float
    height: float = CAMERA_HEIGHT
    pitch: float = PITCH

    def rays(self, size: int) -> np.ndarray:
        """(3, H, W) ray directions through the pixel centres, scaled to depth 1 (z = -1)."""
        v, u = np.mgrid[0:size, 0:size] + 0.5
        return np.stack(
            [(u - self.cx) / self.focal, -(v - self.cy) / self.focal, -np.ones((size, size))]
        )

    def ground_normal(self) -> np.ndarray:
        """The ground's up direction in camera axes."""
        return np.array([0.0, math.cos(self.pitch), math.sin(self.pitch)])

    def ground_depth(self, v: np.ndarray) -> np.ndarray:
        """Depth of the ground seen at image row coordinate `v` (inf above the horizon)."""
        denom = math.cos(self.pitch) * (v - self.cy) / self.focal + math.sin(self.pitch)
        with np.errstate(divide="ignore"):
            return np.where(denom > 0, self.height / np.maximum(denom, 1e-12), np.inf)

    def ground_row(self, depth: float) -> float:
        """The image row coordinate where the ground lies at `depth`."""
        ratio = self.height / depth - math.sin(self.pitch)
        return self.cy + self.focal * ratio / math.cos(self.pitch)


def scene_camera(size: int) -> SceneCamera:
    """The camera of `make_scenes(size=size)`: focal length = image width (about 53° wide)."""
    return SceneCamera(focal=float(size), cx=size / 2, cy=size / 2)


@dataclass(frozen=True)
class _Shape:
    """One object: class index (1..3), image centre and half-size (pixels), depth and
    half-size (metres), RGB colour."""

    kind: int
    uc: float
    vc: float
    r: float
    depth: float
    radius: float
    colour: tuple[float, float, float]

    def mask(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Pixels (centres u, v) covered by the shape."""
        du, dv = u - self.uc, v - self.vc
        if self.kind == 1:
            return du**2 + dv**2 <= self.r**2
        if self.kind == 2:
            return (np.abs(du) <= self.r) & (np.abs(dv) <= self.r)
        # triangle: apex (uc, vc - r), base from (uc - r, vc + r) to (uc + r, vc + r)
        return (dv <= self.r) & (np.abs(du) <= (dv + self.r) / 2)

    def surface(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Covered pixels, their depth (inf elsewhere) and normals (3, H, W)."""
        mask = self.mask(u, v)
        normals = np.zeros((3, *u.shape))
        if self.kind == 1:  # the front of a sphere
            x, y = (u - self.uc) / self.r, (v - self.vc) / self.r
            z = np.sqrt(np.clip(1.0 - x**2 - y**2, 0.0, None))
            depth = self.depth - self.radius * z
            normals[0], normals[1], normals[2] = x, -y, z
            normals /= np.maximum(np.linalg.norm(normals, axis=0), 1e-12)
        else:  # flat, facing the camera
            depth = np.full(u.shape, self.depth)
            normals[2] = 1.0
        return mask, np.where(mask, depth, np.inf), normals

    def keypoints(self) -> list[tuple[float, float]]:
        """Top, bottom, left and right of the outline (pixels)."""
        top, bottom = (self.uc, self.vc - self.r), (self.uc, self.vc + self.r)
        if self.kind == 3:
            base = self.vc + self.r
            return [top, bottom, (self.uc - self.r, base), (self.uc + self.r, base)]
        return [top, bottom, (self.uc - self.r, self.vc), (self.uc + self.r, self.vc)]


def _random_shape(rng: np.random.Generator, size: int, camera: SceneCamera) -> _Shape:
    """An object standing on the ground (one pixel above it, so the ground never hides it)."""
    kind = int(rng.integers(1, 4))
    depth = float(rng.uniform(*OBJECT_DEPTH))
    radius = float(rng.uniform(*OBJECT_RADIUS))
    r = camera.focal * radius / depth
    vc = camera.ground_row(depth) - 1.0 - r
    uc = float(rng.uniform(0.0, size))
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0)
    colour = colorsys.hsv_to_rgb(float(hue), float(sat), float(val))
    return _Shape(kind, uc, vc, r, depth, radius, colour)


@dataclass
class _Render:
    """A rendered scene: image (H, W, 3) in [0, 1], instance ids (0 background, k + 1 shape k),
    depth (H, W), normals (3, H, W) and each shape's full mask inside the image."""

    image: np.ndarray
    instance: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    masks: list[np.ndarray]


@dataclass(frozen=True)
class _Ground:
    """What the background of every image of one size shares: depth (H, W), normals (3, H, W),
    which pixels show the ground, its checker pattern and fog (both (H, W)), row positions."""

    depth: np.ndarray
    normals: np.ndarray
    ground: np.ndarray
    checker: np.ndarray
    fog: np.ndarray
    rows: np.ndarray


def _ground(size: int, camera: SceneCamera) -> _Ground:
    """The ground plane up to the backdrop at `FAR`, seen by `camera`."""
    v = np.arange(size)[:, None] + 0.5 + np.zeros((1, size))
    ground_t = camera.ground_depth(v)
    ground = ground_t < FAR
    depth = np.where(ground, ground_t, FAR)
    normals = np.zeros((3, size, size))
    normals[:, ground] = camera.ground_normal()[:, None]
    normals[2, ~ground] = 1.0
    # A checker on the ground (half-metre squares in ground coordinates) for depth cues.
    points = camera.rays(size) * depth[None]
    forward = np.array([0.0, math.sin(camera.pitch), -math.cos(camera.pitch)])
    gx, gz = points[0], np.tensordot(forward, points, axes=1)
    checker = (np.floor(gx / 0.5) + np.floor(gz / 0.5)) % 2
    fog = np.clip((depth - 2.0) / (FAR - 2.0), 0.0, 1.0) ** 1.5 * 0.6
    return _Ground(depth, normals, ground, checker, fog, v)


def _background(
    rng: np.random.Generator, geometry: _Ground, camera: SceneCamera
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground and backdrop in random colours: colour (H, W, 3), depth (H, W), normals."""
    size = geometry.depth.shape[0]
    sky = rng.uniform(0.55, 0.9, 3)
    backdrop = sky[None, None, :] * (1.0 - 0.25 * geometry.rows / size)[..., None]
    ground_colour = rng.uniform(0.25, 0.6, 3)
    shade = 0.35 + 0.65 * max(float(camera.ground_normal() @ LIGHT), 0.0)
    earth = ground_colour[None, None, :] * shade * (0.93 + 0.14 * geometry.checker)[..., None]
    fog = geometry.fog[..., None]
    colour = np.where(geometry.ground[..., None], (1 - fog) * earth + fog * backdrop, backdrop)
    return colour, geometry.depth, geometry.normals


def _render(
    shapes: list[_Shape],
    background: tuple[np.ndarray, np.ndarray, np.ndarray],
    size: int,
) -> _Render:
    """Depth-buffer the shapes over the background."""
    colour, depth, normals = (a.copy() for a in background)
    instance = np.zeros((size, size), dtype=np.int64)
    v, u = np.mgrid[0:size, 0:size] + 0.5
    masks = []
    for k, shape in enumerate(shapes):
        mask, shape_depth, shape_normals = shape.surface(u, v)
        masks.append(mask)
        nearer = shape_depth < depth
        depth = np.where(nearer, shape_depth, depth)
        normals = np.where(nearer[None], shape_normals, normals)
        instance[nearer] = k + 1
        light = 0.35 + 0.65 * np.clip(np.tensordot(LIGHT, shape_normals, axes=1), 0.0, None)
        shaded = np.asarray(shape.colour)[None, None, :] * light[..., None]
        colour = np.where(nearer[..., None], shaded, colour)
    return _Render(colour, instance, depth, normals, masks)


def _scene(
    rng: np.random.Generator, geometry: _Ground, max_objects: int, camera: SceneCamera
) -> tuple[_Render, list[_Shape]]:
    """Draw one scene; objects hidden (almost) entirely by nearer ones are taken out, one at a
    time, so that every object drawn can be seen."""
    size = geometry.depth.shape[0]
    background = _background(rng, geometry, camera)
    count = int(rng.integers(0, max_objects + 1))
    shapes = [_random_shape(rng, size, camera) for _ in range(count)]
    while True:
        render = _render(shapes, background, size)
        worst, worst_fraction = -1, math.inf
        for k, mask in enumerate(render.masks):
            seen = int((render.instance == k + 1).sum())
            fraction = seen / max(int(mask.sum()), 1)
            if (seen < MIN_VISIBLE_PIXELS or fraction < MIN_VISIBLE_FRACTION) and (
                fraction < worst_fraction
            ):
                worst, worst_fraction = k, fraction
        if worst < 0:
            return render, shapes
        shapes.pop(worst)


def _keypoints(shape: _Shape, k: int, render: _Render, size: int) -> list[list[float]]:
    """[x, y, v] of the shape's keypoints: v from the shape's own pixel nearest each keypoint
    (2: that pixel shows the shape, 1: a nearer object covers it, 0: outside the image)."""
    rows, cols = np.nonzero(render.masks[k])
    out: list[list[float]] = []
    for x, y in shape.keypoints():
        if not (0 <= x < size and 0 <= y < size):
            out.append([0, 0, 0])
            continue
        nearest = int(np.argmin((cols + 0.5 - x) ** 2 + (rows + 0.5 - y) ** 2))
        shown = render.instance[rows[nearest], cols[nearest]] == k + 1
        out.append([round(x, 2), round(y, 2), 2 if shown else 1])
    return out


def _objects(shapes: list[_Shape], render: _Render) -> list[dict[str, object]]:
    """Boxes [x1, y1, x2, y2] (pixel edges) around each object's visible pixels, with labels."""
    out: list[dict[str, object]] = []
    for k, shape in enumerate(shapes):
        rows, cols = np.nonzero(render.instance == k + 1)
        box = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
        out.append({"box": box, "label": SCENE_CLASSES[shape.kind]})
    return out


def make_scenes(
    root: str | Path, n: int = 2000, size: int = 64, seed: int = 0, max_objects: int = 3
) -> Path:
    """Write `n` scenes of size × size pixels under `root`: `manifest.csv` with the columns of
    `SCENE_COLUMNS` and the folders images/, segmentation/ (PNG), depth/, normals/ (.npy),
    objects/, keypoints/ (JSON). Returns the manifest's path."""
    check_count("n", n, 1)
    check_count("size", size, 16)
    check_count("max_objects", max_objects, 0)
    folders = ("images", "segmentation", "depth", "normals", "objects", "keypoints")
    out = prepare_folder(root, folders)
    camera = scene_camera(size)
    geometry = _ground(size, camera)
    width = stem_width(n)
    rows: list[list[str | int | float | None]] = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        render, shapes = _scene(rng, geometry, max_objects, camera)
        image = render.image + rng.normal(0.0, NOISE, render.image.shape)
        kinds = np.array([0, *(s.kind for s in shapes)], dtype=np.uint8)
        objects = _objects(shapes, render)
        keypoints = [{"keypoints": _keypoints(s, k, render, size)} for k, s in enumerate(shapes)]
        stem = f"{i:0{width}d}"
        paths = {
            "image": f"images/{stem}.png",
            "segmentation": f"segmentation/{stem}.png",
            "depth": f"depth/{stem}.npy",
            "normals": f"normals/{stem}.npy",
            "objects": f"objects/{stem}.json",
            "keypoints": f"keypoints/{stem}.json",
        }
        save_png(to_uint8(image), out / paths["image"])
        save_png(kinds[render.instance], out / paths["segmentation"])
        np.save(out / paths["depth"], render.depth.astype(np.float32))
        np.save(out / paths["normals"], render.normals.astype(np.float32))
        (out / paths["objects"]).write_text(json.dumps(objects))
        (out / paths["keypoints"]).write_text(json.dumps(keypoints))
        has_circle = int(any(s.kind == 1 for s in shapes))
        rows.append([*paths.values(), len(shapes), has_circle])
    manifest = out / "manifest.csv"
    write_csv(manifest, SCENE_COLUMNS, rows)
    return manifest
