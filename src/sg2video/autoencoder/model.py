"""A small convolutional KL autoencoder applied per frame: the latent space of latent video diffusion.

Frames are folded into the batch axis (`b c t h w -> (b t) c h w`), so the autoencoder sees single
images and knows nothing of time; the video model does the temporal work in its latent space.
Encoder and decoder are GroupNorm + SiLU ResNet blocks with one stride-2 convolution (or nearest
upsampling + conv) per factor of two, no attention: the shapes world needs no global context and the
network must train in minutes on a CPU.

Latent layout: `(B, Cz, T, H/f, W/f)` with `f = downsample`. `encode` returns latents multiplied by
`scale_factor` (a buffer, so checkpoints carry it; 1 until `fit_scale_factor` sets it), so the
diffusion model sees roughly unit variance; `decode` divides it out again.

Reconstruction loss is L1 + L2 on pixels (no perceptual term: everything runs offline without
pretrained networks; flat colours on black need none). With `foreground_weight` w > 0 every pixel unlike its
frame's background (`foreground_mask`) weighs 1 + w in both, normalised to a mean weight of 1: a world of small
sprites on black (household at 32 px) otherwise spends its capacity on the black. The KL term is the mean over latent elements of
KL(q(z|x) || N(0, I)) on unscaled latents, weighted by `kl_weight` (small: it only keeps latents bounded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sg2video.errors import ConfigError
from sg2video.unet.blocks import group_norm

FOREGROUND_THRESHOLD = 0.1  # foreground_mask: a channel this far (of [-1, 1]) from the frame's median colour
LOGVAR_RANGE = (-30.0, 20.0)  # clamp of the posterior's log-variance (as in LDM), for stable exp()
# The posterior's log-variance starts here rather than at 0: unit noise on small initial latents would
# drown the signal, and with a tiny kl_weight only the reconstruction loss pushes it down (slowly).
INITIAL_LOGVAR = -6.0


class ResBlock2d(nn.Module):
    """GroupNorm-SiLU-conv twice with a skip connection; 1x1 conv on the skip when widths differ."""

    def __init__(self, in_ch: int, out_ch: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        # each block starts as its skip path: the untrained network is shallow and trains much faster
        # (measured: twice the PSNR gain in the first 300 steps on the shapes world)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Upsample2d(nn.Module):
    """Nearest x2, then a 3x3 conv that may narrow the width (cheaper than convolving wide at the finer level)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _widths(base_channels: int, channel_mults: tuple[int, ...]) -> list[int]:
    return [base_channels * m for m in channel_mults]


class Encoder2d(nn.Module):
    """(N, C, H, W) -> (N, 2 Cz, H/f, W/f): posterior mean and log-variance stacked on channels."""

    def __init__(self, in_channels: int, base_channels: int, channel_mults: tuple[int, ...],
                 num_res_blocks: int, latent_channels: int, groups: int) -> None:
        super().__init__()
        widths = _widths(base_channels, channel_mults)
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        ch = widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers.append(ResBlock2d(ch, width, groups))
                ch = width
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        layers.append(ResBlock2d(ch, ch, groups))  # middle
        self.body = nn.Sequential(*layers)
        self.norm_out = group_norm(ch, groups)
        self.conv_out = nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)
        with torch.no_grad():
            self.conv_out.bias[latent_channels:].fill_(INITIAL_LOGVAR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.conv_in(x))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder2d(nn.Module):
    """(N, Cz, H/f, W/f) -> (N, C, H, W), unbounded (callers clamp to [-1, 1])."""

    def __init__(self, out_channels: int, base_channels: int, channel_mults: tuple[int, ...],
                 num_res_blocks: int, latent_channels: int, groups: int) -> None:
        super().__init__()
        widths = _widths(base_channels, channel_mults)[::-1]  # deepest first
        ch = widths[0]
        self.conv_in = nn.Conv2d(latent_channels, ch, 3, padding=1)
        layers: list[nn.Module] = [ResBlock2d(ch, ch, groups)]  # middle
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers.append(ResBlock2d(ch, width, groups))
                ch = width
            if level < len(widths) - 1:
                layers.append(Upsample2d(ch, widths[level + 1]))
                ch = widths[level + 1]
        self.body = nn.Sequential(*layers)
        self.norm_out = group_norm(ch, groups)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.body(self.conv_in(z))
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class AutoencoderOutput:
    recon: torch.Tensor  # (B, C, T, H, W) unclamped reconstruction
    mean: torch.Tensor  # (B, Cz, T, h, w) posterior mean, unscaled
    logvar: torch.Tensor  # (B, Cz, T, h, w) posterior log-variance, clamped to LOGVAR_RANGE


