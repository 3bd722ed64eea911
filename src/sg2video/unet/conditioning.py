"""How a scene graph reaches the UNet: the `Conditioning` batch and the three ways of injecting it.

Modes (`UNet3D(cond=...)`):
- `crossattn` (SGDiff): every frame's pixels attend to that frame's local graph tokens, plus its global vector
  as one more token, in the spatial attention blocks (`CrossAttnContext` builds keys and key mask).
- `concat` (VDM): the frame's global vector, followed by `concat_slots` object vectors (the graph's first objects,
  in graph order; zero for absent ones), is concatenated to the frame's time embedding (`ConcatVector`), as VDM
  concatenates its text condition; every ResBlock then sees both through its scale/shift.
- `layout` (sg2im): boxes are rasterised at the input resolution into per-object embedding maps, concatenated
  to the input channels (`LayoutMaps`).
- `none`: unconditional.

Classifier-free guidance: `drop_cond` (B,) bool replaces a clip's condition by learned null embeddings: the
null token (always a key, so even an empty graph has one key to attend to) is then the only key, the null
global vector replaces the global vector, and the layout maps are zero. `cond=None` in a conditional mode
means every clip is dropped. Prefix frames (clean context frames of long-video sampling) need nothing here:
they are ordinary frames whose timestep is 0.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from einops import rearrange
from torch import nn

from sg2video.errors import ConfigError

COND_MODES = ("crossattn", "concat", "layout", "none")


def check_cond_mode(mode: str) -> str:
    if mode not in COND_MODES:
        raise ConfigError(f"model.cond={mode!r} is not a conditioning mode (accepted: {', '.join(COND_MODES)})")
    return mode


@dataclass
class Conditioning:
    """A clip batch's per-frame graph condition, from the frozen encoder to the UNet: the one type both use.

    Axes: B clips, T frames, L local tokens, K objects, S concat slots, C the condition width (encoder.cond_dim).
    `sg2video.denoiser.encode_condition` fills the encoder's part; the trainable `Denoiser` adds `layout_embed`
    or `slots` (and class keys to `tokens`) with `dataclasses.replace`; the UNet reads what its mode needs. Any
    field may be None when nothing produced it.
    """

    tokens: torch.Tensor | None = None  # (B, T, L, C) local graph tokens (triples, then objects), padded
    token_mask: torch.Tensor | None = None  # (B, T, L) bool, True = real token (None: all real)
    global_vec: torch.Tensor | None = None  # (B, T, C) one vector per frame graph
    obj_classes: torch.Tensor | None = None  # (B, T, K) long: each object's class
    obj_tokens: torch.Tensor | None = None  # (B, T, K, C) each object's token (zero past the token cap)
    layout_boxes: torch.Tensor | None = None  # (B, T, K, 4) x0, y0, x1, y1 in [0, 1] (given, predicted or sampled)
    layout_mask: torch.Tensor | None = None  # (B, T, K) bool, True = real object (None: all real)
    layout_embed: torch.Tensor | None = None  # (B, T, K, C) the vector painted into each object's box (layout mode)
    slots: torch.Tensor | None = None  # (B, T, S, C) object vectors for concat mode's slots, zero where absent
    still: torch.Tensor | None = None  # (B, T) bool: frames of image items (co-training), kept apart in time

    def map(self, fn) -> "Conditioning":
        """Every tensor field through `fn` (None stays None)."""
        return Conditioning(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                               for f in fields(self)})

    def repeat_batch(self, times: int) -> "Conditioning":
        return self.map(lambda v: v.repeat(times, *([1] * (v.dim() - 1))))

    def frames(self, start: int, end: int) -> "Conditioning":
        return self.map(lambda v: v[:, start:end])

    def to(self, device) -> "Conditioning":
        return self.map(lambda v: v.to(device))

    @staticmethod
    def cat_frames(parts: list["Conditioning"]) -> "Conditioning":
        """Concatenate along T, padding L and K to the largest. A field missing from every part stays None;
        `still` missing from some parts counts as False there; any other field must be in all or none."""
        out = {}
        for f in fields(Conditioning):
            values = [getattr(p, f.name) for p in parts]
            if all(v is None for v in values):
                out[f.name] = None
                continue
            if any(v is None for v in values):
                if f.name != "still":
                    raise ValueError(f"cannot concatenate conditions of which only some have {f.name}")
                batch, device = parts[0].global_vec.shape[0], parts[0].global_vec.device
                values = [v if v is not None else torch.zeros(batch, p.global_vec.shape[1], dtype=torch.bool,
                                                              device=device) for v, p in zip(values, parts)]
                if not any(v.any() for v in values):
                    out[f.name] = None
                    continue
            if values[0].dim() >= 3:
                width = max(v.shape[2] for v in values)
                values = [_pad_dim(v, 2, width) for v in values]
            out[f.name] = torch.cat(values, dim=1)
        return Conditioning(**out)


def _pad_dim(value: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    if value.shape[dim] == size:
        return value
    shape = list(value.shape)
    shape[dim] = size - value.shape[dim]
    return torch.cat([value, value.new_zeros(shape)], dim=dim)


def _keep(drop: torch.Tensor | None, batch: int, frames: int, device: torch.device) -> torch.Tensor:
    """(b t) bool: True where the clip's condition is kept."""
    if drop is None:
        return torch.ones(batch * frames, dtype=torch.bool, device=device)
    assert drop.shape == (batch,), f"drop_cond must be ({batch},), got {tuple(drop.shape)}"
    return (~drop.to(device=device, dtype=torch.bool)).repeat_interleave(frames)


