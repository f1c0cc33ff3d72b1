"""The keypoints task kind: target placement, CenterNet loss, decoding, PCK / OKS AP,
augmentations, reading targets, and a short fit on synthetic "T" shapes."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from polytask import Task, TaskData, TrainConfig, Trainer
from polytask.models import InputShape
from polytask.models._base import MultiTaskNet
from polytask.models._hard_sharing import build_hard_sharing
from polytask.models.encoders import Features
from polytask.tasks._columns import DataError
from polytask.tasks._kinds._base import Geometry
from polytask.tasks._kinds._keypoints import (
    KeypointAccumulator,
    gaussian_heatmap,
    place_instances,
)


def pose(**params) -> Task:
    kind_params = {"num_keypoints": 3, **params}
    return Task("pose", "keypoints", kind_params=kind_params)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# one instance: centre = mean of (10, 6), (14, 10), (18, 14) = (14, 10): at stride 4, cell
# (row 2, col 3), whose anchor ((3 + .5) * 4, (2 + .5) * 4) = (14, 10)
INSTANCE = [[10.0, 6.0, 2.0], [14.0, 10.0, 1.0], [18.0, 14.0, 2.0]]


def test_an_instance_is_placed_on_its_centre_cell_with_offsets_in_cells():
    other = [[30.0, 2.0, 2.0], [99.0, 99.0, 0.0], [26.0, 6.0, 1.0]]  # v = 0 does not count
    padding = [[0.0, 0.0, -1.0]] * 3
    target = torch.tensor([[INSTANCE, other], [padding, padding]])
    inst = place_instances(target, stride=4, height=8, width=8)
    assert inst.image.tolist() == [0, 0]
    # other's centre (28, 4): col 7, row 1, anchor (30, 6)
    assert inst.row.tolist() == [2, 1] and inst.col.tolist() == [3, 7]
    expected = [[[-1, -1], [0, 0], [1, 1]], [[0, -1], [0, 0], [-1, 0]]]
    assert inst.offsets.tolist() == expected
    assert inst.labelled.tolist() == [[True] * 3, [True, False, True]]
    assert inst.visible.tolist() == [[1, 0, 1], [1, 0, 0]]

    heat = gaussian_heatmap(inst, 2, 8, 8, radius=2)  # sigma (2 * 2 + 1) / 6 = 5 / 6
    assert heat[0, 2, 3] == 1 and heat[0, 1, 7] == 1
    assert heat[0, 2, 4].item() == pytest.approx(math.exp(-1 / (2 * (5 / 6) ** 2)))
    assert heat[0, 4, 5].item() == pytest.approx(math.exp(-8 / (2 * (5 / 6) ** 2)))
    assert heat[0, 2, 0] == 0 and heat[0, 5, 3] == 0  # 3 cells away: beyond the radius
    assert heat[1].abs().sum() == 0  # no instance


def test_the_offset_and_visibility_terms_match_a_hand_computation():
    kp = [[[2.0, 2.0, 2.0], [6.0, 3.0, 1.0]], [[9.0, 9.0, 0.0], [13.0, 13.0, 2.0]]]
    # instance 0: centre (4, 2.5) → cell (0, 1), anchor (6, 2): offsets (-1, 0), (0, 0.25)
    # instance 1: only (13, 13) labelled → cell (3, 3), anchor (14, 14): offset (-0.25, -0.25)
    target = torch.tensor([kp])
    out = torch.zeros(1, 7, 4, 4)
    out[0, 1:5, 0, 1] = torch.tensor([0.0, 0.5, 1.0, 0.0])  # predicted offsets, instance 0
    out[0, 5:, 0, 1] = torch.tensor([0.0, 2.0])  # visibility logits
    out[0, 1:5, 3, 3] = torch.tensor([5.0, 5.0, 0.0, 0.5])
    out[0, 5:, 3, 3] = torch.tensor([7.0, -1.0])

    def loss(offset: float, visibility: float) -> float:
        weights = {"offset_weight": offset, "visibility_weight": visibility}
        task = Task("pose", "keypoints", kind_params={"num_keypoints": 2}, loss_params=weights)
        return task.compute_loss(out, target).item()

    # L1 per instance: mean over its labelled points of |dx| + |dy|; / 2 instances
    l1_0 = ((1 + 0.5) + (1 + 0.25)) / 2
    l1_1 = 0.25 + 0.75
    assert loss(1, 0) - loss(0, 0) == pytest.approx((l1_0 + l1_1) / 2, abs=1e-5)
    # BCE: instance 0 visible (logit 0) and occluded (logit 2); instance 1 visible (logit -1)
    bce_0 = (math.log(2) + math.log(1 + math.exp(2))) / 2
    bce_1 = math.log(1 + math.exp(1))
    assert loss(0, 1) - loss(0, 0) == pytest.approx((bce_0 + bce_1) / 2, abs=1e-5)


def test_the_focal_term_matches_a_hand_computation_on_a_2x2_heatmap():
    target = torch.tensor([[[[2.0, 2.0, 2.0]]]])  # centre in cell (0, 0)
    logits = [[0.5, -1.0], [-2.0, 0.0]]
    out = torch.zeros(1, 4, 2, 2)
    out[0, 0] = torch.tensor(logits)
    task = Task("pose", "keypoints", kind_params={"num_keypoints": 1, "radius": 1},
                loss_params={"offset_weight": 0, "visibility_weight": 0})  # fmt: skip
    # radius 1: sigma 1/2, so y = exp(-d² / (2 · 1/4)) = exp(-2 d²)
    y = [[1.0, math.exp(-2)], [math.exp(-2), math.exp(-4)]]
    p = sigmoid(0.5)
    expected = -((1 - p) ** 2) * math.log(p)
    for r, c in ((0, 1), (1, 0), (1, 1)):
        q = sigmoid(logits[r][c])
        expected -= q**2 * (1 - y[r][c]) ** 4 * math.log(1 - q)
    assert task.compute_loss(out, target).item() == pytest.approx(expected, rel=1e-5)


def test_unlabelled_images_are_masked_and_empty_images_give_only_the_negative_term():
    task = pose()
    torch.manual_seed(0)
    out = torch.randn(3, 10, 4, 4)
    labelled = torch.tensor([INSTANCE])
    nan = torch.full((1, 3, 3), float("nan"))
    empty = torch.tensor([[[0.0, 0.0, -1.0]] * 3])
    alone = task.compute_loss(out[:1], labelled[None])
    with_unlabelled = task.compute_loss(out[:2], torch.stack([labelled, nan]))
    assert with_unlabelled.item() == pytest.approx(alone.item(), rel=1e-6)
    assert task.mask(torch.stack([labelled, nan, empty])).tolist() == [True, False, True]

    p = torch.sigmoid(out[2, 0])
    negative = -(p**2 * torch.log(1 - p)).sum()
    assert task.compute_loss(out[2:], empty[None]).item() == pytest.approx(negative.item())
    assert task.kind_spec.label_count(torch.stack([labelled, nan, empty])) == 1
    assert task.kind_spec.label_count(nan[None]) == 0
    assert task.kind_spec.label_count(empty[None]) == 0  # labelled: its denominator is 1
    assert float(task.kind_spec.loss_denominator(torch.tensor(0.0), torch.tensor(True))) == 1
    no_instance = task.kind_spec.degenerate(task, empty[None], None)
    assert no_instance == "no labelled instance, so its metrics are undefined"
    assert "no labelled rows" in task.kind_spec.degenerate(task, nan[None], None)


def test_decoding_a_hand_made_output_recovers_the_instances():
    task = pose(score_threshold=0.3)
    out = torch.full((1, 10, 8, 8), -8.0)
    out[0, 0, 2, 3] = 2.0  # instance of INSTANCE, score σ(2)
    out[0, 1:7, 2, 3] = torch.tensor([-1.0, -1.0, 0.0, 0.0, 1.0, 1.0])
    out[0, 7:, 2, 3] = torch.tensor([3.0, -3.0, 0.0])
    out[0, 0, 6, 6] = 1.0  # a second one at anchor (26, 26), score σ(1)
    out[0, 1:7, 6, 6] = torch.tensor([0.25, -0.5, 0.0, 0.0, -0.75, 1.5])
    out[0, 0, 6, 5] = 0.5  # beside a higher peak: not a local maximum
    out[0, 0, 0, 7] = -1.0  # a peak scored σ(-1) = 0.27 < 0.3: dropped
    found = task.predict(out)
    assert found.shape == (1, 20, 4, 3)
    first, second = found[0, 0], found[0, 1]
    assert first[0].tolist() == pytest.approx([14.0, 10.0, sigmoid(2)])
    assert first[1:, :2].tolist() == [row[:2] for row in INSTANCE]
    assert first[1:, 2].tolist() == pytest.approx([sigmoid(3), sigmoid(-3), 0.5])
    assert second[0].tolist() == pytest.approx([26.0, 26.0, sigmoid(1)])
    assert second[1:, :2].tolist() == [[27.0, 24.0], [26.0, 26.0], [23.0, 32.0]]
    assert found[0, 2:].abs().sum() == 0

    (images,) = task.kind_spec.decode(task, found.numpy(), None).values()
    assert len(images[0]) == 2
    assert images[0][0]["keypoints"][0] == pytest.approx([10.0, 6.0, sigmoid(3)])
    assert images[0][1]["score"] == pytest.approx(sigmoid(1))


def _found(*instances: tuple[float, list[list[float]]]) -> torch.Tensor:
    """Decoded predictions of one image (1, k, 1 + K, 3) from (score, keypoints [x, y]) pairs:
    the centre is the keypoints' mean."""
    rows = []
    for score, points in instances:
        centre = np.mean(points, axis=0).tolist()
        rows.append([[*centre, score]] + [[x, y, 1.0] for x, y in points])
    return torch.tensor([rows])


