"""Gaussian diffusion: forward noising, what the model predicts, and the training loss.

The denoiser is any callable `model_fn(x, t, cond, drop_cond) -> out`:
- `x`: (B, C, T, H, W) the noisy clip;
- `t`: (B, T) long, one timestep per frame; `t = 0` marks a clean (given) frame, such as a prefix frame,
  and `1 .. timesteps` the noise levels (see `schedules`);
- `cond`: the conditioning, an opaque object passed through untouched;
- `drop_cond`: (B,) bool or None; True = use the learned null condition (classifier-free guidance).
`out` has x's shape and means eps, x0 or v according to `parameterization`.

Timesteps given to the methods here are (B,) (one per clip) or (B, T) (one per frame).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from sg2video.diffusion.schedules import NoiseSchedule
from sg2video.errors import ConfigError

ModelFn = Callable[[torch.Tensor, torch.Tensor, Any, "torch.Tensor | None"], torch.Tensor]

PARAMETERIZATIONS = ("eps", "x0", "v")
LOSSES = ("l2", "l1")
SNR_WEIGHTINGS = (None, "min_snr")


def _check_choice(key: str, value: Any, accepted: tuple) -> None:
    if value not in accepted:
        names = ", ".join("null" if a is None else a for a in accepted)
        raise ConfigError(f"{key}={value!r} is not accepted (accepted: {names})")


def broadcast_timesteps(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-clip (B,) or per-frame (B, T) values shaped to broadcast against x.

    (B,) -> (B, 1, ..., 1) for any x; (B, T) -> (B, 1, T, 1, 1) for a video x of shape (B, C, T, H, W).
    """
    if values.ndim == 1:
        assert values.shape[0] == x.shape[0], f"timesteps {tuple(values.shape)} vs batch {tuple(x.shape)}"
        return values.view(-1, *([1] * (x.ndim - 1)))
    assert values.ndim == 2 and x.ndim == 5, "per-frame timesteps need a (B, C, T, H, W) input"
    assert values.shape == (x.shape[0], x.shape[2]), f"timesteps {tuple(values.shape)} vs video {tuple(x.shape)}"
    return values[:, None, :, None, None]


