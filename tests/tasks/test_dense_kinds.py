"""Dense task kinds (segmentation, dense_regression, normals): losses, masks and metrics against
hand-computed values on tiny maps, metrics accumulated over batches, shape checks, reading
targets from files, moving them with an augmentation, and a small image model trained end to
end through the Trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from polytask import TaskData, TrainConfig, Trainer
from polytask.models._base import MultiTaskNet
from polytask.models.encoders import Features
from polytask.tasks import IGNORE_INDEX, KINDS, TargetFit, Task
from polytask.tasks._columns import DataError
from polytask.tasks._kinds._base import Geometry

NAN = float("nan")
I = IGNORE_INDEX  # noqa: E741


def _one_hot_logits(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, H, W) class map → (N, C, H, W) logits whose argmax is that map (ignore → class 0)."""
    return nn.functional.one_hot(classes.clamp_min(0), num_classes).permute(0, 3, 1, 2).float()


# --- segmentation ---------------------------------------------------------------------------


SEG = Task("seg", "segmentation", num_classes=2)


def _seg_logits(n: int) -> torch.Tensor:
    """Logits [ln 3, 0] at every pixel: p(class 0) = 3/4, so a pixel labelled 0 costs ln 4/3 and
    one labelled 1 costs ln 4."""
    out = torch.zeros(n, 2, 3, 3)
    out[:, 0] = math.log(3)
    return out


def test_segmentation_loss_is_the_mean_over_labelled_pixels_of_the_batch():
    a = [[0, 0, 1], [I, I, 0], [1, 0, 0]]  # 7 labelled: five 0s, two 1s
    b = [[1, I, I], [I, I, I], [I, I, I]]  # one labelled pixel (class 1)
    target = torch.tensor([a, b])
    # an image with some ignore pixels is labelled (the issue: it was dropped whole)
    assert SEG.mask(target).tolist() == [True, True]
    assert KINDS["segmentation"].label_count(target) == 8
    loss = SEG.compute_loss(_seg_logits(2), target)
    pooled = (5 * math.log(4 / 3) + 3 * math.log(4)) / 8  # one pool of pixels, not per image
    assert float(loss) == pytest.approx(pooled, rel=1e-6)


def test_an_all_ignore_image_contributes_nothing():
    a = [[0, 0, 1], [I, I, 0], [1, 0, 0]]
    target = torch.tensor([a, [[I] * 3] * 3])
    assert SEG.mask(target).tolist() == [True, False]
    out = _seg_logits(2).requires_grad_()
    loss = SEG.compute_loss(out, target)
    assert loss.item() == pytest.approx((5 * math.log(4 / 3) + 2 * math.log(4)) / 7, rel=1e-6)
    loss.backward()
    assert out.grad is not None and bool((out.grad[1] == 0).all())  # no gradient from it
    assert bool((out.grad[0, :, 1, :2] == 0).all())  # nor from the ignore pixels of the first
    nothing = SEG.compute_loss(out, torch.full((2, 3, 3), I))
    assert nothing.item() == 0.0 and nothing.requires_grad  # 0, still in the graph


def test_segmentation_metrics_from_the_confusion_matrix():
    truth = torch.tensor([[[0, 0, 1], [I, I, 0], [1, 0, 0]]])
    pred = torch.tensor([[[0, 1, 1], [1, 1, 0], [0, 0, 0]]])
    # labelled (truth, pred): 0→0 ×4, 0→1 ×1, 1→1 ×1, 1→0 ×1
    # IoU_0 = 4 / (4 + 1 + 1) = 2/3, IoU_1 = 1 / (1 + 1 + 1) = 1/3; accuracy 5/7
    task = Task("seg", "segmentation", num_classes=3)  # class 2 absent: not in the mean
    acc = task.kind_spec.accumulator(task, None)
    acc.update(_one_hot_logits(pred, 3), truth)
    assert acc.compute() == pytest.approx({"miou": 0.5, "pixel_accuracy": 5 / 7})
    chosen = Task("seg", "segmentation", num_classes=3, metrics=("pixel_accuracy",))
    acc = chosen.kind_spec.accumulator(chosen, None)
    assert acc.compute()["pixel_accuracy"].reason == "no labelled pixels"
    acc.update(_one_hot_logits(pred, 3), truth)
    assert list(acc.compute()) == ["pixel_accuracy"]
    # the same numbers from whole arrays (Task.evaluate)
    ev = task.evaluate(pred.numpy(), truth.numpy())
    assert ev == pytest.approx({"miou": 0.5, "pixel_accuracy": 5 / 7})


def _two_batches_equal_the_whole(task: Task, output: torch.Tensor, target: torch.Tensor, scale):
    whole = task.kind_spec.accumulator(task, scale)
    whole.update(output, target)
    parts = task.kind_spec.accumulator(task, scale)
    parts.update(output[:3], target[:3])
    parts.update(output[3:], target[3:])
    expected = whole.compute()
    assert parts.compute() == pytest.approx(expected, rel=1e-9)
    assert all(math.isfinite(v) for v in expected.values())


