"""sg2im's scene layout (Johnson et al. 2018, section 3.2): each object's vector painted into its box through
its soft mask; and the crops its object discriminator sees. Boxes are (x0, y0, x1, y1) in [0, 1] of the frame.

Both are bilinear resamplings (`grid_sample`, pixel centres, zero outside): a box's pixel (i, j) of an H x W
frame sits at ((j + 0.5) / W, (i + 0.5) / H), and reads the mask at that point's place inside the box.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _centres(n: int, device, dtype) -> torch.Tensor:
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) / n


def place_masks(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Masks (N, m, m) laid into their boxes (N, 4) on an H x W frame: (N, H, W), zero outside each box."""
    n = masks.shape[0]
    xs, ys = _centres(width, masks.device, masks.dtype), _centres(height, masks.device, masks.dtype)
    x0, y0, x1, y1 = boxes.to(masks.dtype).unbind(-1)
    # where each frame pixel falls inside its box, in grid_sample's [-1, 1] coordinates of the mask
    u = 2 * (xs[None] - x0[:, None]) / (x1 - x0).clamp_min(1e-4)[:, None] - 1  # (N, W)
    v = 2 * (ys[None] - y0[:, None]) / (y1 - y0).clamp_min(1e-4)[:, None] - 1  # (N, H)
    grid = torch.stack(torch.broadcast_tensors(u[:, None, :], v[:, :, None]), dim=-1)  # (N, H, W, 2)
    if n == 0:
        return masks.new_zeros(0, height, width)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def splat_layout(vectors: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor,
                 height: int, width: int) -> torch.Tensor:
    """The scene layout: sum over objects of vector x mask placed in its box.

    vectors (..., K, D), masks (..., K, m, m), boxes (..., K, 4), valid (..., K) bool (padding objects add
    nothing) -> (..., D, H, W).
    """
    lead, K, m = vectors.shape[:-2], vectors.shape[-2], masks.shape[-1]
    placed = place_masks(masks.reshape(-1, m, m), boxes.reshape(-1, 4), height, width)
    placed = placed.reshape(*lead, K, height, width) * valid[..., None, None].to(placed.dtype)
    return torch.einsum("...kd,...khw->...dhw", vectors, placed)


def crop_boxes(frames: torch.Tensor, boxes: torch.Tensor, frame_index: torch.Tensor, size: int) -> torch.Tensor:
    """Crops of `frames` (F, C, H, W) at `boxes` (N, 4) of frame `frame_index` (N,), resized to size x size
    (bilinear): (N, C, size, size). sg2im's object discriminator sees these."""
    n = boxes.shape[0]
    if n == 0:
        return frames.new_zeros(0, frames.shape[1], size, size)
    t = _centres(size, frames.device, frames.dtype)
    x0, y0, x1, y1 = boxes.to(frames.dtype).unbind(-1)
    gx = 2 * (x0[:, None] + t[None] * (x1 - x0)[:, None]) - 1  # (N, size): frame coordinates in [-1, 1]
    gy = 2 * (y0[:, None] + t[None] * (y1 - y0)[:, None]) - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(frames[frame_index], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def foreground_masks(crops: torch.Tensor, background: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Target masks where a dataset gives none: a crop's pixels that differ from its frame's background colour
    (N, C) by more than `threshold` in some channel (values in [-1, 1]). Exact in the shapes world (objects on a
    plain background, never overlapping); a rough proxy on photographs, which is why sg2im's default weight of
    the mask loss, 0, is kept."""
    return ((crops - background[:, :, None, None]).abs().amax(dim=1) > threshold).to(crops.dtype)


def border_colour(frames: torch.Tensor) -> torch.Tensor:
    """Each frame's (F, C, H, W) background colour: the median of its one-pixel border, (F, C)."""
    border = torch.cat([frames[..., 0, :], frames[..., -1, :], frames[..., :, 0], frames[..., :, -1]], dim=-1)
    return border.median(dim=-1).values
