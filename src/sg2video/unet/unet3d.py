"""The graph-conditioned video denoiser: a VDM-style 3D UNet with factorised space-time attention.

`UNet3D(...)(x, t, cond=None, drop_cond=None)`: x (B, C_in, T, H, W) -> (B, C_out, T, H, W).

Shape of the net (levels i = 0 .. len(dim_mults) - 1, width dim * dim_mults[i]):
  init conv 3x3 per frame (a 1x3x3 kernel: frames meet only in temporal attention, so an image (T=1) and
  a clip go through the same weights)
  down level i: num_res_blocks x [ResBlock, spatial attention if i in spatial_attn_levels (+ cross-attention
               in crossattn and hybrid modes), temporal attention if i in temporal_attn_levels], then a stride-2 conv
               (not after the last level). Every block's output is a skip.
  middle:      ResBlock, attention as the deepest level has it (one stage: the deepest level's own blocks
               already run at this resolution; a second one would add ~10% parameters for little)
  up level i:  nearest upsample (not at the last level), then num_res_blocks x [concat skip, ResBlock, attention
               as down level i]
  out:         GroupNorm, SiLU, 3x3 conv per frame.
Down/up sampling is spatial only; T is never resampled. The per-frame time embedding (concatenated with the
graph's vector in adm mode, as VDM does) modulates every ResBlock of its frame. With `coords`, two input
channels give each pixel its position (x, y in [-1, 1]; CoordConv), so attention and convolutions know where
"left" and "above" are. The modes themselves: sg2video.unet.conditioning.

Per-mode defaults (arguments left None), the best settings measured for each mode
(experiments/results/cond_modes.md, ablate_cond.md): crossattn and hybrid attend to the graph at every level,
crossattn with coords; adm gets coords and temporal attention at every level (its objects otherwise pop in and
out); concat and none attend at the deepest level only, without coords (their maps, or nothing, need no
positions).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sg2video.errors import ConfigError
from sg2video.unet.blocks import (
    Downsample,
    ResBlock,
    SpatialAttention,
    TemporalAttention,
    TimestepEmbedding,
    Upsample,
    group_norm,
)
from sg2video.unet.conditioning import (
    Conditioning,
    CrossAttnContext,
    AdmVector,
    ATTN_MODES,
    LayoutMaps,
    MAP_MODES,
    check_cond_mode,
    checkpoint_mode,
)


def mode_defaults(cond: str, levels: int) -> dict[str, Any]:
    """The settings a mode gets for the arguments left None (see the module docstring)."""
    return {"spatial_attn_levels": tuple(range(levels)) if cond in ATTN_MODES else (levels - 1,),
            "temporal_attn_levels": tuple(range(levels)) if cond == "adm" else (levels - 1,),
            "coords": cond in ("crossattn", "adm")}


def _levels(name: str, levels: Sequence[int] | None, count: int) -> frozenset[int]:
    chosen = frozenset(int(i) for i in (levels or ()))
    bad = sorted(i for i in chosen if not 0 <= i < count)
    if bad:
        raise ConfigError(
            f"model.{name}={list(levels)} names levels {bad}; accepted: 0..{count - 1} (one per dim_mults entry)"
        )
    return chosen


class _Stage(nn.Module):
    """ResBlock followed by the level's optional spatial (+cross) and temporal attention."""

    def __init__(self, res: ResBlock, spatial: SpatialAttention | None, temporal: TemporalAttention | None):
        super().__init__()
        self.res, self.spatial, self.temporal = res, spatial, temporal

    def forward(self, x, emb_act, frames, context, still):
        x = self.res(x, emb_act)
        if self.spatial is not None:
            x = self.spatial(x, context)
        if self.temporal is not None:
            x = self.temporal(x, frames, still)
        return x