def test_metrics_over_two_batches_equal_the_metrics_on_the_concatenation():
    g = torch.Generator().manual_seed(0)
    seg = Task("seg", "segmentation", num_classes=4)
    target = torch.randint(0, 4, (5, 6, 7), generator=g)
    target[torch.rand(5, 6, 7, generator=g) < 0.3] = I
    _two_batches_equal_the_whole(seg, torch.randn(5, 4, 6, 7, generator=g), target, None)

    depth = Task("depth", "dense_regression")
    y = torch.randn(5, 6, 7, generator=g)
    y[torch.rand(5, 6, 7, generator=g) < 0.3] = NAN
    _two_batches_equal_the_whole(depth, torch.randn(5, 1, 6, 7, generator=g), y, (4.0, 1.5))

    normals = Task("n", "normals")
    n = nn.functional.normalize(torch.randn(5, 3, 6, 7, generator=g), dim=1)
    n[:, :, torch.rand(6, 7, generator=g) < 0.3] = NAN
    _two_batches_equal_the_whole(normals, torch.randn(5, 3, 6, 7, generator=g), n, None)


def test_undefined_metrics_say_why():
    depth = Task("depth", "dense_regression")
    acc = depth.kind_spec.accumulator(depth, None)
    acc.update(torch.zeros(1, 2, 2), torch.full((1, 2, 2), NAN))
    assert {v.reason for v in acc.compute().values()} == {"no labelled pixels"}
    acc.update(torch.full((1, 2, 2), NAN), torch.ones(1, 2, 2))  # a diverged model
    assert {v.reason for v in acc.compute().values()} == {"predictions not finite"}
    below = depth.kind_spec.accumulator(depth, None)
    below.update(torch.ones(1, 1, 2), torch.tensor([[[-1.0, 0.0]]]))  # no y > 0
    values = below.compute()
    assert values["abs_err"] == pytest.approx(1.5) and math.isnan(values["delta1"])
    assert values["delta1"].reason == "no positive target"


def test_a_head_with_the_wrong_channels_is_refused_naming_both_shapes():
    task = Task("seg", "segmentation", num_classes=3)
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"'seg'.*\(2, 1, 3, 3\).*\(2, 3, 3\).*\(2, 3, 3, 3\)"):
        task.compute_loss(torch.zeros(2, 1, 3, 3), target)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\) for targets of shape \(2, 3, 3\)"):
        task.compute_loss(torch.zeros(2, 3, 4, 4), target)  # a head at another resolution


def test_segmentation_needs_num_classes():
    with pytest.raises(ValueError, match="needs num_classes >= 2"):
        Task("seg", "segmentation")
    with pytest.raises(ValueError, match="accumulated over batches"):
        from polytask import Metric

        Task("seg", "segmentation", num_classes=2, metrics=(Metric("m", lambda y, p: 0.0, True),))


# --- dense regression -----------------------------------------------------------------------


def test_dense_regression_l1_skips_nan_pixels_and_unlabelled_images():
    depth = Task("depth", "dense_regression")
    a = [[1.0, 2.0, NAN], [3.0, NAN, 4.0], [0.5, 0.5, 1.0]]  # 7 present, sum 12
    target = torch.tensor([a, [[NAN] * 3] * 3])
    assert depth.mask(target).tolist() == [True, False]
    assert depth.kind_spec.label_count(target) == 7
    assert float(depth.compute_loss(torch.zeros(2, 3, 3), target)) == pytest.approx(12 / 7)


def test_a_one_channel_head_is_accepted_and_two_channels_refused():
    depth = Task("depth", "dense_regression", loss="mse")
    target = torch.tensor([[[1.0, 2.0, 3.0]] * 3, [[NAN, 1.0, 1.0]] * 3])  # (2, 3, 3)
    # squared errors against 0: image 1: 3 × (1 + 4 + 9), image 2: 3 × (1 + 1); 15 pixels
    expected = (3 * 14 + 3 * 2) / 15
    flat = depth.compute_loss(torch.zeros(2, 3, 3), target)
    channel = depth.compute_loss(torch.zeros(2, 1, 3, 3), target)  # broadcast to (2, 2, 3, 3)
    assert float(flat) == float(channel) == pytest.approx(expected)  # before: not any more
    assert depth.shape_output(torch.zeros(2, 1, 3, 3)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match=r"'depth'.*\(2, 2, 3, 3\).*\(2, 3, 3\)"):
        depth.compute_loss(torch.zeros(2, 2, 3, 3), target)