def _frames_first(value: torch.Tensor, batch: int, frames: int, name: str) -> torch.Tensor:
    """(B, T, ...) -> ((B T), ...), checking B and T against the video."""
    expected = (batch, frames)
    assert value.shape[:2] == expected, f"{name} must start with (B, T) = {expected}, got {tuple(value.shape)}"
    return value.flatten(0, 1)


class CrossAttnContext(nn.Module):
    """Keys for cross-attention: [null token, local tokens..., global vector] per frame, with a key mask."""

    def __init__(self, cond_dim: int):
        super().__init__()
        self.null_token = nn.Parameter(torch.randn(cond_dim) * 0.02)

    def forward(
        self, cond: Conditioning | None, drop: torch.Tensor | None, batch: int, frames: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> context ((b t), 1 + L (+1), D_c) and mask ((b t), 1 + L (+1)) bool, True = attend."""
        device = self.null_token.device
        keep = _keep(drop, batch, frames, device)
        n = batch * frames
        parts = [self.null_token.expand(n, 1, -1)]
        masks = [torch.ones(n, 1, dtype=torch.bool, device=device)]
        if cond is not None and cond.tokens is not None:
            tokens = _frames_first(cond.tokens, batch, frames, "tokens")
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)
            if cond.token_mask is not None:
                mask = _frames_first(cond.token_mask, batch, frames, "token_mask").to(torch.bool)
            parts.append(tokens.to(self.null_token.dtype))
            masks.append(mask & keep[:, None])
        if cond is not None and cond.global_vec is not None:
            parts.append(_frames_first(cond.global_vec, batch, frames, "global_vec")[:, None].to(self.null_token.dtype))
            masks.append(keep[:, None])
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)


class ConcatVector(nn.Module):
    """Concat mode's vector per frame: [global vector, slot 1, ..., slot S] (or the learned null vector of the same
    width for a dropped clip), concatenated to the time embedding as it is (VDM), width D_c * (1 + S)."""

    def __init__(self, cond_dim: int, slots: int = 0):
        super().__init__()
        self.cond_dim, self.slots = cond_dim, slots
        self.width = cond_dim * (1 + slots)
        self.null_vec = nn.Parameter(torch.randn(self.width) * 0.02)

    def forward(self, cond: Conditioning | None, drop: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor:
        """-> ((b t), D_c * (1 + S))."""
        if cond is None or cond.global_vec is None:
            return self.null_vec.expand(batch * frames, -1)
        parts = [_frames_first(cond.global_vec, batch, frames, "global_vec").to(self.null_vec.dtype)]
        if self.slots:
            slots = cond.slots
            if slots is None:
                slots = parts[0].new_zeros(batch, frames, self.slots, self.cond_dim)
            slots = _frames_first(slots, batch, frames, "slots")
            assert slots.shape[1:] == (self.slots, self.cond_dim), \
                f"slots must be (B, T, {self.slots}, {self.cond_dim}), got {tuple(cond.slots.shape)}"
            parts.append(slots.to(self.null_vec.dtype).flatten(1))
        vec = torch.cat(parts, dim=1)
        keep = _keep(drop, batch, frames, vec.device)
        return torch.where(keep[:, None], vec, self.null_vec)


def box_coverage(lo: torch.Tensor, hi: torch.Tensor, cells: int) -> torch.Tensor:
    """Share of each of `cells` equal cells of [0, 1] that the interval [lo, hi] covers: (...) -> (..., cells).

    Area coverage rather than a pixel-centre test, so a box thinner than a pixel still leaves its mass
    and the maps shrink consistently with the resolution (latent maps are the pixel maps averaged).
    """
    edges = torch.linspace(0, 1, cells + 1, device=lo.device, dtype=lo.dtype)
    overlap = torch.minimum(hi[..., None], edges[1:]) - torch.maximum(lo[..., None], edges[:-1])
    return overlap.clamp(min=0) * cells


def rasterize_boxes(boxes: torch.Tensor, values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-object values summed over each object's box, weighted by pixel coverage.

    boxes (N, K, 4) x0 y0 x1 y1 in [0, 1], values (N, K, C) -> maps (N, C, H, W).
    """
    cover_x = box_coverage(boxes[..., 0], boxes[..., 2], width)  # (N, K, W)
    cover_y = box_coverage(boxes[..., 1], boxes[..., 3], height)  # (N, K, H)
    weighted = rearrange(values, "n k c -> n k c 1") * rearrange(cover_y, "n k h -> n k 1 h")
    maps = torch.einsum("nkq,nkw->nqw", weighted.flatten(2), cover_x)  # q = (c h)
    return rearrange(maps, "n (c h) w -> n c h w", c=values.shape[-1])