class GaussianDiffusion:
    """The forward process of `schedule` and the training objective of a denoiser.

    parameterization: what the model outputs: eps (the noise), x0 (the clean clip) or v
        (v = sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x0, Salimans & Ho 2022).
    loss: l2 or l1 between output and target.
    snr_weighting: None (plain mean) or min_snr (Hang et al. 2023: weight each clip's loss so that the
        effective x0-loss weight is min(SNR, gamma), gamma = 5).
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        parameterization: str = "eps",
        loss: str = "l2",
        snr_weighting: str | None = None,
        min_snr_gamma: float = 5.0,
    ) -> None:
        _check_choice("diffusion.parameterization", parameterization, PARAMETERIZATIONS)
        _check_choice("diffusion.loss", loss, LOSSES)
        _check_choice("diffusion.snr_weighting", snr_weighting, SNR_WEIGHTINGS)
        self.schedule = schedule
        self.parameterization = parameterization
        self.loss = loss
        self.snr_weighting = snr_weighting
        self.min_snr_gamma = float(min_snr_gamma)
        self._tables: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def timesteps(self) -> int:
        return self.schedule.timesteps

    # -- gathering schedule entries -----------------------------------------------------------------
    def _table(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (name, device, dtype)
        if key not in self._tables:
            # cast on the CPU first: some devices have no float64
            self._tables[key] = getattr(self.schedule, name).to(dtype).to(device)
        return self._tables[key]

    def coef(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Schedule table `name` at timesteps t, shaped to broadcast against x (see `broadcast_timesteps`)."""
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return broadcast_timesteps(self._table(name, x.device, dtype)[t], x)

    # -- forward process ----------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise; exactly x0 where t = 0."""
        return self.coef("sqrt_alphas_cumprod", t, x0) * x0 + self.coef("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x0)."""
        mean = self.coef("posterior_mean_coef1", t, x_t) * x0 + self.coef("posterior_mean_coef2", t, x_t) * x_t
        variance = self.coef("posterior_variance", t, x_t)
        log_variance = self.coef("posterior_log_variance_clipped", t, x_t)
        return mean, variance, log_variance

    # -- what the model predicts --------------------------------------------------------------------
    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What a perfect model outputs for x_t = q_sample(x0, t, noise)."""
        if self.parameterization == "eps":
            return noise
        if self.parameterization == "x0":
            return x0
        return self.coef("sqrt_alphas_cumprod", t, x0) * noise - self.coef("sqrt_one_minus_alphas_cumprod", t, x0) * x0

    def predict_x0_eps(
        self, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) implied by the model output at x_t, for this parameterization.

        Frames with t = 0 are clean: there x0 = x_t and eps = 0, whatever the model said.
        """
        sqrt_ab = self.coef("sqrt_alphas_cumprod", t, x_t)
        sqrt_1m_ab = self.coef("sqrt_one_minus_alphas_cumprod", t, x_t)
        if self.parameterization == "eps":
            eps = model_out
            x0 = (x_t - sqrt_1m_ab * eps) / sqrt_ab
        elif self.parameterization == "x0":
            x0 = model_out
            eps = self.eps_from_x0(x_t, t, x0)
        else:
            x0 = sqrt_ab * x_t - sqrt_1m_ab * model_out
            eps = sqrt_1m_ab * x_t + sqrt_ab * model_out
        clean = broadcast_timesteps(t == 0, x_t)
        return torch.where(clean, x_t, x0), torch.where(clean, torch.zeros_like(eps), eps)

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise that takes x0 to x_t at t; 0 on clean frames (t = 0), where it is undefined."""
        sqrt_ab = self.coef("sqrt_alphas_cumprod", t, x_t)
        sqrt_1m_ab = self.coef("sqrt_one_minus_alphas_cumprod", t, x_t)
        clean = broadcast_timesteps(t == 0, x_t)
        # a safe denominator, so that neither the value nor the gradient becomes nan at t = 0
        eps = (x_t - sqrt_ab * x0) / torch.where(clean, torch.ones_like(sqrt_1m_ab), sqrt_1m_ab)
        return torch.where(clean, torch.zeros_like(eps), eps)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-clip loss weight for clip timesteps t (B,), t >= 1 (all ones without snr_weighting).

        min-SNR-gamma gives the x0-space weight min(SNR, gamma); in the model's own output space that is
        min(SNR, gamma) / SNR for eps, min(SNR, gamma) for x0 and min(SNR, gamma) / (SNR + 1) for v.
        """
        if self.snr_weighting is None:
            return torch.ones(t.shape, device=t.device)
        snr = self._table("snr", t.device, torch.float32)[t]
        clipped = snr.clamp(max=self.min_snr_gamma)
        if self.parameterization == "eps":
            return clipped / snr
        if self.parameterization == "x0":
            return clipped
        return clipped / (snr + 1.0)

    # -- training -----------------------------------------------------------------------------------
    def training_loss(
        self,
        model_fn: ModelFn,
        x0: torch.Tensor,
        cond: Any,
        prefix_frames: int = 0,
        cond_dropout: float = 0.1,
        generator: torch.Generator | None = None,
        prefix_dropout: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """One denoising loss on a batch of clips x0 (B, C, T, H, W).

        Each clip gets one timestep t in [1, timesteps] for all its noisy frames. Its first
        `prefix_frames` frames are given, clean context: the model sees them as they are (x_t = x0,
        t = 0), they are detached (the loss sends no gradient into them) and they are left out of the
        loss, which is the mean over the remaining frames. A `prefix_dropout` share of clips gets no
        prefix (all frames noisy), so that the same model can also start a video from nothing.
        A `cond_dropout` share of clips is passed with drop_cond = True (the model's null condition).
        Random draws use `generator`, which must live on x0's device.

        Returns `loss` (the scalar to optimise, with the SNR weighting), and for logging, detached:
        `loss_unweighted` (the plain mean), `loss_per_clip` (B,) and `timesteps` (B,).
        """
        assert x0.ndim == 5, f"expected a (B, C, T, H, W) clip, got {tuple(x0.shape)}"
        batch, _, frames = x0.shape[:3]
        assert 0 <= prefix_frames < frames, f"prefix_frames={prefix_frames} needs a clip longer than {frames}"
        device = x0.device

        clip_t = torch.randint(1, self.timesteps + 1, (batch,), generator=generator, device=device)
        prefix_per_clip = torch.full((batch,), prefix_frames, dtype=torch.long, device=device)
        if prefix_frames and prefix_dropout > 0:
            no_prefix = torch.rand(batch, generator=generator, device=device) < prefix_dropout
            prefix_per_clip = prefix_per_clip.masked_fill(no_prefix, 0)
        is_prefix = torch.arange(frames, device=device)[None, :] < prefix_per_clip[:, None]  # (B, T)
        t = torch.where(is_prefix, torch.zeros_like(clip_t)[:, None], clip_t[:, None])  # (B, T)

        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
        x_t = torch.where(broadcast_timesteps(is_prefix, x0), x0.detach(), self.q_sample(x0, t, noise))

        drop_cond = None
        if cond_dropout > 0:
            drop_cond = torch.rand(batch, generator=generator, device=device) < cond_dropout

        model_out = model_fn(x_t, t, cond, drop_cond)
        assert model_out.shape == x0.shape, f"model output {tuple(model_out.shape)} vs clip {tuple(x0.shape)}"
        error = model_out.float() - self.target(x0, noise, t).float()
        error = error.square() if self.loss == "l2" else error.abs()
        per_frame = error.mean(dim=(1, 3, 4))  # (B, T)
        noisy = (~is_prefix).float()
        # multiplying by 0 (rather than indexing) keeps per-clip prefix lengths vectorised; the prefix
        # gets an exactly zero gradient either way
        per_clip = (per_frame * noisy).sum(dim=1) / noisy.sum(dim=1)
        loss = (per_clip * self.loss_weight(clip_t)).mean()
        return {
            "loss": loss,
            "loss_unweighted": per_clip.mean().detach(),
            "loss_per_clip": per_clip.detach(),
            "timesteps": clip_t,
        }