def test_scale_invariant_log_loss_by_hand():
    task = Task("depth", "dense_regression", loss="si_log")
    e = math.e
    # image 1: y = (1, e), ŷ = 1: d = (0, 1); (0 + 1)/2 − 0.5 · 1²/4 = 0.375 over 2 pixels
    # image 2: y = (e², e², e²), ŷ = 1: d = 2 each; 4 − 0.5 · 4 = 2 over 3 pixels
    target = torch.full((2, 3, 3), NAN)
    target[0, 0, :2] = torch.tensor([1.0, e])
    target[1, 0] = e**2
    pred = torch.ones(2, 3, 3)
    expected = (2 * 0.375 + 3 * 2.0) / 5  # each image weighed by its labelled pixels
    assert float(task.compute_loss(pred, target)) == pytest.approx(expected, rel=1e-6)
    full = Task("depth", "dense_regression", loss="si_log", loss_params={"lambda": 1.0})
    one = full.compute_loss(pred, target)
    assert float(full.compute_loss(pred * 7.0, target)) == pytest.approx(float(one), abs=1e-5)
    # a prediction at or below 0 is pushed up (the log continues linearly below the floor)
    low = torch.full((2, 3, 3), -1.0, requires_grad=True)
    task.compute_loss(low, target).backward()
    assert low.grad is not None and bool((low.grad[0, 0, :2] < 0).all())
    with pytest.raises(ValueError, match="lambda must be in"):
        Task("depth", "dense_regression", loss="si_log", loss_params={"lambda": 2.0})


def test_depth_metrics_by_hand_in_original_units():
    task = Task("depth", "dense_regression")
    y = torch.tensor([[[2.0, 4.0, 1.0, NAN]]])  # (1, 1, 4)
    p = torch.tensor([[[3.0, 4.0, 0.5, 9.0]]])
    # errors 1, 0, 0.5; relative 1/2, 0, 1/2; ratios 1.5, 1, 2: one within 1.25
    expected = {
        "abs_err": 1.5 / 3,
        "rel_err": 1 / 3,
        "rmse": math.sqrt(1.25 / 3),
        "delta1": 1 / 3,
    }
    mean, std = 3.0, 2.0  # the encoded values are standardised; metrics come back in metres
    acc = task.kind_spec.accumulator(task, (mean, std))
    acc.update(((p - mean) / std).unsqueeze(1), (y - mean) / std)
    assert acc.compute() == pytest.approx(expected)
    assert task.evaluate(p.numpy(), y.numpy()) == pytest.approx(expected)


@pytest.mark.parametrize(("mean", "std"), [(3.0, 2.0), (2.7, 1.3), (5.1, 0.7), (0.9, 3.3)])
def test_a_depth_of_zero_stays_out_of_the_relative_metrics_after_standardising(mean, std):
    """Found by review: a 0 standardised in float32 came back as ±1e-8; on the + side it
    counted as a target with a relative error of 1e7 (rel_err 71,384 where 0.126 is right) and
    as a miss for delta1."""
    task = Task("depth", "dense_regression")
    y = torch.tensor([[[0.0, 2.0, 4.0, 0.0]]])
    p = torch.tensor([[[0.3, 2.4, 4.0, 0.1]]])
    acc = task.kind_spec.accumulator(task, (mean, std))
    acc.update(((p - mean) / std).unsqueeze(1), ((y - mean) / std).float())
    got = acc.compute()
    assert got["rel_err"] == pytest.approx((0.4 / 2 + 0) / 2, rel=1e-5)  # y > 0 only
    assert got["delta1"] == pytest.approx(1.0)
    assert got["abs_err"] == pytest.approx((0.3 + 0.4 + 0 + 0.1) / 4, rel=1e-5)


def test_fit_files_standardises_over_labelled_pixels():
    kind = KINDS["dense_regression"]
    raw = [torch.tensor([[1.0, 3.0], [NAN, NAN]]), torch.tensor([[5.0, NAN]])]
    fit = kind.fit_files(Task("depth", "dense_regression"), raw)
    assert fit.scale == pytest.approx((3.0, math.sqrt(8 / 3)))  # (−2, 0, 2) around 3
    si = kind.fit_files(Task("depth", "dense_regression", loss="si_log"), raw)
    assert si.scale == pytest.approx((0.0, 3.0))  # divided by the mean: stays positive
    with pytest.raises(DataError, match="values <= 0"):
        kind.fit_files(Task("d", "dense_regression", loss="si_log"), [torch.tensor([0.0, 1.0])])
    with pytest.raises(DataError, match="no labelled pixel"):
        kind.fit_files(Task("d", "dense_regression"), [torch.full((2, 2), NAN)])


# --- normals --------------------------------------------------------------------------------


ANGLES = [0.03, 10.03, 20.03, 40.03, 60.03, 90.03, 120.03, 150.03, 179.03, 5.03, 25.03, 35.03]
"""Degrees between prediction and truth at the 12 labelled pixels (image 1: all 9; image 2:
its first row)."""


