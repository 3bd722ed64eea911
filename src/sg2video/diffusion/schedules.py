"""Noise schedules: the betas and every quantity derived from them, in one table.

Timestep convention (used by the whole `sg2video.diffusion` package):
- `t = 0` is the clean signal: alpha_bar = 1, no noise. Clean prefix frames carry `t = 0`.
- `t = 1 .. timesteps` are the noise levels, `t = timesteps` the noisiest (close to pure noise).
So every table below has `timesteps + 1` entries, indexed directly by `t`; entry 0 is the clean state
(beta 0, posterior mean = x0, posterior variance 0, SNR = inf).

Tables are float64 on the CPU; `GaussianDiffusion` casts and moves the entries it gathers.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch

from sg2video.errors import ConfigError

SCHEDULE_NAMES = ("linear", "cosine")
MAX_BETA = 0.999
COSINE_OFFSET = 0.008  # s in Nichol & Dhariwal (2021), eq. 17


@dataclass(frozen=True)
class NoiseSchedule:
    """Diffusion constants indexed by timestep t in [0, timesteps] (t = 0: clean), float64, CPU."""

    name: str
    timesteps: int
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor  # alpha_bar_{t-1}; entry 0 is 1 (nothing before clean)
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    # q(x_{t-1} | x_t, x0) = N(coef1 * x0 + coef2 * x_t, posterior_variance)
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor  # log variance, entries 0 and 1 (variance 0) use t = 2's
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    snr: torch.Tensor  # alpha_bar / (1 - alpha_bar); inf at t = 0

    @classmethod
    def from_betas(cls, name: str, betas: torch.Tensor) -> "NoiseSchedule":
        """Build the tables from the betas of t = 1 .. T (a 1-D tensor of length T)."""
        betas = betas.to(torch.float64)
        assert betas.ndim == 1 and betas.numel() >= 2, "need at least two noise levels"
        assert bool((betas > 0).all()) and bool((betas < 1).all()), "betas must lie in (0, 1)"
        timesteps = betas.numel()
        betas = torch.cat([betas.new_zeros(1), betas])  # entry 0: the clean state
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])

        one_minus = 1.0 - alphas_cumprod
        noisy = slice(1, None)  # the closed forms divide by 1 - alpha_bar_t, which is 0 at t = 0
        posterior_variance = torch.zeros_like(betas)
        posterior_variance[noisy] = betas[noisy] * (1.0 - alphas_cumprod_prev[noisy]) / one_minus[noisy]
        coef1 = torch.ones_like(betas)  # at t = 0 the "posterior" is the clean sample itself
        coef2 = torch.zeros_like(betas)
        coef1[noisy] = betas[noisy] * alphas_cumprod_prev[noisy].sqrt() / one_minus[noisy]
        coef2[noisy] = (1.0 - alphas_cumprod_prev[noisy]) * alphas[noisy].sqrt() / one_minus[noisy]
        # The variance is 0 at t = 1 (x0 is then determined); the log uses t = 2's value there, as in
        # Ho et al.'s code, so a learned-variance interpolation never sees log(0).
        log_variance = posterior_variance.clone()
        log_variance[:2] = posterior_variance[2]
        snr = torch.full_like(betas, math.inf)
        snr[noisy] = alphas_cumprod[noisy] / one_minus[noisy]

        return cls(
            name=name,
            timesteps=timesteps,
            betas=betas,
            alphas=alphas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            sqrt_alphas_cumprod=alphas_cumprod.sqrt(),
            sqrt_one_minus_alphas_cumprod=one_minus.sqrt(),
            sqrt_recip_alphas_cumprod=alphas_cumprod.rsqrt(),
            sqrt_recipm1_alphas_cumprod=(1.0 / alphas_cumprod - 1.0).sqrt(),
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=log_variance.log(),
            posterior_mean_coef1=coef1,
            posterior_mean_coef2=coef2,
            snr=snr,
        )


def linear_betas(timesteps: int) -> torch.Tensor:
    """Ho et al.'s betas 1e-4 .. 0.02 for 1000 steps, scaled by 1000 / timesteps (Nichol & Dhariwal)
    so that another step count keeps about the same total amount of noise."""
    scale = 1000.0 / timesteps
    beta_start, beta_end = scale * 1e-4, scale * 0.02
    if beta_end >= 1.0:
        raise ConfigError(
            f"diffusion.timesteps={timesteps} is too few for the linear schedule (its last beta would be "
            f"{beta_end:.3g} >= 1); use at least 21 timesteps or diffusion.schedule=cosine"
        )
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_alphas_cumprod(timesteps: int, offset: float = COSINE_OFFSET) -> torch.Tensor:
    """alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), for t = 0 .. T."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    return f / f[0]


def cosine_betas(timesteps: int) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), at most 0.999."""
    alphas_cumprod = cosine_alphas_cumprod(timesteps)
    betas = 1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=MAX_BETA)


def make_schedule(name: str, timesteps: int = 1000) -> NoiseSchedule:
    """The schedule called `name` (linear | cosine) with `timesteps` noise levels."""
    if isinstance(timesteps, bool) or not hasattr(timesteps, "__index__") or operator.index(timesteps) < 2:
        raise ConfigError(f"diffusion.timesteps={timesteps!r} must be an integer >= 2")
    timesteps = operator.index(timesteps)
    if name == "linear":
        return NoiseSchedule.from_betas(name, linear_betas(timesteps))
    if name == "cosine":
        return NoiseSchedule.from_betas(name, cosine_betas(timesteps))
    raise ConfigError(f"diffusion.schedule={name!r} is not a schedule (accepted: {', '.join(SCHEDULE_NAMES)})")
