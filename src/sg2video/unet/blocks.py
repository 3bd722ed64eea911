"""Building blocks of the 3D UNet: time embedding, ResNet block, spatial / temporal attention, resampling.

Layout inside the network: frames are folded into the batch axis, `x` is `(b t) c h w` (clip-major: clip 0's
T frames, then clip 1's; the same order as `ClipBatch.graphs`). Convolutions and norms are therefore per frame:
plain channels-first Conv2d and GroupNorm. On CPU a Conv2d over (b t) costs the same as a Conv3d with a
(1, 3, 3) kernel (measured at 4 x 8x32x32, 32 and 64 channels, forward + backward: within 4%,
`experiments/bench/bench_unet.py --convs`), and this layout keeps GroupNorm per frame (GroupNorm on
`b c t h w` would pool statistics over frames) and lets spatial attention treat frames as batch items.
Frames meet only in `TemporalAttention`. Per-frame embeddings (time, conditioning) are `(b t) e`.

Attention runs on `torch.nn.functional.scaled_dot_product_attention`; heads are `ch // head_dim`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `groups` that divides `channels`."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def num_heads(channels: int, head_dim: int) -> int:
    """Heads of width `head_dim` when they tile `channels`, else one head over all channels."""
    return channels // head_dim if channels >= head_dim and channels % head_dim == 0 else 1


class TimestepEmbedding(nn.Module):
    """Diffusion step (any shape, long or float) -> (..., emb_dim): sinusoid of width `dim`, then an MLP."""

    def __init__(self, dim: int, emb_dim: int, max_period: float = 10000.0):
        super().__init__()
        assert dim % 2 == 0, f"sinusoid width must be even, got {dim}"
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[..., None] * self.freqs
        return self.mlp(torch.cat((angles.cos(), angles.sin()), dim=-1))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the per-frame embedding as scale/shift after the second norm (ADM)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int = 8, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:
        """x: (b t) c h w; emb_act: (b t) e, the embedding after its SiLU (shared by all blocks)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = rearrange(self.emb_proj(emb_act), "n (two c) -> two n c 1 1", two=2)
        h = torch.addcmul(shift, self.norm2(h), scale + 1)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


def _split_heads(qkv: torch.Tensor, heads: int):
    """(n, s, 3*c) -> q, k, v each (n, heads, s, c/heads)."""
    return rearrange(qkv, "n s (three h d) -> three n h s d", three=3, h=heads).unbind(0)