def _normal_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Truth (0, 0, 1) everywhere labelled; predictions at ANGLES in the x–z plane, length 2."""
    target = torch.full((2, 3, 3, 3), NAN)
    target[0, 2] = 1.0
    target[0, :2] = 0.0
    target[1, :, 0] = torch.tensor([0.0, 0.0, 1.0])[:, None]
    pred = torch.zeros(2, 3, 3, 3)
    where = [(0, i // 3, i % 3) for i in range(9)] + [(1, 0, j) for j in range(3)]
    for (n, r, c), a in zip(where, ANGLES, strict=True):
        t = math.radians(a)
        pred[n, :, r, c] = torch.tensor([2 * math.sin(t), 0.0, 2 * math.cos(t)])
    return pred, target


def test_normals_cosine_loss_and_angle_metrics_by_hand():
    task = Task("n", "normals")
    pred, target = _normal_scene()
    assert task.mask(target).tolist() == [True, True]
    assert task.kind_spec.label_count(target) == 12
    cos_loss = sum(1 - math.cos(math.radians(a)) for a in ANGLES) / 12
    assert float(task.compute_loss(pred, target)) == pytest.approx(cos_loss, rel=1e-5)
    acc = task.kind_spec.accumulator(task, None)
    acc.update(pred, target)
    m = acc.compute()
    # median: between the 6th and 7th of 12 (35.03 and 40.03; the lower one was taken), read
    # from 0.1° bins
    assert m["mean_angle"] == pytest.approx(sum(ANGLES) / 12, rel=1e-6)
    assert m["median_angle"] == pytest.approx(float(np.median(ANGLES)), abs=0.05)
    assert m["within_11_25"] == pytest.approx(3 / 12)  # 0.03, 5.03, 10.03
    assert m["within_22_5"] == pytest.approx(4 / 12)
    assert m["within_30"] == pytest.approx(5 / 12)
    assert list(m) == ["mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30"]
    l1 = Task("n", "normals", loss="l1")
    by_hand = sum(abs(math.sin(math.radians(a))) + 1 - math.cos(math.radians(a)) for a in ANGLES)
    assert float(l1.compute_loss(pred, target)) == pytest.approx(by_hand / 12, rel=1e-5)


def test_normals_median_of_an_odd_or_even_count_and_a_zero_prediction():
    from polytask.tasks._kinds._normals import AngleStats

    def stats(degrees: list[float], zero: int = 0) -> dict[str, float]:
        t = torch.tensor([math.radians(a) for a in degrees])
        pred = torch.stack([torch.sin(t), torch.zeros_like(t), torch.cos(t)])  # (3, n)
        pred[:, :zero] = 0.0  # the first `zero` predictions have no direction
        truth = torch.tensor([0.0, 0.0, 1.0])[:, None].expand(3, len(degrees))
        got = AngleStats()
        got.add(pred[None, :, None, :], truth[None, :, None, :])
        return got.values()

    for degrees in ([1.0, 1.0, 50.0, 50.0], [3.0, 7.0, 60.0], [12.0]):
        assert stats(degrees)["median_angle"] == pytest.approx(np.median(degrees), abs=0.0501)
    # a zero vector has no direction: 90° (cos 0, as the cosine loss reads it), not a hit
    values = stats([0.0, 0.0], zero=1)
    assert values["mean_angle"] == pytest.approx(45.0) and values["within_11_25"] == 0.5


def test_normals_resized_to_the_input_size_stay_unit_vectors():
    # a map read at its image's size, then resized to the model's: neighbours averaged
    task = Task("n", "normals")
    n = torch.zeros(3, 8, 8)
    n[0, :, :4] = 1.0  # left half faces right, right half the camera
    n[2, :, 4:] = 1.0
    n[:, 0, 0] = NAN
    for size in ((6, 6), (4, 4), (8, 8)):
        got = task.kind_spec.rescale_target(task, n, (8, 8), size)
        norms = got.norm(dim=0)
        labelled = ~torch.isnan(norms)
        assert bool(labelled.any()) and torch.allclose(norms[labelled], torch.ones(1)), size
        # a perfect prediction (the target's own direction) has loss 0
        perfect = torch.nan_to_num(got)[None]
        assert float(task.compute_loss(perfect, got[None])) == pytest.approx(0.0, abs=1e-6)


def test_normals_predictions_are_unit_vectors_and_other_heads_refused():
    task = Task("n", "normals")
    out = torch.randn(2, 3, 4, 4) * 5
    assert torch.allclose(task.predict(out).norm(dim=1), torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match=r"'n'.*\(2, 1, 4, 4\).*\(2, 3, 4, 4\)"):
        task.compute_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 3, 4, 4))


# --- heads ----------------------------------------------------------------------------------


def test_heads_upsample_by_the_stride_and_refuse_vectors():
    feats = Features(channels=8, stride=4, spatial=True)
    z = torch.randn(2, 8, 3, 5)
    seg = Task("seg", "segmentation", num_classes=5)
    shapes = {
        "seg": (seg, (2, 5, 12, 20)),
        "depth": (Task("depth", "dense_regression"), (2, 12, 20)),
        "n": (Task("n", "normals"), (2, 3, 12, 20)),
    }
    for task, shape in shapes.values():
        assert task.shape_output(task.build_head(feats)(z)).shape == shape
    si = Task("depth", "dense_regression", loss="si_log").build_head(feats)
    assert si[0][-1].bias.tolist() == [1.0]  # starts at the mean depth: logs need ŷ > 0
    with pytest.raises(ValueError, match=r"'seg' \(segmentation\) predicts per pixel: use an "):
        seg.build_head(Features(channels=8))


class Served(nn.Module):
    """Tasks' `served` outputs as one module, to export."""

    def __init__(self, tasks: list[Task], scales: list[tuple[float, float] | None]) -> None:
        super().__init__()
        self.tasks, self.scales = tasks, scales

    def forward(self, *outputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        given = zip(self.tasks, outputs, self.scales, strict=True)
        return tuple(t.kind_spec.served(x, s) for t, x, s in given)


def test_served_outputs_export():
    tasks = [
        Task("seg", "segmentation", num_classes=3),
        Task("depth", "dense_regression"),
        Task("n", "normals"),
    ]
    outputs = (torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4), torch.randn(2, 3, 4, 4))
    served = Served(tasks, [None, (5.0, 2.0), None])
    exported = torch.export.export(served, outputs).module()
    doubled = [x * 2 for x in outputs]
    for got, want in zip(exported(*doubled), served(*doubled), strict=True):
        assert torch.allclose(got, want)
    probs, depth, normals = served(*outputs)
    assert probs.sum(dim=1).allclose(torch.ones(2, 4, 4))  # probabilities per pixel
    kinds = [t.kind_spec for t in tasks]
    assert np.array_equal(kinds[0].prediction(outputs[0], None), probs.argmax(dim=1).numpy())
    assert np.allclose(kinds[1].prediction(outputs[1], (5.0, 2.0)), depth.numpy(), atol=1e-6)
    assert np.allclose(kinds[2].prediction(outputs[2], None), normals.numpy(), atol=1e-6)