class UNet3D(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        dim: int = 64,
        dim_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        spatial_attn_levels: Sequence[int] | None = None,
        temporal_attn_levels: Sequence[int] | None = None,
        attn_head_dim: int = 32,
        cond: str = "none",
        cond_dim: int = 256,
        layout_channels: int = 8,
        norm_groups: int = 8,
        dropout: float = 0.0,
        upsample_conv: bool = False,
        temporal_buckets: int = 32,
        temporal_max_distance: int = 64,
        coords: bool | None = None,
        adm_slots: int = 0,
        grounding: bool = True,
        region_bias: bool = True,
    ):
        """cond_dim: width D_c of the graph tokens / global vector / object vectors (the encoder's output).

        spatial_attn_levels / temporal_attn_levels: indices into dim_mults; the middle block counts as the deepest
        level. crossattn mode puts its cross-attention in the spatial attention blocks, so it needs at least one.
        None (spatial_attn_levels, coords): the mode's default (`mode_defaults`).
        adm_slots: object vectors concatenated after the global vector in adm mode (0: the global vector alone).
        grounding (crossattn, hybrid): the condition's object keys carry boxes (`Denoiser` adds them) and, with
        `region_bias`, cross-attention is biased towards the keys whose boxes cover a pixel; False: graph only.
        """
        super().__init__()
        self.cond_mode = check_cond_mode(cond)
        dim_mults = tuple(int(m) for m in dim_mults)
        if not dim_mults or min(dim_mults) < 1 or dim < 1 or num_res_blocks < 1:
            raise ConfigError(
                f"model.dim={dim}, model.dim_mults={list(dim_mults)}, model.num_res_blocks={num_res_blocks}: "
                "need dim >= 1, a non-empty list of multipliers >= 1 and num_res_blocks >= 1"
            )
        levels = len(dim_mults)
        defaults = mode_defaults(self.cond_mode, levels)
        spatial_attn_levels = defaults["spatial_attn_levels"] if spatial_attn_levels is None else spatial_attn_levels
        temporal_attn_levels = defaults["temporal_attn_levels"] if temporal_attn_levels is None else temporal_attn_levels
        coords = defaults["coords"] if coords is None else bool(coords)
        if adm_slots < 0:
            raise ConfigError(f"model.adm_slots={adm_slots} must be >= 0")
        spatial = _levels("spatial_attn_levels", spatial_attn_levels, levels)
        temporal = _levels("temporal_attn_levels", temporal_attn_levels, levels)
        if self.cond_mode in ATTN_MODES and not spatial:
            raise ConfigError(f"model.cond={self.cond_mode} needs spatial attention somewhere: set model.spatial_attn_levels")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        emb_dim = 4 * dim
        context_dim = cond_dim if self.cond_mode in ATTN_MODES else None
        self.grounding = bool(grounding) and self.cond_mode in ATTN_MODES
        region = self.grounding and bool(region_bias)

        self.time_embed = TimestepEmbedding(dim, emb_dim)
        self.adm_vector = AdmVector(cond_dim, adm_slots) if self.cond_mode == "adm" else None
        self.adm_slots = adm_slots if self.adm_vector is not None else 0
        block_emb_dim = emb_dim + (self.adm_vector.width if self.adm_vector is not None else 0)
        self.cross_context = CrossAttnContext(cond_dim) if self.cond_mode in ATTN_MODES else None
        self.layout_maps = LayoutMaps(cond_dim, layout_channels) if self.cond_mode in MAP_MODES else None
        extra_in = self.layout_maps.out_channels if self.layout_maps is not None else 0
        self.coords = coords  # two input channels holding each pixel's position (x, y in [-1, 1]): CoordConv
        extra_in += 2 if coords else 0

        def stage(level: int, in_ch: int, out_ch: int) -> _Stage:
            return _Stage(
                ResBlock(in_ch, out_ch, block_emb_dim, norm_groups, dropout),
                SpatialAttention(out_ch, attn_head_dim, context_dim, region) if level in spatial else None,
                TemporalAttention(out_ch, attn_head_dim, temporal_buckets, temporal_max_distance)
                if level in temporal
                else None,
            )

        widths = [dim * m for m in dim_mults]
        self.init_conv = nn.Conv2d(in_channels + extra_in, dim, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_widths, ch = [], dim
        for level, width in enumerate(widths):
            self.down.append(nn.ModuleList())
            for _ in range(num_res_blocks):
                self.down[level].append(stage(level, ch, width))
                ch = width
                skip_widths.append(ch)
            if level < levels - 1:
                self.downsample.append(Downsample(ch))
        self.mid = stage(levels - 1, ch, ch)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(levels)):
            if level < levels - 1:
                self.upsample.append(Upsample(ch, upsample_conv))
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(stage(level, ch + skip_widths.pop(), widths[level]))
                ch = widths[level]
            self.up.append(blocks)
        self.out = nn.Sequential(group_norm(ch, norm_groups), nn.SiLU(), nn.Conv2d(ch, self.out_channels, 3, padding=1))

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: Conditioning | None = None,
        drop_cond: torch.Tensor | None = None,
        still: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, C_in, T, H, W); t (B, T) per-frame steps (prefix frames 0) or (B,); drop_cond (B,) bool;
        still (B, T) bool: frames of image items (image-video co-training) that temporal attention keeps
        apart, so each is denoised as an independent image (VDM's joint training)."""
        batch, channels, frames, height, width = x.shape
        assert channels == self.in_channels, f"expected {self.in_channels} input channels, got {channels}"
        if t.ndim == 1:
            t = t[:, None].expand(batch, frames)
        assert t.shape == (batch, frames), f"t must be (B,) or (B, T) = {(batch, frames)}, got {tuple(t.shape)}"
        if isinstance(drop_cond, bool):
            drop_cond = torch.full((batch,), drop_cond, dtype=torch.bool, device=x.device)

        emb = self.time_embed(rearrange(t, "b t -> (b t)"))
        if self.adm_vector is not None:
            emb = torch.cat((emb, self.adm_vector(cond, drop_cond, batch, frames).to(emb.dtype)), dim=1)
        emb_act = F.silu(emb)
        context = None
        if self.cross_context is not None:
            context = self.cross_context(cond, drop_cond, batch, frames)
            context.keys = context.keys.to(x.dtype)

        h = rearrange(x, "b c t h w -> (b t) c h w")
        if self.layout_maps is not None:
            maps = self.layout_maps(cond, drop_cond, batch, frames, height, width)
            h = torch.cat((h, maps.to(h.dtype)), dim=1)
        if self.coords:
            ys = torch.linspace(-1, 1, height, device=h.device, dtype=h.dtype)
            xs = torch.linspace(-1, 1, width, device=h.device, dtype=h.dtype)
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # (2, H, W): x, y
            h = torch.cat((h, grid.expand(h.shape[0], -1, -1, -1)), dim=1)
        h = self.init_conv(h)

        if still is not None:
            assert still.shape == (batch, frames), f"still must be (B, T) = {(batch, frames)}, got {tuple(still.shape)}"
            still = still.to(x.device) if bool(still.any()) else None
        args = (emb_act, frames, context, still)
        skips = []
        for level, blocks in enumerate(self.down):
            if level > 0:
                h = self.downsample[level - 1](h)
            for block in blocks:
                h = block(h, *args)
                skips.append(h)
        h = self.mid(h, *args)
        for i, blocks in enumerate(self.up):
            if i > 0:
                h = self.upsample[i - 1](h, skips[-1].shape[-2:])
            for block in blocks:
                h = block(torch.cat((h, skips.pop()), dim=1), *args)
        return rearrange(self.out(h), "(b t) c h w -> b c t h w", b=batch)


# model.<key> -> UNet3D argument: every key of the `model` group the net reads. The rest of the group
# (prefix_frames, class_tokens, name; cfg_dropout, prefix_dropout: old names of keys now in diffusion) have
# other readers; a key added to the net is added here too (tests/test_unet.py checks both sides).
NET_KEYS = {
    "dim": "dim", "dim_mults": "dim_mults", "num_res_blocks": "num_res_blocks",
    "spatial_attn_levels": "spatial_attn_levels", "temporal_attn_levels": "temporal_attn_levels",
    "attn_head_dim": "attn_head_dim", "cond": "cond", "layout_channels": "layout_channels",
    "norm_groups": "norm_groups", "dropout": "dropout", "upsample_conv": "upsample_conv", "coords": "coords",
    "adm_slots": "adm_slots", "grounding": "grounding", "region_bias": "region_bias",
}


def upgrade_model_config(model_cfg: dict) -> dict:
    """A `model` config in today's names. Written before the modes took SGDiff's names (no `grounding` key), its
    `layout` means concat, its `concat` adm (with `concat_slots`), and its crossattn had no grounding."""
    model_cfg = dict(model_cfg)
    old = "grounding" not in model_cfg
    model_cfg["cond"] = checkpoint_mode(model_cfg)
    if "concat_slots" in model_cfg:
        slots = model_cfg.pop("concat_slots")
        model_cfg.setdefault("adm_slots", slots)
    if old:
        model_cfg["grounding"] = False
    return model_cfg


def build_unet(model_cfg: Any, in_channels: int = 3, cond_dim: int = 256) -> UNet3D:
    """UNet3D from the `model` config group (a DictConfig or a dict), through NET_KEYS.

    `in_channels` (3, or the latent width) and `cond_dim` (`encoder.cond_dim`) come from the caller, so each is
    read in one place. A key the group does not have keeps UNet3D's default (older checkpoints' configs).
    """
    if not isinstance(model_cfg, dict):
        from omegaconf import OmegaConf

        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    model_cfg = upgrade_model_config(model_cfg)
    kwargs = {arg: model_cfg[key] for key, arg in NET_KEYS.items() if key in model_cfg}
    return UNet3D(in_channels=in_channels, cond_dim=cond_dim, **kwargs)