def test_pck_by_hand_on_two_instances():
    a = [[10.0, 10.0, 2.0], [20.0, 10.0, 2.0], [10.0, 30.0, 1.0]]  # extent 10 × 20: within 2
    b = [[50.0, 50.0, 2.0], [60.0, 50.0, 2.0], [50.0, 50.0, 0.0]]  # extent 10 × 1: within 1
    target = torch.tensor([[a, b]])
    found = _found(
        (0.9, [[50.5, 50.0], [62.0, 50.0], [50.0, 50.0]]),  # b: 0.5 ✓, 2 ✗ (third not labelled)
        (0.8, [[11.0, 10.0], [20.0, 13.0], [10.0, 31.5]]),  # a: 1 ✓, 3 ✗, 1.5 ✓
        (0.7, [[90.0, 90.0], [95.0, 90.0], [90.0, 95.0]]),  # far from both: unmatched
    )
    acc = KeypointAccumulator(pose().kind_spec.bound)
    acc.update_found(found, target)
    assert acc.compute()["pck"] == pytest.approx(3 / 5)


def test_oks_ap_is_one_for_perfect_predictions_and_less_when_perturbed():
    a = [[10.0, 10.0, 2.0], [30.0, 12.0, 2.0], [20.0, 40.0, 1.0]]
    b = [[60.0, 60.0, 2.0], [80.0, 61.0, 0.0], [70.0, 90.0, 2.0]]
    target = torch.tensor([[a, b]])
    settings = pose().kind_spec.bound

    def ap(shift: float) -> float:
        acc = KeypointAccumulator(settings)
        points_b = [[x + shift, y] for x, y, _ in b]
        acc.update_found(_found((0.9, [p[:2] for p in a]), (0.8, points_b)), target)
        return acc.compute()["oks_ap"]

    assert ap(0.0) == pytest.approx(1.0)
    assert ap(3.0) < 1.0
    task = pose()  # the same through Task.evaluate, an unlabelled image left out
    perfect = _found((0.9, [p[:2] for p in a]), (0.8, [p[:2] for p in b]))
    nan = torch.full_like(target, float("nan"))
    scores = task.evaluate(torch.cat([perfect, perfect]).numpy(), torch.cat([target, nan]).numpy())
    assert scores == pytest.approx({"oks_ap": 1.0, "pck": 1.0})
    empty = KeypointAccumulator(settings)
    empty.update_found(torch.zeros(1, 20, 4, 3), target)
    assert empty.compute() == {"oks_ap": 0.0, "pck": 0.0}
    none = KeypointAccumulator(settings)
    none.update_found(_found((0.9, [p[:2] for p in a])), torch.tensor([[[[0.0, 0, -1]] * 3]]))
    assert all(math.isnan(v) and "no labelled instance" in repr(v)
               for v in none.compute().values())  # fmt: skip


