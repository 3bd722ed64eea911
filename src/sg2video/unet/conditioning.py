"""How a scene graph reaches the UNet: the `Conditioning` batch and the ways of injecting it.

Modes (`UNet3D(cond=...)`), named as in SGDiff's code lineage (latent diffusion's `conditioning_key`):
- `concat`: the graph's objects painted into their boxes (sampled by the layout stage, or given) as embedding
  maps concatenated to the input channels (`LayoutMaps`): LDM's spatially aligned concat condition.
- `crossattn`: every frame's pixels attend to that frame's graph tokens (local triple tokens, one key per object,
  the global vector as one more key) in the spatial attention blocks (`CrossAttnContext`). Grounded by default
  (GLIGEN, LayoutDiffusion): each object's key also carries its box in that frame (Fourier features through a
  gated MLP, `BoxGrounding`), and each pixel's attention to an object's key is raised by a learned amount where
  the object's box covers the pixel (`region_bias` of the spatial attention, open from the start). `grounding=False` is SGDiff's
  graph-only setting (an ablation: the tokens carry no position).
- `hybrid`: `concat` and grounded `crossattn` at once (LDM's hybrid).
- `adm`: the frame's global vector, followed by `adm_slots` object vectors (the graph's first objects, in graph
  order; zero for absent ones), concatenated to the frame's time embedding (`AdmVector`): LDM's `adm`, VDM's
  text conditioning. One vector per frame scales and shifts every pixel alike, so it cannot say where things go.
- `none`: unconditional.
`layout` is the old name of `concat`, and `concat` was the old name of `adm` (`OLD_MODE_NAMES`; checkpoints
written before the rename are read with the old meaning).

Classifier-free guidance: `drop_cond` (B,) bool replaces a clip's condition by learned null embeddings: the
null token (always a key, so even an empty graph has one key to attend to) is then the only key, the null
adm vector replaces the adm vector, and the layout maps are zero. `cond=None` in a conditional mode
means every clip is dropped. Prefix frames (clean context frames of long-video sampling) need nothing here:
they are ordinary frames whose timestep is 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import math

import torch
from einops import rearrange
from torch import nn

from sg2video.errors import ConfigError

COND_MODES = ("concat", "crossattn", "hybrid", "adm", "none")
OLD_MODE_NAMES = {"layout": "concat"}  # accepted this release with a notice (the name before SGDiff's)
MAP_MODES = ("concat", "hybrid")  # the objects painted into their boxes on the input channels
ATTN_MODES = ("crossattn", "hybrid")  # graph tokens as cross-attention context


def check_cond_mode(mode: str) -> str:
    if mode not in COND_MODES:
        raise ConfigError(f"model.cond={mode!r} is not a conditioning mode (accepted: {', '.join(COND_MODES)}; "
                          f"old names: {', '.join(OLD_MODE_NAMES)})")
    return mode


def reads_boxes(mode: str, grounding: bool = True) -> bool:
    """Whether a mode reads the layout (boxes sampled by the layout stage, or given): concat and hybrid always,
    crossattn when grounded."""
    return mode in MAP_MODES or (mode == "crossattn" and bool(grounding))


def checkpoint_mode(model_cfg: dict) -> str:
    """The mode a checkpoint's model config means. Configs written before the rename have no `grounding` key:
    their `layout` is today's concat and their `concat` today's adm."""
    mode = str(model_cfg.get("cond", "none"))
    if "grounding" not in model_cfg:
        return {"layout": "concat", "concat": "adm"}.get(mode, mode)
    return OLD_MODE_NAMES.get(mode, mode)


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
    layout_embed: torch.Tensor | None = None  # (B, T, K, C) the vector painted into each object's box (concat)
    token_boxes: torch.Tensor | None = None  # (B, T, L, 4) each token's box (grounded crossattn); zero-size where
                                             # a token has none (triples, past the object count)
    slots: torch.Tensor | None = None  # (B, T, S, C) object vectors for adm mode's slots, zero where absent
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


@dataclass
class CrossContext:
    """What the spatial attention blocks attend to, frames folded into the batch (n = b t): `keys` (n, L, D_c),
    `mask` (n, L) bool (True = attend) and, when grounded, `boxes` (n, L, 4): each key's box (zero-size for
    keys without one)."""

    keys: torch.Tensor
    mask: torch.Tensor
    boxes: torch.Tensor | None = None
    _covers: dict = field(default_factory=dict, repr=False)

    def cover(self, height: int, width: int) -> torch.Tensor | None:
        """`region_cover` of the boxes at one resolution (None without boxes), computed once per resolution."""
        if self.boxes is None:
            return None
        if (height, width) not in self._covers:
            self._covers[height, width] = region_cover(self.boxes, height, width)
        return self._covers[height, width]


class CrossAttnContext(nn.Module):
    """Keys for cross-attention: [null token, local tokens..., global vector] per frame, with a key mask and,
    when the condition has `token_boxes`, each key's box."""

    def __init__(self, cond_dim: int):
        super().__init__()
        self.null_token = nn.Parameter(torch.randn(cond_dim) * 0.02)

    def forward(self, cond: Conditioning | None, drop: torch.Tensor | None, batch: int, frames: int) -> CrossContext:
        device = self.null_token.device
        keep = _keep(drop, batch, frames, device)
        n = batch * frames
        parts = [self.null_token.expand(n, 1, -1)]
        masks = [torch.ones(n, 1, dtype=torch.bool, device=device)]
        boxes = None
        if cond is not None and cond.tokens is not None:
            tokens = _frames_first(cond.tokens, batch, frames, "tokens")
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)
            if cond.token_mask is not None:
                mask = _frames_first(cond.token_mask, batch, frames, "token_mask").to(torch.bool)
            parts.append(tokens.to(self.null_token.dtype))
            masks.append(mask & keep[:, None])
            if cond.token_boxes is not None:
                boxes = _frames_first(cond.token_boxes, batch, frames, "token_boxes").to(self.null_token.dtype)
        if cond is not None and cond.global_vec is not None:
            parts.append(_frames_first(cond.global_vec, batch, frames, "global_vec")[:, None].to(self.null_token.dtype))
            masks.append(keep[:, None])
        keys, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)
        if boxes is not None:  # the null token before the tokens and the global vector after them have no box
            boxes = torch.cat((boxes.new_zeros(n, 1, 4), boxes, boxes.new_zeros(n, keys.shape[1] - 1 - boxes.shape[1], 4)), 1)
        return CrossContext(keys, mask, boxes)


