"""Box operations for the detection kind in plain PyTorch (torchvision is not required): IoU,
greedy non-maximum suppression (vectorised over images and classes) and CornerNet's Gaussian
radius. Boxes are [x1, y1, x2, y2] in pixels."""

from __future__ import annotations

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """Areas of boxes (..., 4); 0 for boxes with no extent."""
    return (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]).clamp_min(
        0
    )


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of every box of `a` (..., M, 4) with every box of `b`
    (..., K, 4): shape (..., M, K); 0 where both boxes have no area."""
    top_left = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    bottom_right = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (bottom_right - top_left).clamp_min(0).prod(-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def greedy_keep(suppresses: Tensor) -> Tensor:
    """Greedy NMS on boxes sorted by decreasing score, from `suppresses` (..., M, M) bool
    (box i would remove box j): which boxes are kept (..., M).

    Greedy NMS keeps box j when no earlier KEPT box suppresses it. That rule has one fixed
    point (each box depends only on earlier ones), so iterating it from "keep all" reaches it:
    after t rounds the first t boxes are settled, and a round that changes nothing is done;
    each round is one batched tensor operation, and suppression chains are short in practice.
    """
    m = suppresses.shape[-1]
    earlier = torch.ones(m, m, dtype=torch.bool, device=suppresses.device).triu(1)
    suppresses = suppresses & earlier
    keep = torch.ones(suppresses.shape[:-1], dtype=torch.bool, device=suppresses.device)
    for _ in range(m + 1):
        settled = ~(suppresses & keep.unsqueeze(-1)).any(-2)
        if torch.equal(settled, keep):
            break
        keep = settled
    return keep


def batched_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, valid: Tensor, iou: float
) -> tuple[Tensor, Tensor]:
    """Class-wise greedy NMS for a batch of images at once: boxes (N, M, 4), scores, classes
    and `valid` (N, M) (invalid boxes neither count nor suppress). Returns (order, keep): each
    image's boxes by decreasing score (N, M) indices, and whether the box at that place of the
    order is kept (N, M)."""
    order = torch.sort(scores.masked_fill(~valid, -torch.inf), dim=1, descending=True, stable=True)
    idx = order.indices
    boxes = boxes.gather(1, idx.unsqueeze(-1).expand(-1, -1, 4))
    classes, valid = classes.gather(1, idx), valid.gather(1, idx)
    same = classes[:, :, None] == classes[:, None, :]
    both = valid[:, :, None] & valid[:, None, :]
    keep = greedy_keep((box_iou(boxes, boxes) > iou) & same & both)
    return idx, keep & valid


def nms(boxes: Tensor, scores: Tensor, iou: float) -> Tensor:
    """Greedy non-maximum suppression (as torchvision.ops.nms): the indices of the boxes
    (M, 4) kept, by decreasing score; a box is removed when a higher-scoring kept box
    overlaps it with IoU > `iou`."""
    m = boxes.shape[0]
    ones = torch.ones(1, m, dtype=torch.bool, device=boxes.device)
    same_class = torch.zeros(1, m, dtype=torch.long, device=boxes.device)
    order, keep = batched_nms(boxes[None], scores[None], same_class, ones, iou)
    return order[0][keep[0]]


def gaussian_radius(height: Tensor, width: Tensor, min_overlap: float = 0.7) -> Tensor:
    """CornerNet's Gaussian radius (Law & Deng 2018), as CenterNet's code uses it: the
    smallest of three radii within which a corner shift keeps IoU >= `min_overlap` with the
    box (height, width); the code's roots are (b + sqrt(b² − 4ac)) / 2, kept as published."""
    hw, total = height * width, height + width
    r1 = (total + torch.sqrt(total**2 - 4 * hw * (1 - min_overlap) / (1 + min_overlap))) / 2
    r2 = (2 * total + torch.sqrt((2 * total) ** 2 - 16 * (1 - min_overlap) * hw)) / 2
    b3 = -2 * min_overlap * total
    r3 = (b3 + torch.sqrt(b3**2 - 16 * min_overlap * (min_overlap - 1) * hw)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)