def test_metrics_accumulated_over_two_batches_equal_those_of_one():
    task = pose()
    torch.manual_seed(3)
    out = torch.randn(4, 10, 8, 8)
    out[:, 0] -= 1.0
    target = torch.tensor(
        [
            [INSTANCE, [[20.0, 20.0, 2.0], [24.0, 22.0, 2.0], [22.0, 28.0, 1.0]]],
            [INSTANCE, [[0.0, 0.0, -1.0]] * 3],
            [[[float("nan")] * 3] * 3] * 2,
            [[[5.0, 25.0, 2.0], [9.0, 25.0, 1.0], [7.0, 30.0, 2.0]], [[0.0, 0.0, -1.0]] * 3],
        ]
    )
    one = task.kind_spec.accumulator(task, None)
    one.update(out, target)
    two = task.kind_spec.accumulator(task, None)
    two.update(out[:2], target[:2])
    two.update(out[2:], target[2:])
    whole, parts = one.compute(), two.compute()
    assert set(whole) == {"oks_ap", "pck"}
    assert parts == pytest.approx(whole)
    assert 0 <= whole["oks_ap"] <= 1


def test_a_head_output_of_the_wrong_shape_is_refused_naming_both():
    task = pose()
    target = torch.tensor([[INSTANCE], [INSTANCE]])
    shapes = r"'pose'.*\(2, 9, 8, 8\).*\(2, 1, 3, 3\).*\(N, 10, h, w\)"
    with pytest.raises(ValueError, match=shapes):
        task.compute_loss(torch.zeros(2, 9, 8, 8), target)
    with pytest.raises(ValueError, match=r"\(2, 10\)"):
        task.compute_loss(torch.zeros(2, 10), target)