# --- files ----------------------------------------------------------------------------------


BLOCKS = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]], np.uint8)


def test_segmentation_reads_png_and_npy_masks(tmp_path):
    task = Task("seg", "segmentation", num_classes=3)
    kind, fit = task.kind_spec, TargetFit()
    Image.fromarray(BLOCKS, mode="L").save(tmp_path / "m.png")
    palette = Image.fromarray(BLOCKS, mode="L").convert("P")
    palette.save(tmp_path / "p.png")
    np.save(tmp_path / "m.npy", BLOCKS.astype(np.int64))
    for name in ("m.png", "p.png", "m.npy"):
        read = kind.read_target(task, name, tmp_path, fit, (2, 2))  # at the file's own size
        assert read.shape == (4, 4), name
        got = kind.rescale_target(task, read, (4, 4), (2, 2))  # its image's size → the input's
        assert got.dtype == torch.long and got.tolist() == [[0, 1], [2, I]], name
    full = kind.read_target(task, "m.png", tmp_path, fit, (4, 4))
    assert full[3, 3] == I and full[0, 2] == 1
    with pytest.raises(DataError, match=r"its map is 4×4 pixels .* but its image is 6×4"):
        kind.rescale_target(task, full, (4, 6), (2, 2))  # a mask of another image's size
    sideways = full[:, :2]  # 2 wide, 4 high: the stored frame of an image read upright 4×2
    with pytest.raises(DataError, match=r"its image's size \(an image with an EXIF orientation"):
        kind.rescale_target(task, sideways, (2, 4), (2, 2))
    unlabelled = kind.read_target(task, "", tmp_path, fit, (2, 2))
    assert kind.rescale_target(task, unlabelled, (4, 6), (2, 2)).tolist() == [[I] * 2] * 2
    for empty in (None, NAN, "", "  "):
        assert kind.read_target(task, empty, tmp_path, fit, (2, 3)).tolist() == [[I] * 3] * 2


def test_a_one_bit_png_mask_reads_as_classes_0_and_1(tmp_path):
    """Found by review: Pillow saves a bool mask as a 1-bit PNG (mode 1), which was refused as
    not a single-channel PNG of class indices."""
    task = Task("seg", "segmentation", num_classes=2)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    Image.fromarray(mask).save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    read = task.kind_spec.read_target(task, "bits.png", tmp_path, TargetFit(), (4, 4))
    assert read.tolist() == mask.astype(int).tolist()


