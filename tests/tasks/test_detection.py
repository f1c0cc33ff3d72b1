"""The detection kind: NMS against a brute-force reference, the CenterNet loss and its target
encoding against hand computations, decoding, COCO mAP (perfect, half-right, empty images,
accumulated over batches), reading boxes from JSON, augmentations, and a tiny end-to-end fit."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from polytask import Task, TaskData, TrainConfig, Trainer, make_balancer
from polytask.models import InputShape
from polytask.models._base import MultiTaskNet
from polytask.models._hard_sharing import build_hard_sharing
from polytask.models.encoders import Features
from polytask.tasks import KINDS
from polytask.tasks._columns import DataError
from polytask.tasks._kinds._base import Geometry, TargetFit
from polytask.tasks._kinds._boxes import box_iou, gaussian_radius, nms
from polytask.tasks._kinds._detection import (
    HEATMAP_BIAS,
    center_targets,
    centernet_loss,
    decode_detections,
)
from polytask.tasks._metrics import Undefined

KIND = KINDS["detection"]
PAD = [0.0, 0.0, 0.0, 0.0, -1.0]


def spatial(channels, stride):
    """What an encoder giving a feature map of `channels` at `stride` describes."""
    return Features(channels, stride=stride, spatial=True)


def perfect_output(boxes, num_classes, height, width, logit=10.0):
    """A head output (N, C + 4, h, w) that decodes to exactly `boxes` (per image, rows
    [x1, y1, x2, y2, class] or [..., class, logit]): a peak at each centre cell, the boxes'
    size and offset there, −10 logits elsewhere."""
    out = torch.zeros(len(boxes), num_classes + 4, height, width)
    out[:, :num_classes] = -10.0
    for n, rows in enumerate(boxes):
        for row in rows:
            x1, y1, x2, y2 = (v / 4 for v in row[:4])
            c = int(row[4])
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            i, j = int(cy), int(cx)
            out[n, c, i, j] = row[5] if len(row) > 5 else logit
            out[n, num_classes:, i, j] = torch.tensor([x2 - x1, y2 - y1, cx - j, cy - i])
    return out


def padded(boxes, b=None):
    """Per-image box lists → the (N, B, 5) target, padded."""
    return KIND.pad_rows(None, [torch.tensor(r, dtype=torch.float32).reshape(-1, 5) for r in boxes])


def metrics_of(task, batches):
    acc = KIND.accumulator(task, None)
    for output, target in batches:
        acc.update(output, target)
    return acc.compute()


# --- NMS ------------------------------------------------------------------------------------


def brute_force_nms(boxes, scores, iou):
    """Greedy NMS the textbook way: take the best left, drop what overlaps it, repeat."""
    left = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept = []
    while left:
        best = left.pop(0)
        kept.append(best)
        left = [i for i in left if float(box_iou(boxes[best : best + 1], boxes[i : i + 1])) <= iou]
    return kept


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_nms_matches_a_brute_force_reference(seed, iou):
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(60, 2, generator=g) * 16
    boxes = torch.cat([corner, corner + 8 + torch.rand(60, 2, generator=g) * 8], 1)
    scores = torch.rand(60, generator=g)
    kept = nms(boxes, scores, iou).tolist()
    assert kept == brute_force_nms(boxes, scores, iou)
    assert 1 < len(kept) < 60  # the boxes overlap enough for suppression to matter


def test_iou_and_nms_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([50 / 150, 0.0])
    # the second box overlaps the first (IoU 81/119 = 0.68) and goes; the third overlaps only
    # the removed second (IoU 0.68) and stays: greedy NMS, not "any higher-scoring overlap"
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 11, 11], [2.0, 2, 12, 12]])
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    assert nms(boxes[:0], torch.zeros(0), 0.5).tolist() == []


def test_gaussian_radius_by_hand():
    # CornerNet's three roots for a 1×1 box at overlap 0.7: (2 + √(4 − 0.3·4/1.7)) / 2,
    # (4 + √(16 − 4.8)) / 2, (−2.8 + √(7.84 + 3.36)) / 2; the smallest is the third
    r3 = (-2.8 + math.sqrt(7.84 + 3.36)) / 2
    assert float(gaussian_radius(torch.tensor(1.0), torch.tensor(1.0))) == pytest.approx(r3)
    # 4×4: (−11.2 + √(125.44 + 53.76)) / 2
    r = (-11.2 + math.sqrt(125.44 + 53.76)) / 2
    assert float(gaussian_radius(torch.tensor(4.0), torch.tensor(4.0))) == pytest.approx(r)


# --- targets and loss -----------------------------------------------------------------------


def test_target_encoding_of_a_known_box():
    # 32×32 input, 8×8 map: box [10, 6, 30, 22] of class 1 → centre (20, 14) px = (5, 3.5)
    # cells: cell (row 3, column 5), offset (0, 0.5), size (20, 16) px = (5, 4) cells
    target = padded([[[10, 6, 30, 22, 1]], []])
    goal = center_targets(target, 2, 8, 8)
    assert goal.image.tolist() == [0]
    assert (goal.cell_y.tolist(), goal.cell_x.tolist()) == ([3], [5])
    assert goal.size.tolist() == [[5.0, 4.0]]
    assert goal.offset.tolist() == [[0.0, 0.5]]
    assert goal.heatmap[0, 1, 3, 5] == 1.0 and int((goal.heatmap == 1).sum()) == 1
    assert goal.heatmap[0, 0].abs().sum() == 0 and goal.heatmap[1].abs().sum() == 0
    # radius floor(gaussian_radius(4, 5)) = 1, σ = 1/2: e^-2 beside the centre, e^-4 diagonally
    assert goal.heatmap[0, 1, 3, 4] == pytest.approx(math.exp(-2))
    assert goal.heatmap[0, 1, 2, 6] == pytest.approx(math.exp(-4))
    assert goal.heatmap[0, 1, 3, 7] == 0.0  # outside the window


def test_focal_loss_on_a_hand_built_heatmap():
    # one class, 16×16 input → 4×4 map; box [0, 0, 16, 16]: centre cell (2, 2), 4×4 cells,
    # radius 1, σ = 1/2; the heatmap by hand: 1 at the centre, e^-2 at its 4 neighbours, e^-4
    # at its 4 diagonal cells, 0 at the 7 others
    target = padded([[[0, 0, 16, 16, 0]]])
    expected = torch.zeros(4, 4)
    expected[1:4, 1:4] = math.exp(-4)
    expected[1:4, 2] = expected[2, 1:4] = math.exp(-2)
    expected[2, 2] = 1.0
    assert torch.allclose(center_targets(target, 1, 4, 4).heatmap[0, 0], expected)
    # all logits 0 (p = 1/2): the centre costs (1 − p)² · ln 2, another cell p² (1 − Y)⁴ ln 2
    output = torch.zeros(1, 5, 4, 4)
    output[0, 1:3] = 3.0  # predicted size (3, 3) cells against (4, 4): L1 1 per coordinate
    output[0, 3:5] = 0.25  # offsets 0.25 against (0, 0)
    ln2 = math.log(2)
    negatives = 4 * (1 - math.exp(-2)) ** 4 + 4 * (1 - math.exp(-4)) ** 4 + 7
    focal = 0.25 * ln2 + 0.25 * ln2 * negatives
    assert float(centernet_loss(output, target)) == pytest.approx(focal + 0.1 * 1 + 1.0 * 0.25)
    # an image without boxes adds only its negative term (16 cells with Y = 0), still over
    # one object
    both = centernet_loss(output.expand(2, -1, -1, -1), padded([[[0, 0, 16, 16, 0]], []]))
    assert float(both) == pytest.approx(focal + 0.1 + 0.25 + 16 * 0.25 * ln2)
    # a batch without any box: the negative terms over one (no) object, no crash
    assert float(centernet_loss(output, padded([[]]))) == pytest.approx(16 * 0.25 * ln2)
    assert float(centernet_loss(output, torch.zeros(1, 0, 5))) == pytest.approx(16 * 0.25 * ln2)
    # the weights are the loss's parameters
    weighted = centernet_loss(output, target, size_weight=1.0, offset_weight=0.0)
    assert float(weighted) == pytest.approx(focal + 1.0)


def test_task_loss_masks_unlabelled_images_and_counts_labelled_ones():
    task = Task("det", "detection", num_classes=1)
    target = padded([[[0, 0, 16, 16, 0]]])
    unlabelled = KIND.missing_target(task, target[0])
    both = torch.cat([target, unlabelled[None]])
    assert torch.isnan(both[1]).all()
    assert KIND.label_mask(both).tolist() == [True, False]
    # the loss is a sum divided by the boxes (at least 1 where an image is labelled): their
    # count adds up over the parts of a batch, and the denominator follows from the total
    assert KIND.label_count(both) == 1
    assert KIND.label_count(padded([[[0, 0, 4, 4, 0], [4, 4, 8, 8, 0]], [[0, 0, 4, 4, 0]]])) == 3
    assert KIND.label_count(padded([[], []])) == 0 and KIND.label_count(both[1:]) == 0
    yes, no = torch.tensor(True), torch.tensor(False)
    assert float(KIND.loss_denominator(torch.tensor(0.0), yes)) == 1.0
    assert float(KIND.loss_denominator(torch.tensor(0.0), no)) == 0.0
    assert float(KIND.loss_denominator(torch.tensor(3.0), yes)) == 3.0
    output = torch.randn(2, 5, 4, 4)
    expected = centernet_loss(output[:1], target)
    assert float(task.compute_loss(output, both)) == pytest.approx(float(expected))
    assert float(task.compute_loss(output[1:], both[1:])) == 0.0  # nothing labelled


def test_a_head_output_of_the_wrong_shape_is_refused_naming_both_shapes():
    task = Task("boxes", "detection", kind_params={"classes": ["circle", "square"]})
    target = padded([[[0, 0, 8, 8, 1]], []])
    with pytest.raises(ValueError) as err:
        task.compute_loss(torch.zeros(2, 5, 8, 8), target)
    message = str(err.value)
    assert "'boxes'" in message and "(2, 5, 8, 8)" in message and "(2, 1, 5)" in message
    assert "(N, 6, H/4, W/4)" in message
    with pytest.raises(ValueError, match=r"\(2, 6\)"):
        task.compute_loss(torch.zeros(2, 6), target)


# --- the head -------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [2, 4, 8, 16])
def test_head_gives_one_map_at_stride_4_with_the_paper_bias(stride):
    task = Task("det", "detection", num_classes=3, kind_params={"head_channels": 8})
    head = task.build_head(spatial(16, stride))
    out = head(torch.randn(2, 16, 64 // stride, 64 // stride))
    assert out.shape == (2, 7, 16, 16)
    assert torch.all(head.heatmap[-1].bias == HEATMAP_BIAS)
    assert torch.sigmoid(torch.tensor(HEATMAP_BIAS)) == pytest.approx(0.1, abs=1e-3)


def test_the_stride_parameter_sets_the_head_the_loss_and_the_decoding():
    task = Task("det", "detection", num_classes=1, kind_params={"stride": 8, "head_channels": 4})
    head = task.build_head(spatial(16, 4))
    assert head(torch.randn(1, 16, 16, 16)).shape == (1, 5, 8, 8)  # a 64×64 input at stride 8
    boxes = [[[8, 16, 40, 48, 0]]]  # centre (24, 32) px: cell (row 4, column 3) of 8 px
    output = torch.full((1, 5, 8, 8), -10.0)
    output[0, 0, 4, 3] = 10.0
    output[0, 1:, 4, 3] = torch.tensor([4.0, 4.0, 0.0, 0.0])  # 32 px = 4 cells; centred
    rows = task.kind_spec.predict(output)
    assert rows[0, 0, :4].tolist() == [8.0, 16.0, 40.0, 48.0]
    goal = center_targets(padded(boxes), 1, 8, 8, stride=8)
    assert (goal.cell_y.tolist(), goal.cell_x.tolist(), goal.size.tolist()) == ([4], [3], [[4, 4]])
    # the task's loss encodes at its stride: this output is perfect there, but not at 4
    at_8 = float(task.compute_loss(output, padded(boxes)))
    at_4 = float(centernet_loss(output, padded(boxes), stride=4))
    assert at_8 == pytest.approx(float(centernet_loss(output, padded(boxes), stride=8)))
    assert at_8 < 0.01 < at_4


def test_the_unbound_kind_asks_for_the_task():
    with pytest.raises(TypeError, match=r"use task.kind_spec"):
        KIND.predict(torch.zeros(1, 5, 4, 4))


def test_head_on_vectors_is_refused_naming_the_encoders_that_keep_the_layout():
    task = Task("det", "detection", num_classes=3)
    with pytest.raises(ValueError) as err:
        task.build_head(Features(32))
    assert "feature map" in str(err.value) and "cnn, resnet_fpn, vit or timm" in str(err.value)
    model = build_hard_sharing(InputShape((1, 32, 32)), [task], encoder="cnn")  # stride 8
    assert model(torch.zeros(2, 1, 32, 32))["det"].shape == (2, 7, 8, 8)


def test_task_fields_are_checked():
    with pytest.raises(ValueError, match="num_classes, or class names"):
        Task("det", "detection")
    with pytest.raises(ValueError, match="num_classes is 3 but kind_params classes names 2"):
        Task("det", "detection", num_classes=3, kind_params={"classes": ["a", "b"]})
    for params, words in [
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"stride": 2.5}, "stride must be an integer >= 1"),
        ({"nms_iou": 1.5}, "nms_iou must be a number in [0, 1)"),
        ({"score_threshold": -0.1}, "score_threshold must be a number in [0, 1)"),
        ({"anchors": 3}, "no parameter ['anchors']"),
    ]:
        with pytest.raises(ValueError) as err:
            Task("det", "detection", num_classes=1, kind_params=params)
        assert words in str(err.value)
    with pytest.raises(ValueError, match="size_weight must be >= 0"):
        Task("det", "detection", num_classes=1, loss_params={"size_weight": -1.0})
    task = Task("det", "detection", kind_params={"classes": ["a", "b"]})
    assert task.out_features == 6
    assert KIND.resolve(task, TargetFit()).num_classes == 2


# --- decoding -------------------------------------------------------------------------------


def test_decoding_a_hand_made_output_recovers_the_box_exactly():
    output = torch.full((1, 6, 8, 8), -10.0)
    output[0, 1, 3, 5] = 5.0  # class 1 peaks at row 3, column 5
    output[0, 2:, 3, 5] = torch.tensor([5.0, 4.0, 0.0, 0.5])  # size (5, 4), offset (0, 0.5)
    rows = decode_detections(output)
    assert rows.shape == (1, 100, 6)
    x1, y1, x2, y2, score, c = rows[0, 0].tolist()
    assert [x1, y1, x2, y2, c] == [10.0, 6.0, 30.0, 22.0, 1.0]
    assert score == pytest.approx(1 / (1 + math.exp(-5)))
    assert rows[0, 1:].tolist() == [[0.0] * 5 + [-1.0]] * 99  # padding: score 0, class -1
    assert decode_detections(output[:0]).shape == (0, 100, 6)


def test_decoding_keeps_peaks_only_and_suppresses_overlaps_within_a_class():
    boxes = [[[0, 0, 16, 16, 0, 4.0], [4, 0, 20, 16, 0, 3.0], [4, 0, 20, 16, 1, 2.0]]]
    output = perfect_output(boxes, 2, 8, 8)
    rows = decode_detections(output)[0]
    found = rows[rows[:, 5] >= 0]
    # box 2 overlaps box 1 (IoU 12/20 = 0.6) in its class and goes; box 3 is of class 1;
    # the peaks are one cell apart, so the 3×3 max-pool also keeps only the stronger of class 0
    assert found[:, [0, 1, 2, 3, 5]].tolist() == [[0, 0, 16, 16, 0], [4, 0, 20, 16, 1]]
    assert found[:, 4].tolist() == pytest.approx([1 / (1 + math.exp(-4)), 1 / (1 + math.exp(-2))])


def test_decode_writes_json_ready_boxes_with_class_names():
    task = Task("det", "detection", kind_params={"classes": ["circle", "square"], "top_k": 1})
    output = perfect_output([[[8, 8, 24, 24, 1], [0, 0, 4, 4, 0, -1.0]], []], 2, 8, 8)
    prediction = task.kind_spec.prediction(output, None)
    assert prediction.shape == (2, 1, 6)  # top_k 1: the weaker box is not kept
    columns = KIND.decode(task, prediction, TargetFit())
    assert list(columns) == ["det"]
    first, second = columns["det"]
    assert first == [{"box": [8.0, 8.0, 24.0, 24.0], "score": first[0]["score"], "label": "square"}]
    assert first[0]["score"] == pytest.approx(1 / (1 + math.exp(-10)))
    assert second == []
    json.dumps(columns)


# --- metrics --------------------------------------------------------------------------------


def test_map_is_1_for_perfect_predictions():
    task = Task("det", "detection", num_classes=2)
    boxes = [[[0, 0, 12, 12, 0], [16, 16, 32, 30, 1]], [[4, 8, 20, 28, 1]], []]
    output, target = perfect_output(boxes, 2, 8, 8), padded(boxes)
    assert metrics_of(task, [(output, target)]) == {"map": 1.0, "map_50": 1.0, "map_75": 1.0}


def test_map_when_one_of_two_boxes_is_found():
    # two true boxes, one found exactly: precision 1 up to recall 0.5, then nothing; COCO's
    # 101 recall points 0, 0.01, ..., 0.50 get precision 1, the other 50 get 0
    task = Task("det", "detection", num_classes=1)
    truths = [[[0, 0, 12, 12, 0]], [[16, 16, 32, 30, 0]], []]
    found = [[[0, 0, 12, 12, 0]], [], []]
    values = metrics_of(task, [(perfect_output(found, 1, 8, 8), padded(truths))])
    assert values == pytest.approx({k: 51 / 101 for k in ("map", "map_50", "map_75")})


def test_a_false_positive_on_an_image_without_boxes_counts():
    task = Task("det", "detection", num_classes=1)
    truths = [[[0, 0, 12, 12, 0]], []]
    # the empty image's detection scores higher than the true one: precision 1/2 at recall 1
    # and at every recall point before it (COCO's precision envelope), so AP = 1/2
    above = [[[0, 0, 12, 12, 0, 2.0]], [[8, 8, 24, 24, 0, 3.0]]]
    values = metrics_of(task, [(perfect_output(above, 1, 8, 8), padded(truths))])
    assert values["map_50"] == pytest.approx(0.5)
    # scoring lower, it comes after recall 1 is reached: AP stays 1
    below = [[[0, 0, 12, 12, 0, 3.0]], [[8, 8, 24, 24, 0, 2.0]]]
    values = metrics_of(task, [(perfect_output(below, 1, 8, 8), padded(truths))])
    assert values["map_50"] == pytest.approx(1.0)


def test_map_edge_cases_without_boxes_or_detections_or_labels():
    task = Task("det", "detection", num_classes=1)
    no_boxes = metrics_of(task, [(perfect_output([[[0, 0, 8, 8, 0]]], 1, 8, 8), padded([[]]))])
    assert all(isinstance(v, Undefined) for v in no_boxes.values())
    assert "no true boxes" in no_boxes["map"].reason
    missed = metrics_of(task, [(perfect_output([[]], 1, 8, 8), padded([[[0, 0, 8, 8, 0]]]))])
    assert missed == {"map": 0.0, "map_50": 0.0, "map_75": 0.0}
    unlabelled = torch.full((1, 1, 5), math.nan)
    nothing = metrics_of(task, [(perfect_output([[]], 1, 8, 8), unlabelled)])
    assert all(v.reason == "no labelled rows" for v in nothing.values())


def test_metrics_accumulated_over_two_batches_equal_one_batch():
    task = Task("det", "detection", num_classes=2)
    g = torch.Generator().manual_seed(0)
    truths = [
        [[0, 0, 12, 12, 0], [16, 16, 32, 30, 1]],
        [[4, 8, 20, 28, 1]],
        [],
        [[8, 0, 28, 16, 0]],
    ]
    output = perfect_output(truths, 2, 8, 8) + 0.8 * torch.randn(4, 6, 8, 8, generator=g)
    target = padded(truths)
    target[2] = math.nan  # one unlabelled image
    whole = metrics_of(task, [(output, target)])
    halves = metrics_of(task, [(output[:2], target[:2]), (output[2:], target[2:])])
    assert halves == whole
    assert 0 < whole["map"] < 1  # the noise makes it a real case
    # the array path (Task.evaluate on concatenated predictions) agrees
    evaluated = task.evaluate(task.kind_spec.prediction(output, None), KIND.truth(target, None))
    assert evaluated == pytest.approx(whole)


def _random_boxes(g: np.random.Generator, n: int, lo: int, hi: int, score: bool) -> np.ndarray:
    corner = g.uniform(0, 40, (n, 2))
    size = g.uniform(4, 20, (n, 2))
    rows = (
        [corner, corner + size] + [g.uniform(0, 1, (n, 1))] * score + [g.integers(lo, hi, (n, 1))]
    )
    return np.concatenate(rows, axis=1)


def test_map_at_any_top_k_is_cocoevals_ap_at_that_many_detections():
    # COCOeval's summary reads its AP at 100 detections: -1, reported "no true boxes", for any
    # other top_k. With at most 8 detections an image, every top_k >= 8 scores the same.
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from polytask.tasks._kinds._detection import coco_map

    g = np.random.default_rng(0)
    truths = [_random_boxes(g, int(g.integers(0, 4)), 0, 2, False) for _ in range(12)]
    found = []
    for t in truths:  # the true boxes jittered, and false ones
        near = t[:, :4] + g.normal(0, 2, (len(t), 4))
        rows = np.column_stack([near, g.uniform(0, 1, len(t)), t[:, 4]])
        found.append(np.concatenate([rows, _random_boxes(g, int(g.integers(0, 5)), 0, 2, True)]))
    values = {k: coco_map(truths, found, k) for k in (8, 20, 100, 150)}
    assert all(isinstance(v, float) for v in values[20].values())
    for k in (8, 20, 150):
        assert values[k] == pytest.approx(values[100]), k
    # at 100: pycocotools' own summary
    xywh = lambda r: [r[0], r[1], r[2] - r[0], r[3] - r[1]]  # noqa: E731
    truth = COCO()
    truth.dataset = {
        "images": [{"id": i} for i in range(len(truths))],
        "annotations": [
            {"id": len(truths) * 10 + i * 10 + j, "image_id": i, "category_id": int(r[4]),
             "bbox": xywh(r), "area": (r[2] - r[0]) * (r[3] - r[1]), "iscrowd": 0}
            for i, t in enumerate(truths) for j, r in enumerate(t)
        ],
        "categories": [{"id": 0}, {"id": 1}],
    }  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        results = [{"image_id": i, "category_id": int(r[5]), "bbox": xywh(r), "score": r[4]}
                   for i, f in enumerate(found) for r in f]  # fmt: skip
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert [values[100][k] for k in ("map", "map_50", "map_75")] == pytest.approx(
        list(evaluation.stats[:3])
    )


# --- boxes read from JSON -------------------------------------------------------------------


def test_read_target_from_text_and_file_and_rescale(tmp_path):
    task = Task("det", "detection", kind_params={"classes": ["circle", "square"]})
    cell = (
        '[{"box": [10, 20, 30, 40], "label": "square"}, {"box": [0, 0, 64, 32], "label": "circle"}]'
    )
    rows = KIND.read_target(task, cell, tmp_path, TargetFit(), (16, 32))
    assert rows.tolist() == [[10, 20, 30, 40, 1], [0, 0, 64, 32, 0]]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.json").write_text(cell)
    assert torch.equal(
        KIND.read_target(task, "labels/a.json", tmp_path, TargetFit(), (16, 32)), rows
    )
    # the original is 64 wide, 48 high; the model's input 32 × 16 (height 16, width 32)
    scaled = KIND.rescale_target(task, rows, (48, 64), (16, 32))
    expected = torch.tensor([[5, 20 / 3, 15, 40 / 3, 1], [0, 0, 32, 32 / 3, 0]])
    assert torch.allclose(scaled, expected)
    empty = KIND.read_target(task, "[]", tmp_path, TargetFit(), (16, 32))
    assert empty.shape == (0, 5)
    missing = KIND.read_target(task, float("nan"), tmp_path, TargetFit(), (16, 32))
    assert torch.isnan(missing).all()
    for empty_cell in (None, pd.NA, "  "):
        assert torch.isnan(KIND.read_target(task, empty_cell, tmp_path, TargetFit(), (8, 8))).all()
    parsed = KIND.read_target(task, json.loads(cell), tmp_path, TargetFit(), (16, 32))
    assert torch.equal(parsed, rows)
    batch = KIND.pad_rows(task, [scaled, empty, missing])
    assert batch.shape == (3, 2, 5)
    assert batch[1].tolist() == [PAD, PAD] and torch.isnan(batch[2]).all()
    assert KIND.label_mask(batch).tolist() == [True, True, False]


def test_labels_without_class_names_are_class_indices(tmp_path):
    task = Task("det", "detection", num_classes=3)
    cell = '[{"box": [1, 1, 2, 2], "label": 2}, {"box": [1, 1, 2, 2], "label": "1"}]'
    assert KIND.read_target(task, cell, tmp_path, TargetFit(), (8, 8))[:, 4].tolist() == [2, 1]
    with pytest.raises(DataError, match=r"unknown label 3; .* indices 0..2"):
        KIND.read_target(task, '[{"box": [1, 1, 2, 2], "label": 3}]', tmp_path, TargetFit(), (8, 8))


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ('[{"box": [1, 2, 3, 4], "label": "cat"}]',
         ["unknown label 'cat'", "['circle', 'square']"]),
        ('[{"box": [1, 2, 3, 4], "label": "circle"', ["not valid JSON"]),
        ('{"box": [1, 2, 3, 4]}', ["must hold a list"]),
        ('[{"box": [1, 2, 3], "label": "circle"}]', ["entry 0", "4 finite numbers"]),
        ('[{"box": [1, 2, 3, 4], "label": "circle"}, {"box": [5, 2, 3, 4], "label": "circle"}]',
         ["entry 1", "x2 <= x1"]),
        ('[{"box": [1, 4, 3, 4], "label": "circle"}]', ["y2 <= y1"]),
        ("missing.json", ["cannot read boxes file", "missing.json"]),
    ],
)  # fmt: skip
def test_bad_box_cells_are_refused_naming_the_problem(tmp_path, cell, words):
    task = Task("det", "detection", kind_params={"classes": ["circle", "square"]})
    with pytest.raises(DataError) as err:
        KIND.read_target(task, cell, tmp_path, TargetFit(), (8, 8))
    assert all(w in str(err.value) for w in words), str(err.value)
    assert "'det'" in str(err.value)


def test_a_box_outside_its_image_is_refused_beyond_one_pixel_and_clipped_within():
    task = Task("det", "detection", num_classes=1)
    rows = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.0], [50.0, 10.0, 64.5, 20.0, 0.0]])
    clipped = KIND.rescale_target(task, rows, (32, 64), (32, 64))
    assert clipped[1].tolist() == [50, 10, 64, 20, 0]  # half a pixel over: clipped
    rows[1, 2] = 66.0
    with pytest.raises(DataError) as err:
        KIND.rescale_target(task, rows, (32, 64), (32, 64))
    assert "box 1 [50.0, 10.0, 66.0, 20.0]" in str(err.value) and "64 × 32" in str(err.value)


# --- augmentations --------------------------------------------------------------------------


def test_a_flipped_image_has_its_boxes_on_the_flipped_objects():
    task = Task("det", "detection", num_classes=2)
    image = torch.zeros(24, 40)
    boxes = torch.tensor([[3.0, 2.0, 11.0, 9.0, 0.0], [20.0, 12.0, 37.0, 22.0, 1.0], PAD])
    for x1, y1, x2, y2, c in boxes[:2].long().tolist():
        image[y1:y2, x1:x2] = c + 1
    flipped = image.flip(-1)
    moved = KIND.transform_target(task, boxes, Geometry(size=(24, 40), hflip=True))
    for x1, y1, x2, y2, c in moved[:2].tolist():
        ys, xs = (flipped == c + 1).nonzero(as_tuple=True)
        # the object's pixels span [x1, x2) × [y1, y2) exactly
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x1, y1, x2, y2]
    assert moved[2].tolist() == PAD


def test_a_crop_shifts_clips_scales_and_drops_boxes():
    task = Task("det", "detection", num_classes=1)
    boxes = torch.tensor(
        [[10.0, 10.0, 20.0, 20.0, 0.0], [0.0, 0.0, 12.0, 12.0, 0.0], [28.0, 0.0, 40.0, 8.0, 0.0]]
    )
    # crop top 8, left 8, 16 × 24 (height × width) of a 32 × 40 image, resized to 32 × 48
    geometry = Geometry(size=(32, 48), crop=(8, 8, 16, 24), source_size=(32, 40))
    moved = KIND.transform_target(task, boxes, geometry)
    # box 0 fully inside: shifted by (8, 8), ×2; box 1 keeps 4×4 of 12×12 (11%): dropped;
    # box 2 keeps [28, 8) × [8, 8): nothing left: dropped
    assert moved.tolist() == [[4.0, 4.0, 24.0, 24.0, 0.0], PAD, PAD]
    unlabelled = torch.full((2, 5), math.nan)
    assert torch.isnan(KIND.transform_target(task, unlabelled, geometry)).all()


def test_boxes_read_through_an_image_source_stay_on_their_objects_under_flips_and_crops(
    tmp_path,
):
    from PIL import Image

    from polytask.data._augment import Augment
    from polytask.data._images import ImageEncoding

    rows = []
    for i, (x1, y1, side) in enumerate([(2, 4, 12), (18, 10, 10), (8, 2, 16)]):
        pixels = np.zeros((24, 32), dtype=np.uint8)  # 24 high, 32 wide: resized to 12 × 16
        pixels[y1 : y1 + side, x1 : x1 + side] = 255
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        box = json.dumps([{"box": [x1, y1, x1 + side, y1 + side], "label": "square"}])
        rows.append({"image": f"{i}.png", "objects": box})
    rows.append({"image": "0.png", "objects": ""})  # not labelled
    frame = pd.DataFrame(rows)
    task = Task("objects", "detection", kind_params={"classes": ["circle", "square"]})
    encoding = ImageEncoding.fit(frame, tmp_path, [task], (12, 16), channels=1, mean=[0.0],
                                 std=[1.0])  # fmt: skip
    plain = encoding.source(frame, tmp_path, [task]).rows(torch.arange(4)).targets["objects"]
    assert plain[0].tolist() == [[1.0, 2.0, 7.0, 8.0, 1.0]]  # halved with the image
    assert KIND.label_mask(plain).tolist() == [True, True, True, False]
    source = encoding.source(
        frame, tmp_path, [task], augment=Augment(hflip=0.5, crop_scale=(0.5, 0.9))
    )
    kept = 0
    for key in range(1, 11):
        batch = source.rows(torch.arange(3) + 4 * key)
        for image, boxes in zip(batch.x[:, 0], batch.targets["objects"], strict=True):
            bright = (image > 0.5).nonzero().float()  # (row, column) of the square's pixels
            for x1, y1, x2, y2, c in boxes.tolist():
                if c < 0:
                    continue
                kept += 1
                # the box's edges and the square's agree to a pixel (resampling blurs them)
                edges = [bright[:, 1].min(), bright[:, 0].min()]
                edges += [bright[:, 1].max() + 1, bright[:, 0].max() + 1]
                assert torch.allclose(torch.stack(edges), torch.tensor([x1, y1, x2, y2]), atol=1)
    assert kept > 15


# --- end to end -----------------------------------------------------------------------------


class TinyDetector(MultiTaskNet):
    """A stride-4 conv trunk and each task's own head (what an encoder would give)."""

    def __init__(self, tasks):
        super().__init__()
        self._init_tasks(tasks)
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({t.name: t.build_head(spatial(16, 4)) for t in tasks})

    def forward(self, x):
        z = self.trunk(x)
        return {t.name: t.shape_output(self.heads[t.name](z)) for t in self.tasks}

    def shared_parameters(self):
        return self.trunk.parameters()

    def task_parameters(self, name):
        return self.heads[name].parameters()