def test_the_head_keeps_the_layout_at_the_task_stride_and_refuses_vectors():
    task = pose()
    head = task.build_head(Features(16, stride=8, spatial=True))
    assert head(torch.zeros(2, 16, 4, 5)).shape == (2, 10, 8, 10)  # resampled to stride 4
    head = pose(stride=8).build_head(Features(16, stride=2, spatial=True))
    assert head(torch.zeros(2, 16, 16, 16)).shape == (2, 10, 4, 4)
    with pytest.raises(ValueError, match=r"feature map.*cnn, resnet_fpn, vit or timm"):
        task.build_head(Features(16))
    model = build_hard_sharing(InputShape((1, 32, 32)), [task], encoder="cnn")  # stride 8
    assert model(torch.zeros(2, 1, 32, 32))["pose"].shape == (2, 10, 8, 8)


def test_a_horizontal_flip_mirrors_x_and_swaps_left_and_right():
    task = pose(flip_pairs=[[0, 2]])  # keypoints: 0 left eye, 1 nose, 2 right eye
    instance = [[10.0, 5.0, 2.0], [13.0, 8.0, 1.0], [16.0, 6.0, 2.0]]
    unlabelled_point = [[10.0, 5.0, 2.0], [7.0, 7.0, 0.0], [16.0, 6.0, 1.0]]
    padding = [[0.0, 0.0, -1.0]] * 3
    target = torch.tensor([instance, unlabelled_point, padding])
    flipped = task.kind_spec.transform_target(task, target, Geometry((20, 40), hflip=True))
    # the new left eye is where the right eye lands when mirrored: 40 - 16 = 24
    assert flipped[0].tolist() == [[24.0, 6.0, 2.0], [27.0, 8.0, 1.0], [30.0, 5.0, 2.0]]
    assert flipped[1, 1].tolist() == [7.0, 7.0, 0.0]  # not labelled: unmoved
    assert flipped[1, 0].tolist() == [24.0, 6.0, 1.0]
    assert flipped[2].tolist() == padding
    nan = torch.full((1, 3, 3), float("nan"))
    assert task.kind_spec.transform_target(task, nan, Geometry((20, 40), hflip=True)).isnan().all()