def test_bad_mask_files_name_the_file(tmp_path):
    task = Task("seg", "segmentation", num_classes=2)
    kind, fit = task.kind_spec, TargetFit()
    with pytest.raises(DataError, match=r"'seg'.*nowhere\.png does not exist"):
        kind.read_target(task, "nowhere.png", tmp_path, fit, (2, 2))
    Image.fromarray(BLOCKS, mode="L").save(tmp_path / "three.png")
    with pytest.raises(DataError, match=r"three\.png holds class indices \[2\] outside 0\.\.1"):
        kind.read_target(task, "three.png", tmp_path, fit, (2, 2))
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png is a PNG of mode RGB"):
        kind.read_target(task, "rgb.png", tmp_path, fit, (2, 2))
    np.save(tmp_path / "cube.npy", np.zeros((2, 4, 4), np.int64))
    with pytest.raises(DataError, match=r"cube\.npy holds an array of shape \(2, 4, 4\)"):
        kind.read_target(task, "cube.npy", tmp_path, fit, (2, 2))
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read .*junk\.png"):
        kind.read_target(task, "junk.png", tmp_path, fit, (2, 2))
    with pytest.raises(DataError, match=r"m\.jpg is not a \.png or \.npy file"):
        kind.read_target(task, "m.jpg", tmp_path, fit, (2, 2))


def test_depth_reads_npy_and_16_bit_png_resizing_over_present_pixels(tmp_path):
    task = Task("depth", "dense_regression")
    kind = task.kind_spec
    np.save(tmp_path / "d.npy", np.array([[1.0, 2.0], [3.0, NAN]], np.float32))
    # antialiased bilinear 2×2 → 1×1 weighs the four pixels alike: (1 + 2 + 3) / 3 present
    read = kind.read_target(task, "d.npy", tmp_path, TargetFit(), (1, 1))
    assert kind.rescale_target(task, read, (2, 2), (1, 1)).item() == 2.0
    np.save(tmp_path / "hole.npy", np.array([[1.0, NAN], [NAN, NAN]], np.float32))
    hole = kind.read_target(task, "hole.npy", tmp_path, TargetFit(), (1, 1))
    assert math.isnan(kind.rescale_target(task, hole, (2, 2), (1, 1)).item())
    mm = np.array([[1000, 2500], [0, 4000]], np.uint16)  # millimetres; 0: no measurement
    Image.fromarray(mm).save(tmp_path / "d.png")
    got = kind.read_target(task, "d.png", tmp_path, TargetFit(), (2, 2))
    assert got.dtype == torch.float32
    assert torch.allclose(got, torch.tensor([[1.0, 2.5], [NAN, 4.0]]), equal_nan=True)
    scaled = kind.read_target(task, "d.png", tmp_path, TargetFit(scale=(2.0, 0.5)), (2, 2))
    assert torch.allclose(scaled, torch.tensor([[-2.0, 1.0], [NAN, 4.0]]), equal_nan=True)
    cm = Task("depth", "dense_regression", kind_params={"png_scale": 0.01})
    assert kind.read_target(cm, "d.png", tmp_path, TargetFit(), (2, 2))[0, 0] == 10.0
    Image.fromarray(mm.astype(np.uint8)).save(tmp_path / "eight.png")
    with pytest.raises(DataError, match=r"eight\.png is a PNG of mode L"):
        kind.read_target(task, "eight.png", tmp_path, TargetFit(), (2, 2))
    with pytest.raises(DataError, match=r"gone\.npy does not exist"):
        kind.read_target(task, "gone.npy", tmp_path, TargetFit(), (2, 2))