class FrameAutoencoder(nn.Module):
    """KL autoencoder applied to each frame of `(B, C, T, H, W)` videos in [-1, 1]; see the module docstring.

    Defaults are conf/autoencoder/kl.yaml's (the setting measured on the shapes world at 32 px).
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 16,
        channel_mults: tuple[int, ...] | list[int] = (1, 2, 2),
        latent_channels: int = 8,
        downsample: int = 4,
        num_res_blocks: int = 1,
        kl_weight: float = 1e-6,
        l1_weight: float = 1.0,
        l2_weight: float = 1.0,
        groups: int = 8,
        foreground_weight: float = 0.0,
    ) -> None:
        super().__init__()
        channel_mults = tuple(int(m) for m in channel_mults)
        if downsample < 1 or downsample & (downsample - 1):
            raise ConfigError(f"autoencoder.downsample={downsample} must be a power of two (e.g. 4 or 8)")
        levels = int(math.log2(downsample)) + 1
        if len(channel_mults) != levels:
            raise ConfigError(
                f"autoencoder.channel_mults={list(channel_mults)} needs log2(downsample) + 1 = {levels} entries "
                f"for downsample={downsample} (one per resolution)"
            )
        for key, value in (("channels", base_channels), ("latent_channels", latent_channels),
                           ("num_res_blocks", num_res_blocks)):
            if value < 1:
                raise ConfigError(f"autoencoder.{key}={value} must be >= 1")
        self.config = {
            "in_channels": in_channels, "base_channels": base_channels, "channel_mults": list(channel_mults),
            "latent_channels": latent_channels, "downsample": downsample, "num_res_blocks": num_res_blocks,
            "kl_weight": float(kl_weight), "l1_weight": float(l1_weight), "l2_weight": float(l2_weight),
            "groups": groups, "foreground_weight": float(foreground_weight),
        }  # plain values: what checkpoints store to rebuild the model
        self.in_channels, self.latent_channels, self.downsample = in_channels, latent_channels, downsample
        self.kl_weight, self.l1_weight, self.l2_weight = float(kl_weight), float(l1_weight), float(l2_weight)
        self.foreground_weight = float(foreground_weight)
        args = (base_channels, channel_mults, num_res_blocks, latent_channels, groups)
        self.encoder = Encoder2d(in_channels, *args)
        self.decoder = Decoder2d(in_channels, *args)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    @classmethod
    def from_config(cls, config: dict) -> "FrameAutoencoder":
        return cls(**config)

    def export_state(self) -> dict:
        """Config + weights on the CPU: what a diffusion checkpoint carries so sampling can decode without the
        autoencoder's own file (`from_state` rebuilds it)."""
        return {"config": dict(self.config), "state": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict) -> "FrameAutoencoder":
        model = cls.from_config(state["config"])
        model.load_state_dict(state["state"])
        return model.eval()

    # -- per-frame folding ----------------------------------------------------------------------

    def _check_video(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != self.in_channels:
            raise ValueError(f"video must be (B, {self.in_channels}, T, H, W), got {tuple(video.shape)}")
        H, W = video.shape[-2:]
        if H % self.downsample or W % self.downsample:
            raise ValueError(f"frame size {H}x{W} is not divisible by the autoencoder's downsample {self.downsample}")

    def posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled posterior mean and clamped log-variance, each (B, Cz, T, H/f, W/f)."""
        self._check_video(video)
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        moments = self.encoder(frames)
        moments = rearrange(moments, "(b t) c h w -> b c t h w", b=video.shape[0])
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode_unscaled(self, latent: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, Cz, T, h, w) -> unclamped video (B, C, T, h*f, w*f)."""
        if latent.ndim != 5 or latent.shape[1] != self.latent_channels:
            raise ValueError(f"latent must be (B, {self.latent_channels}, T, h, w), got {tuple(latent.shape)}")
        frames = self.decoder(rearrange(latent, "b c t h w -> (b t) c h w"))
        return rearrange(frames, "(b t) c h w -> b c t h w", b=latent.shape[0])

    # -- the diffusion model's interface --------------------------------------------------------

    def encode(self, video: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Video (B, C, T, H, W) in [-1, 1] -> scaled latents (B, Cz, T, H/f, W/f): the posterior mean, or a
        sample of the posterior when `sample`."""
        mean, logvar = self.posterior(video)
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * noise
        return z * self.scale_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, Cz, T, h, w) -> video (B, C, T, h*f, w*f) clamped to [-1, 1]."""
        return self.decode_unscaled(latent / self.scale_factor).clamp(-1.0, 1.0)

    @torch.no_grad()
    def fit_scale_factor(self, latents: torch.Tensor) -> float:
        """Set `scale_factor` so that `latents` (as `encode` returned them under the current factor) would
        have standard deviation 1; returns the new factor."""
        std = latents.detach().float().std()
        if not torch.isfinite(std) or std <= 0:
            raise ValueError(f"cannot fit a scale factor to latents with standard deviation {float(std)}")
        self.scale_factor.copy_(self.scale_factor / std.to(self.scale_factor.device))
        return float(self.scale_factor)

    # -- training -------------------------------------------------------------------------------

    def forward(self, video: torch.Tensor, sample_posterior: bool = True) -> AutoencoderOutput:
        """Reconstruct `video` through a posterior sample (training) or the mean; latents stay unscaled."""
        mean, logvar = self.posterior(video)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample_posterior else mean
        return AutoencoderOutput(self.decode_unscaled(z), mean, logvar)

    def loss_terms(self, video: torch.Tensor, out: AutoencoderOutput) -> dict[str, torch.Tensor]:
        """Loss terms of one forward pass: `loss` (minimised), `recon`, `l1`, `l2`, `kl`."""
        diff = out.recon - video
        weight = 1.0
        if self.foreground_weight > 0:  # small things count more: the background no longer dominates the mean
            weight = 1.0 + self.foreground_weight * foreground_mask(video)
            weight = weight / weight.mean()
        l1 = (weight * diff.abs()).mean()
        l2 = (weight * diff.pow(2)).mean()
        recon = self.l1_weight * l1 + self.l2_weight * l2
        kl = 0.5 * (out.mean.pow(2) + out.logvar.exp() - 1.0 - out.logvar).mean()
        return {"loss": recon + self.kl_weight * kl, "recon": recon.detach(), "l1": l1.detach(),
                "l2": l2.detach(), "kl": kl.detach()}

    def loss(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """`loss_terms` of a forward pass with a posterior sample (what training minimises)."""
        return self.loss_terms(video, self(video))


def foreground_mask(video: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """1 where a pixel's colour is unlike its frame's background (the per-channel median of the frame, in
    [-1, 1] units: any channel more than `threshold` away), else 0; shape of `video` with one channel."""
    background = video.flatten(-2).median(dim=-1).values[..., None, None]
    return ((video - background).abs().amax(dim=1, keepdim=True) > threshold).to(video.dtype)


def psnr(reference: torch.Tensor, test: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2), over all elements."""
    mse = float((reference.float() - test.float()).pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(4.0 / mse)