def fourier_features(values: torch.Tensor, bands: int) -> torch.Tensor:
    """(..., D) in [0, 1] -> (..., D * 2 * bands): sin and cos of 2^k * pi * value for k < bands (GLIGEN embeds
    boxes this way: raw coordinates are too smooth a function for an MLP to tell nearby boxes apart)."""
    freqs = math.pi * 2.0 ** torch.arange(bands, device=values.device, dtype=values.dtype)
    angles = values[..., None] * freqs  # (..., D, bands)
    return torch.cat((angles.sin(), angles.cos()), dim=-1).flatten(-2)


class BoxGrounding(nn.Module):
    """GLIGEN's grounding token, added to an object's key: MLP([object vector, Fourier(box)]) through a gate
    tanh(gamma) that starts at 0, so a new grounded net computes what the graph-only one does until the gate
    opens. (B, T, K, C) vectors, (B, T, K, 4) boxes -> (B, T, K, C)."""

    def __init__(self, cond_dim: int, bands: int = 8, hidden: int | None = None):
        super().__init__()
        self.bands = bands
        hidden = hidden or 2 * cond_dim
        self.mlp = nn.Sequential(nn.Linear(cond_dim + 4 * 2 * bands, hidden), nn.SiLU(), nn.Linear(hidden, cond_dim))
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, vectors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        embedded = self.mlp(torch.cat((vectors, fourier_features(boxes.to(vectors.dtype), self.bands)), dim=-1))
        return vectors + torch.tanh(self.gate) * embedded


def region_cover(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, L, 4) boxes -> (n, H*W, L): the share of each pixel that each key's box covers (0 for zero-size
    boxes), the term a grounded cross-attention adds to its logits (scaled per head)."""
    cover_x = box_coverage(boxes[..., 0], boxes[..., 2], width)  # (n, L, W)
    cover_y = box_coverage(boxes[..., 1], boxes[..., 3], height)  # (n, L, H)
    return rearrange(torch.einsum("nlh,nlw->nhwl", cover_y, cover_x), "n h w l -> n (h w) l")


class AdmVector(nn.Module):
    """adm mode's vector per frame: [global vector, slot 1, ..., slot S] (or the learned null vector of the same
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