def test_normals_read_from_npy_at_unit_length(tmp_path):
    task = Task("n", "normals")
    kind = task.kind_spec
    n = np.zeros((3, 2, 2), np.float32)
    n[2] = 2.0  # (0, 0, 2): scaled to unit length
    n[:, 1, 1] = NAN
    np.save(tmp_path / "n.npy", n)
    got = kind.read_target(task, "n.npy", tmp_path, TargetFit(), (2, 2))
    assert got.shape == (3, 2, 2) and got[2, 0, 0] == 1.0 and bool(torch.isnan(got[:, 1, 1]).all())
    np.save(tmp_path / "last.npy", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(DataError, match=r"last\.npy holds an array of shape \(2, 2, 3\)"):
        kind.read_target(task, "last.npy", tmp_path, TargetFit(), (2, 2))
    assert bool(torch.isnan(kind.read_target(task, None, tmp_path, TargetFit(), (4, 5))).all())


# --- augmentations --------------------------------------------------------------------------


def _scene(xs: list[int], width: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 4×`width` scene with 1-pixel-wide poles at columns `xs`: segmentation (pole class 1,
    the top row unlabelled), depth (pole 2, else 5; column 0 missing) and normals (a pole faces
    right-and-forward, the rest forward)."""
    seg = torch.zeros(4, width, dtype=torch.long)
    depth = torch.full((4, width), 5.0)
    normals = torch.zeros(3, 4, width)
    normals[2] = 1.0
    for x in xs:
        seg[:, x], depth[:, x] = 1, 2.0
        normals[:, :, x] = torch.tensor([0.6, 0.0, 0.8])[:, None]
    seg[0] = I
    return seg, depth, normals


def test_a_flipped_target_is_the_target_of_the_flipped_scene():
    seg, depth, normals = _scene([1, 2])
    mirror_seg, mirror_depth, mirror_normals = _scene([3, 4])  # x → 5 − x
    depth[:, 0], mirror_depth[:, 5] = NAN, NAN
    flip = Geometry(size=(4, 6), hflip=True)
    s = Task("seg", "segmentation", num_classes=2)
    d, n = Task("depth", "dense_regression"), Task("n", "normals")
    flipped_seg = s.kind_spec.transform_target(s, seg, flip)
    assert torch.equal(flipped_seg, mirror_seg)
    assert torch.equal(s.kind_spec.element_mask(flipped_seg), s.kind_spec.element_mask(mirror_seg))
    flipped_depth = d.kind_spec.transform_target(d, depth, flip)
    assert torch.allclose(flipped_depth, mirror_depth, equal_nan=True)
    flipped_normals = n.kind_spec.transform_target(n, normals, flip)
    mirror_normals[0] *= -1  # mirrored, a pole faces left: x negated
    assert torch.allclose(flipped_normals, mirror_normals)
    assert torch.equal(s.kind_spec.transform_target(s, seg, Geometry(size=(4, 6))), seg)


def test_a_crop_is_resized_to_the_input_size():
    seg, depth, _ = _scene([1, 2])
    s, d = Task("seg", "segmentation", num_classes=2), Task("depth", "dense_regression")
    crop = Geometry(size=(4, 6), crop=(2, 0, 2, 3))  # rows 2–3, columns 0–2, doubled
    got = s.kind_spec.transform_target(s, seg, crop)
    assert got.tolist() == [[0, 0, 1, 1, 1, 1]] * 4
    on_depth = d.kind_spec.transform_target(d, depth, crop)
    assert torch.allclose(on_depth[:, 0], torch.full((4,), 5.0))  # constant runs stay
    assert torch.allclose(on_depth[:, 3:], torch.full((4, 3), 2.0))
    half = Geometry(size=(4, 6), crop=(4, 2, 4, 6), source_size=(8, 12))  # given at 8×12
    assert s.kind_spec.transform_target(s, seg, half).tolist() == [[1, 1, 1, 1, 0, 0]] * 4


def test_degenerate_targets_are_named():
    s = Task("seg", "segmentation", num_classes=3)
    assert "class 1 (one of 3)" in s.kind_spec.degenerate(s, torch.tensor([[[1, I]]]), TargetFit())
    assert s.kind_spec.degenerate(s, torch.tensor([[[1, 0]]]), TargetFit()) is None
    assert "no labelled" in s.kind_spec.degenerate(s, torch.full((1, 2, 2), I), TargetFit())
    d = Task("depth", "dense_regression")
    message = d.kind_spec.degenerate(d, torch.tensor([[[0.5, NAN]]]), TargetFit(scale=(3.0, 2.0)))
    assert message == "every labelled pixel is 4"
    n = Task("n", "normals")
    assert "normal (0, 0, 1)" in n.kind_spec.degenerate(n, _scene([])[2][None], TargetFit())


# --- end to end -----------------------------------------------------------------------------


class TinyDenseNet(MultiTaskNet):
    """A stride-2 conv trunk shared by the tasks' own heads (`Task.build_head`)."""

    def __init__(self, tasks: list[Task]) -> None:
        super().__init__()
        self._init_tasks(tasks)
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        feats = Features(channels=16, stride=2, spatial=True)
        self.heads = nn.ModuleDict({t.name: t.build_head(feats) for t in tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)
        return {t.name: t.shape_output(self.heads[t.name](z)) for t in self.tasks}

    def shared_parameters(self):
        return self.trunk.parameters()

    def task_parameters(self, name: str):
        return self.heads[name].parameters()


def _squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """16×16 images with a bright square (class 1, depth 2) on a dark background (class 0,
    depth 5); a tenth of the pixels unlabelled in each map."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.3
    seg = torch.zeros(n, 16, 16, dtype=torch.long)
    for i in range(n):
        top, left = torch.randint(0, 10, (2,), generator=g).tolist()
        x[i, :, top : top + 6, left : left + 6] += 0.7
        seg[i, top : top + 6, left : left + 6] = 1
    depth = torch.where(seg == 1, 2.0, 5.0)
    seg[torch.rand(n, 16, 16, generator=g) < 0.1] = I
    depth[torch.rand(n, 16, 16, generator=g) < 0.1] = NAN
    return x, seg, depth


def test_segmentation_and_depth_train_end_to_end():
    tasks = [Task("seg", "segmentation", num_classes=2), Task("depth", "dense_regression")]
    x, seg, depth = _squares(192, 0)
    vx, vseg, vdepth = _squares(64, 1)
    scale = KINDS["dense_regression"].fit_files(tasks[1], list(depth)).scale
    assert scale is not None
    mean, std = scale

    def data(x, seg, depth):
        targets = {"seg": seg, "depth": (depth - mean) / std}
        return TaskData(x, targets, target_scale={"depth": scale})

    torch.manual_seed(0)
    model = TinyDenseNet(tasks)
    config = TrainConfig(epochs=8, batch_size=32, lr=1e-2, progress=False, patience=None)
    trainer = Trainer(model, config=config)
    trainer.fit(data(x, seg, depth), data(vx, vseg, vdepth))
    metrics = trainer.evaluate(data(vx, vseg, vdepth))
    # chance: everything background gives IoU_1 = 0 and IoU_0 ≈ 0.86, mIoU ≈ 0.43
    assert metrics["seg"]["miou"] > 0.8
    assert metrics["seg"]["pixel_accuracy"] > 0.9
    known = vdepth[~torch.isnan(vdepth)]
    baseline = float((known - mean).abs().mean())  # the training mean everywhere
    assert metrics["depth"]["abs_err"] < 0.5 * baseline
    assert set(metrics["depth"]) == {"loss", "abs_err", "rel_err", "rmse", "delta1"}


def test_dense_tasks_on_a_vector_trunk_or_tabular_data_are_refused():
    from polytask import hard_sharing_mlp
    from polytask.app import RunConfig
    from polytask.models import InputShape, build_model

    seg = Task("seg", "segmentation", num_classes=3)
    with pytest.raises(ValueError, match=r"'seg' \(segmentation\) predicts per position.*vector"):
        hard_sharing_mlp(10, [seg])
    with pytest.raises(ValueError, match="keeps the spatial layout"):
        build_model("hard_sharing", InputShape((10,)), [seg])
    with pytest.raises(ValueError, match=r"tasks \['seg'\] predict per position.*data.images"):
        RunConfig(data={"builtin": "customers"}, tasks=(seg,))


@pytest.mark.parametrize(("encoder", "size", "fits"), [("cnn", 36, 32), ("resnet_fpn", 30, 32)])
def test_a_per_pixel_task_refuses_an_image_size_its_encoders_stride_cannot_upsample_to(
    encoder, size, fits
):
    """The head upsamples by the stride: at 36 px a stride-8 map gave 40 px outputs, and the
    first training step blamed the head."""
    from polytask.models import build_model
    from polytask.models.encoders import InputShape

    tasks = [Task("seg", "segmentation", num_classes=3)]
    with pytest.raises(ValueError, match=rf"multiple of \d \(e.g. {fits} × {fits}\)"):
        build_model("hard_sharing", InputShape((3, size, size)), tasks, encoder=encoder, seed=0)
    model = build_model("hard_sharing", InputShape((3, fits, fits)), tasks, encoder=encoder,
                        seed=0)  # fmt: skip
    assert model(torch.zeros(2, 3, fits, fits))["seg"].shape == (2, 3, fits, fits)
    labels = [Task("kind", "multiclass", num_classes=3)]
    label = build_model("hard_sharing", InputShape((3, size, size)), labels, encoder=encoder)
    assert label(torch.zeros(2, 3, size, size))["kind"].shape == (2, 3)  # image-level: any size


def test_a_npy_mask_of_more_than_255_classes_keeps_class_255(tmp_path):
    """255 marks an unlabelled pixel of an 8-bit PNG; in a .npy of 300 classes it is a class
    (it was read as unlabelled without a word); −100 still marks one."""
    from pathlib import Path

    np.save(tmp_path / "m.npy", np.array([[254, 255], [-100, 299]], dtype=np.int32))
    many = Task("s", "segmentation", num_classes=300)
    got = many.kind_spec.read_target(many, "m.npy", Path(tmp_path), TargetFit(), (2, 2))
    assert got.tolist() == [[254, 255], [IGNORE_INDEX, 299]]
    np.save(tmp_path / "few.npy", np.array([[1, 255], [-100, 2]], dtype=np.int32))
    few = Task("s", "segmentation", num_classes=3)
    got = few.kind_spec.read_target(few, "few.npy", Path(tmp_path), TargetFit(), (2, 2))
    assert got.tolist() == [[1, IGNORE_INDEX], [IGNORE_INDEX, 2]]
