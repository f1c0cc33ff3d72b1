"""Image data from config: train, compare and predict on a manifest of tiny PNGs, a saved
image model reproducing the trainer's outputs, and bad image input refused with its file and
row (exit code 2, nothing written)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from polytask.app import FittedModel, RunConfig, fit, load_prepared, write_predictions
from polytask.cli._config_io import load_config
from polytask.cli._main import main
from polytask.data import DataError
from polytask.train._checkpoint import load_checkpoint
from tests.data.image_kinds import image_kinds, write_png  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("image_kinds")  # the test kind mask

CONFIG = {
    "data": {
        "images": {"manifest": "data/manifest.csv", "size": [8, 8], "augment": {"hflip": 0.5}},
        "split": {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 0},
    },
    "tasks": [
        {"name": "bright", "kind": "binary"},
        {"name": "age", "kind": "regression"},
        {"name": "mask", "kind": "mask"},
    ],
    "model": {"encoder": "cnn", "encoder_params": {"channels": [4]}},
    "training": {"epochs": 3, "batch_size": 8, "lr": 0.03, "progress": False},
    "output_dir": "run",
}


def _images(folder: Path, n: int, seed: int, labelled: bool = True) -> pd.DataFrame:
    """`n` 8×8 RGB images, bright (about 200) or dark (about 30) with noise; each has a mask
    of its left half and an age that grows with its brightness."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        bright = i % 2
        pixels = rng.integers(0, 50, (8, 8, 3)) + (170 if bright else 10)
        row = {"image": "img/" + write_png(folder / "img" / f"{seed}-{i}.png", pixels)}
        if labelled:
            mask = np.zeros((8, 8), dtype=np.uint8)
            mask[:, :4] = 1
            row |= {
                "bright": bright,
                "age": 30 + 20 * bright + float(rng.normal()),
                "mask": "masks/" + write_png(folder / "masks" / f"{seed}-{i}.png", mask),
            }
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def project(tmp_path):
    data = tmp_path / "data"
    _images(data, 32, 0).to_csv(data / "manifest.csv", index=False)
    _images(data, 6, 1, labelled=False).to_csv(data / "new.csv", index=False)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return tmp_path


def _config(project: Path, **changes) -> Path:
    config = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        node = config
        *path, last = dotted.split(".")
        for key in path:
            node = node[key]
        node[last] = value
    path = project / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_then_predict_from_the_saved_model_reproduces_the_trainer(project, capsys):
    config = load_config(project / "config.yaml")
    data = load_prepared(config)
    assert (len(data.train), len(data.val), len(data.test)) == (16, 8, 8)
    fitted = fit(config, data)
    path = fitted.save(project / "model.pt")
    encoding = data.preprocessor
    # the new images as the trainer takes them, decoded here by hand: 8×8, so no resizing
    new = pd.read_csv(project / "data" / "new.csv")
    pixels = [np.asarray(Image.open(project / "data" / p), dtype=np.float32) for p in new.image]
    x = torch.tensor(np.stack(pixels)).permute(0, 3, 1, 2) / 255
    mean, std = torch.tensor(encoding.mean), torch.tensor(encoding.std)
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert fitted.trainer is not None
    expected = fitted.trainer.predict(x)

    loaded = FittedModel.load(path)
    predicted = loaded.predict(new, root=project / "data")
    assert np.allclose(predicted["bright_prob"], expected["bright"].numpy(), atol=1e-6)
    age_mean, age_std = encoding.target_fit(data.tasks[1]).scale
    assert age_std > 1  # ages were standardised: the loss is on z-scores
    assert np.allclose(predicted["age"], expected["age"].numpy() * age_std + age_mean, atol=1e-4)
    for cell, classes in zip(predicted["mask"], expected["mask"], strict=True):
        assert np.array_equal(cell, classes.numpy())  # the trainer predicts the argmax

    out = project / "predictions.csv"
    assert (
        main(["-q", "predict", str(path), str(project / "data" / "new.csv"), "-o", str(out)]) == 0
    )
    written = pd.read_csv(out)
    assert np.allclose(written["bright_prob"], predicted["bright_prob"], atol=1e-6)
    assert list(written["mask"]) == [f"predictions_files/mask/{i}.png" for i in range(6)]
    for i, cell in enumerate(written["mask"]):
        png = np.asarray(Image.open(project / cell))
        assert np.array_equal(png, predicted["mask"][i])
    # a manifest elsewhere whose paths are relative to the images' folder: --root
    (project / "elsewhere").mkdir()
    new.to_csv(project / "elsewhere" / "new.csv", index=False)
    moved = ["-q", "predict", str(path), str(project / "elsewhere" / "new.csv"), "-o", str(out)]
    assert main(moved) == 2  # relative to its own folder: not found
    assert main([*moved, "--root", str(project / "data")]) == 0
    assert np.allclose(pd.read_csv(out)["bright_prob"], predicted["bright_prob"], atol=1e-6)
    assert main([*moved, "--root", str(project / "nope")]) == 2
    assert "--root" in capsys.readouterr().err
    # a folder of images, no manifest: every image in it, in file order
    import shutil

    (project / "folder" / "sub").mkdir(parents=True)
    for i, name in enumerate(new.image):
        shutil.copy(project / "data" / name, project / "folder" / "sub" / f"{i:02d}.png")
    assert main(["-q", "predict", str(path), str(project / "folder"), "-o", str(out)]) == 0
    by_folder = pd.read_csv(out)
    assert list(by_folder["image"]) == [f"sub/{i:02d}.png" for i in range(len(new))]  # default
    assert by_folder.columns[0] == "image"
    assert np.allclose(by_folder["bright_prob"], predicted["bright_prob"], atol=1e-6)


