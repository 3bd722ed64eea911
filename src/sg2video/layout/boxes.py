"""Box arithmetic the layout stage shares: the model's box space, overlaps and moves.

Boxes at the edges are `(x0, y0, x1, y1)` in [0, 1] (the graph JSON's and `SceneGraph.boxes`' layout). Inside
the layout model a box is `(cx, cy, w, h)` each mapped from [0, 1] to [-1, 1] ("model space"), so a centre and a
size are separate coordinates the denoiser can move independently, and the diffusion's x0 clamp keeps every
coordinate in range.
"""
from __future__ import annotations

import torch


def to_model_space(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) x0 y0 x1 y1 in [0, 1] -> (..., 4) cx cy w h in [-1, 1]."""
    lo, hi = boxes[..., :2], boxes[..., 2:]
    return torch.cat([(lo + hi) / 2, hi - lo], dim=-1) * 2 - 1


def from_model_space(values: torch.Tensor) -> torch.Tensor:
    """(..., 4) cx cy w h in [-1, 1] -> (..., 4) x0 y0 x1 y1, clipped to [0, 1] (a box never leaves the frame)."""
    unit = (values.clamp(-1, 1) + 1) / 2
    centre, size = unit[..., :2], unit[..., 2:]
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1).clamp(0, 1)


def centres(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) x0 y0 x1 y1 -> (..., 2) centre x, y."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2


def pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """(..., K, 4) x0 y0 x1 y1 -> (..., K, K) intersection over union (0 for empty boxes)."""
    a, b = boxes[..., :, None, :], boxes[..., None, :, :]
    inter_w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    inter_h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = inter_w * inter_h
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    union = area[..., :, None] + area[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def moves(boxes: torch.Tensor) -> torch.Tensor:
    """(..., T, 4) one object's boxes over frames -> (..., T - 1) distance its centre travels per frame."""
    c = centres(boxes)
    return (c[..., 1:, :] - c[..., :-1, :]).norm(dim=-1)