def test_a_crop_shifts_scales_and_drops_the_points_outside_it():
    task = pose()
    target = torch.tensor([[[10.0, 5.0, 2.0], [30.0, 8.0, 1.0], [25.0, 12.0, 2.0]]])
    geometry = Geometry((20, 40), crop=(4, 20, 10, 20), source_size=(20, 40))  # scaled ×2
    out = task.kind_spec.transform_target(task, target, geometry)
    assert out[0, 0, 2] == 0  # x 10 - 20 < 0: outside
    assert out[0, 1:].tolist() == [[20.0, 8.0, 1.0], [10.0, 16.0, 2.0]]


def test_read_target_reads_files_and_text_and_refuses_bad_cells(tmp_path):
    task = pose(names=["left", "nose", "right"])
    kind = task.kind_spec
    (tmp_path / "a.json").write_text(json.dumps([{"keypoints": INSTANCE}]))
    read = kind.read_target(task, "a.json", tmp_path, None, (8, 8))
    assert read.tolist() == [INSTANCE]
    assert kind.read_target(task, "[]", tmp_path, None, (8, 8)).shape == (0, 3, 3)
    assert kind.read_target(task, "", tmp_path, None, (8, 8)).isnan().all()
    bad = {
        "missing.json": "cannot read keypoints file",
        "[1, 2": "not valid JSON",
        '{"keypoints": []}': "must be a list of instances",
        '[{"points": []}]': 'instance 0 must hold "keypoints": a list of 3',
        json.dumps([{"keypoints": INSTANCE[:2]}]): r"list of 3 \[x, y, v\] triples \(got 2\)",
        json.dumps([{"keypoints": [[1, 2, 3], *INSTANCE[1:]]}]): "keypoint 0 \\('left'\\) has "
        "visibility 3",
        json.dumps([{"keypoints": INSTANCE}, {"keypoints": [[1, 2], *INSTANCE[1:]]}]): "instance "
        "1, keypoint 0",
        json.dumps([{"keypoints": [INSTANCE[0], [-1, 2, 1], INSTANCE[2]]}]): r"instance 0, "
        r"keypoint 1 \('nose'\) at \(-1, 2\) lies outside",
    }
    for cell, message in bad.items():
        with pytest.raises(DataError, match=message):
            kind.read_target(task, cell, tmp_path, None, (8, 8))
    # a point beyond the original image's right edge is refused where its size is known
    with pytest.raises(DataError, match=r"instance 0, keypoint 2 \('right'\) at \(18, 14\) lies "
                       "outside the 16×20 image"):  # fmt: skip
        kind.rescale_target(task, read, (20, 16), (10, 8))
    scaled = kind.rescale_target(task, read, (40, 20), (20, 40))  # x ×2, y ÷2
    assert scaled.tolist() == [[[20.0, 3.0, 2.0], [28.0, 5.0, 1.0], [36.0, 7.0, 2.0]]]


def test_pad_rows_pads_instances_and_keeps_unlabelled_images_apart():
    task = pose()
    kind = task.kind_spec
    two = torch.tensor([INSTANCE, INSTANCE])
    empty = torch.zeros(0, 3, 3)
    missing = kind.missing_target(task, empty)
    batch = kind.pad_rows(task, [two, empty, missing])
    assert batch.shape == (3, 2, 3, 3)
    assert batch[1, :, :, 2].eq(-1).all() and batch[0, 1].tolist() == INSTANCE
    assert task.mask(batch).tolist() == [True, True, False]
    assert kind.pad_rows(task, [empty, missing]).shape == (2, 1, 3, 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "need num_keypoints"),
        ({"num_keypoints": 0}, "num_keypoints must be an integer >= 1"),
        ({"num_keypoints": 3, "flip_pairs": [[0, 3]]}, r"names keypoint 3.*keypoints 0..2"),
        ({"num_keypoints": 3, "flip_pairs": [[0, 1], [1, 2]]}, "keypoint 1 is in two pairs"),
        ({"num_keypoints": 3, "flip_pairs": [[1, 1]]}, "with itself"),
        ({"num_keypoints": 3, "flip_pairs": [[0, 1, 2]]}, "not a pair"),
        ({"num_keypoints": 3, "sigmas": [0.1, 0.1]}, "one number or a list of 3"),
        ({"num_keypoints": 3, "sigmas": [0.1, 0.1, -1]}, "positive"),
        ({"num_keypoints": 2, "names": ["a", "a"]}, "2 distinct strings"),
        ({"num_keypoints": 2, "radius": -1}, "radius must be an integer >= 0"),
        ({"num_keypoints": 2, "stride": 0}, "stride must be an integer >= 1"),
        ({"num_keypoints": 2, "score_threshold": 1.5}, r"score_threshold must be in \[0, 1\)"),
        ({"num_keypoints": 2, "flip_pair": []}, "no parameter.*did you mean 'flip_pairs'"),
    ],
)
def test_kind_params_are_checked_with_clear_errors(params, message):
    with pytest.raises(ValueError, match=message):
        Task("pose", "keypoints", kind_params=params)