def test_segmentation_and_keypoints_train_and_predict_to_files(project, capsys):
    manifest = project / "data" / "manifest.csv"
    frame = pd.read_csv(manifest)
    frame["points"] = '[{"keypoints": [[1, 1, 2], [6, 6, 2]]}]'
    frame.loc[3, "points"] = None  # an image not labelled for keypoints
    frame.to_csv(manifest, index=False)
    tasks = [
        {"name": "bright", "kind": "binary"},
        {"name": "organs", "kind": "segmentation", "target": "mask", "num_classes": 2},
        {"name": "points", "kind": "keypoints", "kind_params": {"num_keypoints": 2}},
    ]
    config = _config(project, tasks=tasks, **{"training.epochs": 1})
    assert main(["-q", "train", str(config), "--no-report"]) == 0, capsys.readouterr().err
    metrics = json.loads((project / "run" / "test_metrics.json").read_text())
    assert {"miou", "pixel_accuracy"} <= set(metrics["organs"]) and "pck" in metrics["points"]
    out = project / "p.csv"
    model, new = str(project / "run" / "model.pt"), str(project / "data" / "new.csv")
    assert main(["-q", "predict", model, new, "-o", str(out)]) == 0
    written = pd.read_csv(out)
    assert list(written.columns) == ["bright", "bright_prob", "organs", "points"]
    for i, cell in enumerate(written["organs"]):
        assert cell == f"p_files/organs/{i}.png"
        classes = np.asarray(Image.open(project / cell))
        assert classes.shape == (8, 8) and set(np.unique(classes)) <= {0, 1}
    points = json.loads((project / "p_files" / "points.json").read_text())
    assert list(points) == [str(i) for i in range(6)]
    assert list(written["points"]) == [f"p_files/points.json#/{i}" for i in range(6)]