def squares(n, seed):
    """32×32 images of noise with one bright square each, and its box."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, 1, 32, 32, generator=g)
    side = torch.randint(6, 13, (n,), generator=g)
    corner = (torch.rand(n, 2, generator=g) * (32 - side[:, None])).long()
    boxes = torch.zeros(n, 1, 5)
    for i in range(n):
        (x1, y1), s = corner[i].tolist(), int(side[i])
        x[i, 0, y1 : y1 + s, x1 : x1 + s] += 1.0
        boxes[i, 0] = torch.tensor([x1, y1, x1 + s, y1 + s, 0.0])
    return TaskData(x, {"square": boxes})


def test_a_tiny_detector_learns_to_find_squares():
    torch.manual_seed(0)
    tasks = [Task("square", "detection", num_classes=1, kind_params={"head_channels": 16})]
    model = TinyDetector(tasks)
    config = TrainConfig(epochs=4, batch_size=32, lr=3e-3, patience=None, progress=False,
                         seed=0, restore_best=False)  # fmt: skip
    trainer = Trainer(model, make_balancer("ew"), config)
    before = trainer.evaluate(squares(128, 1))["square"]
    trainer.fit(squares(384, 0))
    after = trainer.evaluate(squares(128, 1))["square"]
    # measured over seeds 0-2: loss 2.6 → 0.31-0.34, map_50 0.96-1.0, map 0.56-0.62
    assert before["map_50"] == 0.0 and after["loss"] < before["loss"] / 4
    assert after["map_50"] > 0.8 and after["map"] > 0.4, after


def test_without_pycocotools_training_is_refused_before_any_step_with_the_install(monkeypatch):
    """A missing pycocotools surfaced as an ImportError traceback at the first validation."""
    import sys

    from polytask.train._loop import _check_metric_packages

    boxes = Task("boxes", "detection", num_classes=2)
    pose = Task("pose", "keypoints", kind_params={"num_keypoints": 2})
    plain = Task("pose", "keypoints", kind_params={"num_keypoints": 2}, metrics=["pck"])
    _check_metric_packages([boxes, pose])  # installed here: nothing to say
    for module in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    said = r"'boxes': its metric map needs pycocotools, which is not installed: pip install '"
    with pytest.raises(ValueError, match=said + r"polytask\[vision\]'$"):
        _check_metric_packages([boxes])
    with pytest.raises(ValueError, match=r"'pose': its metric oks_ap .* or choose other metrics "
                                         r"\(metrics: \['pck'\]\)"):  # fmt: skip
        _check_metric_packages([pose])
    _check_metric_packages([plain])  # PCK needs nothing more


def test_a_diverged_models_boxes_are_undefined_not_scored_zero():
    """NaN head outputs scored mAP 0 (read by compare as a real 0), as for pixels: undefined."""
    from polytask import Task

    task = Task("o", "detection", num_classes=2)
    acc = task.kind_spec.accumulator(task, None)
    acc.update(torch.full((2, 6, 8, 8), float("nan")),
               torch.tensor([[[4, 4, 20, 20, 0.0]], [[8, 8, 30, 28, 1.0]]]))  # fmt: skip
    assert {v.reason for v in acc.compute().values()} == {"predictions not finite"}