class TinyNet(MultiTaskNet):
    """A small conv trunk at stride 4 and the tasks' own heads."""

    def __init__(self, tasks):
        super().__init__()
        self._init_tasks(tasks)
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        features = Features(32, stride=4, spatial=True)
        self.heads = nn.ModuleDict({t.name: t.build_head(features) for t in tasks})

    def forward(self, x):
        z = self.trunk(x)
        return {t.name: t.shape_output(self.heads[t.name](z)) for t in self.tasks}

    def shared_parameters(self):
        return self.trunk.parameters()

    def task_parameters(self, name):
        return self.heads[name].parameters()


def t_shapes(n: int, seed: int, size: int = 32, arm: int = 6) -> TaskData:
    """Images with one bright "T" at a random place; keypoints: its bar's two ends and its
    stem's foot (pixel centres)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    keypoints = torch.zeros(n, 1, 3, 3)
    for i in range(n):
        x0, y0 = (int(v) for v in torch.randint(2, size - 2 * arm - 2, (2,), generator=g))
        x[i, 0, y0, x0 : x0 + 2 * arm + 1] = 1.0
        x[i, 0, y0 : y0 + 2 * arm + 1, x0 + arm] = 1.0
        keypoints[i, 0] = torch.tensor(
            [[x0, y0, 2], [x0 + 2 * arm, y0, 2], [x0 + arm, y0 + 2 * arm, 2]]
        ) + torch.tensor([0.5, 0.5, 0.0])
    return TaskData(x + 0.1 * torch.randn(x.shape, generator=g), {"pose": keypoints})


def test_a_short_fit_finds_the_keypoints_of_t_shapes():
    task = pose(flip_pairs=[[0, 1]])
    train, val = t_shapes(128, 0), t_shapes(64, 1)
    # chance: every image's keypoints guessed at their mean place in the training images
    mean = train.targets["pose"].mean(0)
    guess = torch.cat([torch.cat([mean[:, :, :2].mean(1), torch.ones(1, 1)], 1), mean[0]])
    chance = KeypointAccumulator(task.kind_spec.bound)
    chance.update_found(guess.expand(64, 1, 4, 3), val.targets["pose"])
    torch.manual_seed(0)
    # 48 steps: val pck 0.96-1.0, oks_ap 0.77-0.89 over seeds 0-2 (measured)
    config = TrainConfig(steps=48, batch_size=32, lr=3e-3, progress=False, patience=None,
                         restore_best=False, seed=0)  # fmt: skip
    trainer = Trainer(TinyNet([task]), config=config)
    trainer.fit(train)
    metrics = trainer.evaluate(val)["pose"]
    assert metrics["pck"] > max(0.8, chance.compute()["pck"] + 0.5)
    assert metrics["oks_ap"] > 0.5


def test_a_diverged_models_keypoints_are_undefined_not_scored_zero():
    from polytask import Task

    task = Task("k", "keypoints", kind_params={"num_keypoints": 2})
    acc = task.kind_spec.accumulator(task, None)
    target = torch.tensor([[[[5, 6, 2], [20, 25, 1]]]], dtype=torch.float32)
    acc.update(torch.full((1, 7, 8, 8), float("nan")), target)
    assert {v.reason for v in acc.compute().values()} == {"predictions not finite"}