def test_train_and_compare_from_the_command_line(project, capsys):
    config = str(project / "config.yaml")
    assert main(["-q", "train", config, "--no-report"]) == 0, capsys.readouterr().err
    metrics = json.loads((project / "run" / "test_metrics.json").read_text())
    assert set(metrics) == {"bright", "age", "mask"}
    _, meta = load_checkpoint(project / "run" / "model.pt")
    assert meta["preprocessor"]["kind"] == "images"
    assert meta["preprocessor"]["size"] == [8, 8]
    out = project / "cmp"
    assert main(["-q", "compare", config, "--seeds", "1", "--out", str(out), "--no-report"]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["seeds"] == [0]
    # one MTL model and one single-task model per task, each scored on its primary metric
    assert set(result["mtl_per_seed"][0]) == set(result["stl_per_seed"][0])
    assert {key.split("/")[0] for key in result["stl_per_seed"][0]} == {"bright", "age", "mask"}


def test_a_missing_image_stops_training_before_it_starts(project, capsys):
    (project / "data" / "img" / "0-5.png").unlink()
    assert main(["-q", "train", str(project / "config.yaml")]) == 2
    err = capsys.readouterr().err
    manifest = project / "data" / "manifest.csv"
    assert f"{manifest}, row 5 (image img/0-5.png): image file not found" in err
    assert not (project / "run").exists()  # nothing written, not even the folder


def test_predict_on_bad_images_names_file_and_row_and_writes_nothing(project, capsys):
    config = str(project / "config.yaml")
    assert main(["-q", "train", config, "--no-report"]) == 0
    model = str(project / "run" / "model.pt")
    new = project / "data" / "new.csv"
    out = project / "p.csv"
    (project / "data" / "img" / "1-3.png").write_bytes(b"not a png")
    assert main(["-q", "predict", model, str(new), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{new}, row 3 (image img/1-3.png): cannot read the image" in err
    (project / "data" / "img" / "1-4.png").unlink()
    assert main(["-q", "predict", model, str(new), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{new}, row 3 (image img/1-3.png): cannot read the image" in err  # every bad file
    assert "(1 more row with no image or a bad one: row 4 (img/1-4.png))" in err
    (project / "data" / "img" / "1-3.png").unlink()
    assert main(["-q", "predict", model, str(new), "-o", str(out)]) == 2
    assert f"{new}, row 3 (image img/1-3.png): image file not found (" in capsys.readouterr().err
    assert not out.exists() and not (project / "p_files").exists()
    assert not list(project.glob(".p*"))


def test_bad_images_in_every_part_are_named_together_before_training(project, capsys):
    config = load_config(project / "config.yaml")
    split = load_prepared(config).split
    assert split is not None
    rows = [int(split.train[0]), int(split.test[0]), int(split.test[1])]
    for row in rows:
        (project / "data" / "img" / f"0-{row}.png").write_bytes(b"not a png")
    assert main(["-q", "train", str(project / "config.yaml"), "--no-report"]) == 2
    err = capsys.readouterr().err
    first, *others = sorted(rows)
    assert f"row {first} (image img/0-{first}.png): cannot read the image" in err
    listed = ", ".join(f"row {r} (img/0-{r}.png)" for r in others)
    assert f"(2 more rows with no image or a bad one: {listed})" in err  # test rows too
    assert not (project / "run").exists()


def test_predicted_masks_need_an_output_file(project, capsys):
    assert main(["-q", "train", str(project / "config.yaml"), "--no-report"]) == 0
    model = str(project / "run" / "model.pt")
    assert main(["-q", "predict", model, str(project / "data" / "new.csv")]) == 2
    assert "mask are a map or a list per image" in capsys.readouterr().err
    args = ["-q", "predict", model, str(project / "data" / "new.csv"), "--tasks", "bright,age"]
    assert main(args) == 0  # image-level tasks alone go to stdout
    assert capsys.readouterr().out.splitlines()[0] == "bright,bright_prob,age"


def test_folders_and_split_column_forms(project, tmp_path):
    folders = tmp_path / "classes"
    for i in range(12):
        name = ("cat", "dog", "owl")[i % 3]
        write_png(folders / name / f"{i}.png", np.full((4, 4), 20 * i, dtype=np.uint8))
    config = RunConfig(
        data={
            "images": {"folders": str(folders), "size": [4, 4], "channels": 1},
            "split": {"val_fraction": 0.25, "test_fraction": 0.25},
        },
        tasks=[{"name": "label", "kind": "multiclass"}],
    )
    data = load_prepared(config)
    assert data.tasks[0].num_classes == 3
    assert data.preprocessor.input_shape == (1, 4, 4)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 3, 3)

    frame = pd.read_csv(project / "data" / "manifest.csv")
    frame["part"] = ["train"] * 20 + ["Val"] * 4 + ["test"] * 8
    frame.to_csv(project / "data" / "manifest.csv", index=False)
    path = _config(project, **{"data.images.split_column": "part"})
    with pytest.raises(ValueError, match="names every row's part"):  # data.split is unused
        load_config(path)
    written = yaml.safe_load(path.read_text())
    del written["data"]["split"]
    path.write_text(yaml.safe_dump(written))
    split = load_config(path)
    data = load_prepared(split)
    assert (len(data.train), len(data.val), len(data.test)) == (20, 4, 8)
    frame.loc[3, "part"] = "holdout"
    frame.to_csv(project / "data" / "manifest.csv", index=False)
    with pytest.raises(DataError, match=r"split column 'part' holds 'holdout' in row 3; write"):
        load_prepared(split)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data.path": "x.csv"}, "give exactly one of path (a CSV file), builtin"),
        ({"data.images.folders": "x"}, "images: give exactly one of manifest"),
        ({"data.images.mean": [0.5]}, "images.mean must give one value per channel (3)"),
        ({"data.features": {"numeric": ["a"]}}, "images need no features"),
        ({"data.images.augment": {"hflip": 2}}, "augment.hflip is a probability in [0, 1]"),
        ({"data.images.augment": {"crop_scale": [0.9, 0.5]}}, "0 < low <= high <= 1"),
        ({"data.images.augment": {"flip": 0.5}}, "flip"),
    ],
)
def test_bad_image_configs_are_refused(project, capsys, changes, message):
    assert main(["-q", "train", str(_config(project, **changes))]) == 2
    assert message in capsys.readouterr().err


def test_relative_image_paths_are_taken_from_the_config_folder(project):
    config = load_config(_config(project, **{"data.images.root": "data"}))
    images = config.data.images
    assert images.manifest == str(project / "data" / "manifest.csv")
    assert images.root == str(project / "data")


def test_write_predictions_puts_maps_and_lists_in_files_all_or_nothing(tmp_path, monkeypatch):
    frame = pd.DataFrame(
        {
            "id": [7, 8],
            "mask": [np.array([[0, 1], [2, 3]], dtype=np.uint8), np.zeros((2, 2), np.uint8)],
            "depth": [np.full((2, 2), 0.5), np.full((2, 2), 1.5)],
            "boxes": [[{"box": [0, 0, 1, 1], "score": 0.9}], []],
        }
    )
    out = tmp_path / "p.csv"
    write_predictions(frame, out)
    written = pd.read_csv(out)
    assert list(written["mask"]) == ["p_files/mask/0.png", "p_files/mask/1.png"]
    assert list(written["depth"]) == ["p_files/depth/0.npy", "p_files/depth/1.npy"]
    assert list(written["boxes"]) == ["p_files/boxes.json#/0", "p_files/boxes.json#/1"]
    assert np.asarray(Image.open(tmp_path / "p_files/mask/0.png")).tolist() == [[0, 1], [2, 3]]
    assert np.load(tmp_path / "p_files/depth/1.npy").tolist() == [[1.5, 1.5], [1.5, 1.5]]
    boxes = json.loads((tmp_path / "p_files/boxes.json").read_text())
    assert boxes == {"0": [{"box": [0, 0, 1, 1], "score": 0.9}], "1": []}
    deeper = tmp_path.parent / f"{tmp_path.name}_new" / "dir" / "p.csv"  # a folder not made yet
    write_predictions(frame, deeper)  # made, as for a table's CSV
    assert pd.read_csv(deeper)["mask"].tolist() == ["p_files/mask/0.png", "p_files/mask/1.png"]

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("polytask.app._outputs.os.replace", fail)
    with pytest.raises(OSError, match="No space left"):
        write_predictions(frame.assign(id=[1, 2]), out)
    assert pd.read_csv(out)["id"].tolist() == [7, 8]  # the earlier output, as it was
    assert np.load(tmp_path / "p_files/depth/1.npy").tolist() == [[1.5, 1.5], [1.5, 1.5]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p_files"]