class SpatialAttention(nn.Module):
    """Self-attention among a frame's pixels; with `context_dim`, then cross-attention to that frame's tokens.

    The cross-attention output projection starts at zero, so a new conditional net computes what the
    unconditional one does. `region_bias` (grounded cross-attention): each head adds
    `REGION_GAIN * scale_h * cover` to its logits, cover being the share of the pixel that the key's box covers
    (the context's `cover(h, w)`). The scales start at REGION_INIT: a pixel inside an object's box weighs that
    object's key e^4 ~ 55 times more from the first step (the cross-attention output itself starts at zero, so the
    new net is still the unconditional one). Started at zero, the bias opened late and by seed: one seed drew 0.02
    objects at step 500 and ended at 0.951, objects kept 0.939, where another reached 0.996 / 0.997
    (experiments/results/ablate_cond.md). The fixed gain lets Adam's ~lr-sized steps move the bias quickly.
    """

    REGION_GAIN = 8.0
    REGION_INIT = 0.5

    def __init__(self, ch: int, head_dim: int = 32, context_dim: int | None = None, region_bias: bool = False):
        super().__init__()
        self.heads = num_heads(ch, head_dim)
        self.norm = nn.LayerNorm(ch)
        self.to_qkv = nn.Linear(ch, 3 * ch, bias=False)
        self.to_out = nn.Linear(ch, ch)
        self.has_context = context_dim is not None
        if self.has_context:
            self.cross_norm = nn.LayerNorm(ch)
            self.cross_q = nn.Linear(ch, ch, bias=False)
            self.cross_kv = nn.Linear(context_dim, 2 * ch, bias=False)
            self.cross_out = nn.Linear(ch, ch)
            nn.init.zeros_(self.cross_out.weight)
            nn.init.zeros_(self.cross_out.bias)
        self.region_scale = (nn.Parameter(torch.full((self.heads,), self.REGION_INIT))
                             if self.has_context and region_bias else None)

    def forward(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """x: (b t) c h w; context: a `CrossContext` (sg2video.unet.conditioning): keys (b t) l d_c, mask (b t) l
        bool (True = attend), and the keys' box cover at this resolution when grounded."""
        height, width = x.shape[-2:]
        tokens = rearrange(x, "n c h w -> n (h w) c")
        q, k, v = _split_heads(self.to_qkv(self.norm(tokens)), self.heads)
        attn = F.scaled_dot_product_attention(q, k, v)
        tokens = tokens + self.to_out(rearrange(attn, "n h s d -> n s (h d)"))
        if self.has_context:
            assert context is not None, "cross-attention block called without context"
            q = rearrange(self.cross_q(self.cross_norm(tokens)), "n s (h d) -> n h s d", h=self.heads)
            k, v = rearrange(self.cross_kv(context.keys), "n l (two h d) -> two n h l d", two=2, h=self.heads)
            mask = rearrange(context.mask, "n l -> n 1 1 l")
            cover = context.cover(height, width) if self.region_scale is not None else None
            if cover is not None:  # (n, hw, l) -> an additive bias per head, -inf where a key is masked
                bias = self.REGION_GAIN * self.region_scale[:, None, None] * cover[:, None].to(q.dtype)
                mask = bias.masked_fill(~mask, float("-inf"))
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            tokens = tokens + self.cross_out(rearrange(attn, "n h s d -> n s (h d)"))
        return rearrange(tokens, "n (h w) c -> n c h w", h=height)


def relative_position_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5 buckets of `key - query` offsets: exact for small |offset|, log-spaced up to `max_distance`.

    Half the buckets for each direction; with 32 buckets, offsets -7..7 each get their own bucket.
    """
    half = num_buckets // 2
    bucket = (relative > 0).long() * half
    distance = relative.abs()
    max_exact = half // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    far = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
    return bucket + torch.where(distance < max_exact, distance, far)


class TemporalAttention(nn.Module):
    """Self-attention across the frames at each pixel, with a learned relative-position bias per head.

    Bidirectional: prefix frames (clean, t=0) and noisy frames all see each other. The bias starts at zero.
    A `still` frame (B, T) bool (an image item in image-video co-training) attends to itself only and no other
    frame attends to it, as VDM masks temporal attention for its image batch.
    """

    def __init__(self, ch: int, head_dim: int = 32, num_buckets: int = 32, max_distance: int = 64):
        super().__init__()
        self.heads = num_heads(ch, head_dim)
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.norm = nn.LayerNorm(ch)
        self.to_qkv = nn.Linear(ch, 3 * ch, bias=False)
        self.to_out = nn.Linear(ch, ch)
        self.rel_bias = nn.Embedding(num_buckets, self.heads)
        nn.init.zeros_(self.rel_bias.weight)

    def position_bias(self, frames: int, device: torch.device) -> torch.Tensor:
        """(1, heads, T, T) additive attention bias."""
        pos = torch.arange(frames, device=device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return rearrange(self.rel_bias(buckets), "i j h -> 1 h i j")

    def forward(self, x: torch.Tensor, frames: int, still: torch.Tensor | None = None) -> torch.Tensor:
        """x: (b t) c h w with t = `frames`; still: optional (b, t) bool (see the class docstring)."""
        height = x.shape[-2]
        tokens = rearrange(x, "(b t) c h w -> (b h w) t c", t=frames)
        q, k, v = _split_heads(self.to_qkv(self.norm(tokens)), self.heads)
        if frames == 1:
            attn = v  # one key: softmax weight 1, skip the kernel
        elif still is not None:
            batch = still.shape[0]
            apart = (still[:, :, None] | still[:, None, :]) & ~torch.eye(frames, dtype=torch.bool, device=x.device)
            bias = self.position_bias(frames, x.device).to(q.dtype)
            bias = bias.masked_fill(apart[:, None], float("-inf"))[:, None]  # (b, 1, heads, t, t)
            q, k, v = (rearrange(a, "(b n) h t d -> b n h t d", b=batch) for a in (q, k, v))
            attn = rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=bias), "b n h t d -> (b n) h t d")
        else:
            bias = self.position_bias(frames, x.device).to(q.dtype)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        tokens = tokens + self.to_out(rearrange(attn, "n h t d -> n t (h d)"))
        return rearrange(tokens, "(b h w) t c -> (b t) c h w", h=height, w=x.shape[-1])


class Downsample(nn.Module):
    """Halve H and W (ceil), keep T: a stride-2 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to the skip's (H, W), optionally followed by a 3x3 conv.

    Without the conv (the default) the next ResBlock's 3x3 conv does the smoothing: same quality at small
    scale, and a full-resolution conv less per level.
    """

    def __init__(self, ch: int, conv: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1) if conv else nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))