def box_coordinates(lo: torch.Tensor, hi: torch.Tensor, cells: int) -> torch.Tensor:
    """Each cell centre's position inside the interval [lo, hi], scaled to [-1, 1]: (...) -> (..., cells)."""
    centres = (torch.arange(cells, device=lo.device, dtype=lo.dtype) + 0.5) / cells
    span = (hi - lo).clamp(min=1e-6)[..., None]
    return (2 * (centres - lo[..., None]) / span - 1).clamp(-1, 1)


class LayoutMaps(nn.Module):
    """Per-object embeddings projected to `channels` and painted into their boxes, plus two channels holding
    each pixel's position inside its object's box (x, y in [-1, 1]): ((b t), channels + 2, H, W).

    The class embedding says what goes in a box; the in-box coordinates let a few convolutions draw its shape
    (a circle is u^2 + v^2 <= 1 there) instead of having to find the box's edges first.
    """

    coord_channels = 2

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.channels = channels
        self.out_channels = channels + self.coord_channels
        self.proj = nn.Linear(cond_dim, channels)

    def forward(
        self, cond: Conditioning | None, drop: torch.Tensor | None, batch: int, frames: int, height: int, width: int
    ) -> torch.Tensor:
        n = batch * frames
        device, dtype = self.proj.weight.device, self.proj.weight.dtype
        if cond is None or cond.layout_boxes is None or cond.layout_embed is None:
            return torch.zeros(n, self.out_channels, height, width, device=device, dtype=dtype)
        boxes = _frames_first(cond.layout_boxes, batch, frames, "layout_boxes").to(dtype)
        values = self.proj(_frames_first(cond.layout_embed, batch, frames, "layout_embed").to(dtype))
        weight = _keep(drop, batch, frames, device)[:, None].expand(n, boxes.shape[1])
        if cond.layout_mask is not None:
            weight = weight & _frames_first(cond.layout_mask, batch, frames, "layout_mask").to(torch.bool)
        weight = weight.to(dtype)
        maps = rasterize_boxes(boxes, values * weight[..., None], height, width)
        cover_x = box_coverage(boxes[..., 0], boxes[..., 2], width) * weight[..., None]  # (N, K, W)
        cover_y = box_coverage(boxes[..., 1], boxes[..., 3], height) * weight[..., None]  # (N, K, H)
        u = box_coordinates(boxes[..., 0], boxes[..., 2], width)
        v = box_coordinates(boxes[..., 1], boxes[..., 3], height)
        u_map = torch.einsum("nkh,nkw->nhw", cover_y, cover_x * u)
        v_map = torch.einsum("nkh,nkw->nhw", cover_y * v, cover_x)
        return torch.cat([maps, u_map[:, None], v_map[:, None]], dim=1)
