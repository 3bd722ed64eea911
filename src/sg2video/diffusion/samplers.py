"""Samplers (diffusers style) and the sampling loop.

A sampler knows the schedule and a list of timesteps to visit, from noisy to clean; it does not know the
model. `step(model_out, t, x, diffusion, generator)` takes x at timestep t to the next timestep of the list
(0, the clean sample, after the last). `sample` runs the loop: it calls the model (with classifier-free
guidance), keeps prefix frames clean, and hands each output to the sampler.

Timesteps follow `schedules`: 1 .. T are noise levels, 0 is clean. Spacing of a shortened schedule
(n < T steps), for T = 1000, n = 20:
- trailing (default): 1000, 950, ..., 50: starts at the noisiest level, which is what the training
  noise at t = T looks like (Lin et al. 2024, "Common diffusion noise schedules ... are flawed");
- leading: 951, 901, ..., 1: ends at the least noisy level but never visits t = T.
Both give T, T - 1, ..., 1 when n = T.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Callable

import torch

from sg2video.diffusion.gaussian import GaussianDiffusion, ModelFn
from sg2video.diffusion.schedules import NoiseSchedule
from sg2video.errors import ConfigError

SAMPLER_NAMES = ("ddpm", "ddim")
SPACINGS = ("trailing", "leading")


def spaced_timesteps(timesteps: int, steps: int, spacing: str = "trailing") -> list[int]:
    """`steps` evenly spaced timesteps in [1, timesteps], descending (see the module docstring)."""
    if isinstance(steps, bool) or not hasattr(steps, "__index__") or not 1 <= operator.index(steps) <= timesteps:
        raise ConfigError(f"diffusion.sample_steps={steps!r} must be an integer in [1, {timesteps}]")
    steps = operator.index(steps)
    if spacing == "trailing":
        return [round(timesteps - i * timesteps / steps) for i in range(steps)]
    if spacing == "leading":
        stride = timesteps // steps
        return [i * stride + 1 for i in reversed(range(steps))]
    raise ConfigError(f"spacing={spacing!r} is not a timestep spacing (accepted: {', '.join(SPACINGS)})")


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class _Sampler:
    """Shared bookkeeping: the timesteps to visit and the one after each."""

    def __init__(self, schedule: NoiseSchedule, steps: int | None, spacing: str) -> None:
        self.schedule = schedule
        self.spacing = spacing
        self.timesteps: list[int] = []
        self._prev: dict[int, int] = {}
        self.set_timesteps(schedule.timesteps if steps is None else steps)

    def set_timesteps(self, steps: int) -> None:
        self.timesteps = spaced_timesteps(self.schedule.timesteps, steps, self.spacing)
        self._prev = dict(zip(self.timesteps, self.timesteps[1:] + [0]))

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def prev_timestep(self, t: int) -> int:
        """The timestep that `step` at t goes to (0 after the last)."""
        return self._prev[int(t)]

    def _x0_eps(self, model_out, t, x, diffusion, clip_x0):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x0, eps = diffusion.predict_x0_eps(model_out, x, t_batch)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = diffusion.eps_from_x0(x, t_batch, x0)  # keep x = sqrt(ab) x0 + sqrt(1 - ab) eps
        return x0, eps


class DDPMSampler(_Sampler):
    """Ancestral sampling (Ho et al. 2020): x_prev ~ q(x_prev | x_t, x0 = predicted x0), variance beta~.

    With fewer steps than the schedule, each step uses the posterior of the respaced process
    (beta' = 1 - alpha_bar_t / alpha_bar_prev); with all steps these are the schedule's own tables.
    """

    def __init__(self, schedule: NoiseSchedule, steps: int | None = None, spacing: str = "trailing") -> None:
        super().__init__(schedule, steps, spacing)

    def set_timesteps(self, steps: int) -> None:
        super().set_timesteps(steps)
        ab = self.schedule.alphas_cumprod
        # per visited t: (posterior mean coef of x0, coef of x_t, posterior variance), python floats
        self.posterior: dict[int, tuple[float, float, float]] = {}
        for t, prev in self._prev.items():
            ab_t, ab_prev = float(ab[t]), float(ab[prev])
            beta = 1.0 - ab_t / ab_prev
            coef1 = beta * math.sqrt(ab_prev) / (1.0 - ab_t)
            coef2 = (1.0 - ab_prev) * math.sqrt(1.0 - beta) / (1.0 - ab_t)
            self.posterior[t] = (coef1, coef2, beta * (1.0 - ab_prev) / (1.0 - ab_t))

    def step(
        self,
        model_out: torch.Tensor,
        t: int,
        x: torch.Tensor,
        diffusion: GaussianDiffusion,
        generator: torch.Generator | None = None,
        clip_x0: bool = True,
    ) -> torch.Tensor:
        t = int(t)
        x0, _ = self._x0_eps(model_out, t, x, diffusion, clip_x0)
        coef1, coef2, variance = self.posterior[t]
        mean = coef1 * x0 + coef2 * x
        if self.prev_timestep(t) == 0:
            return mean  # the variance is 0 on the step to the clean sample
        return mean + math.sqrt(variance) * _noise_like(x, generator)


class DDIMSampler(_Sampler):
    """DDIM (Song et al. 2021) over `steps` timesteps; eta = 0 is deterministic, eta = 1 with all
    timesteps is DDPM's ancestral sampler."""

    def __init__(
        self, schedule: NoiseSchedule, steps: int | None = None, eta: float = 0.0, spacing: str = "trailing"
    ) -> None:
        if not eta >= 0:
            raise ConfigError(f"eta={eta!r} must be >= 0")
        self.eta = float(eta)
        super().__init__(schedule, steps, spacing)

    def step(
        self,
        model_out: torch.Tensor,
        t: int,
        x: torch.Tensor,
        diffusion: GaussianDiffusion,
        generator: torch.Generator | None = None,
        clip_x0: bool = True,
    ) -> torch.Tensor:
        t = int(t)
        prev = self.prev_timestep(t)
        x0, eps = self._x0_eps(model_out, t, x, diffusion, clip_x0)
        ab_t = float(self.schedule.alphas_cumprod[t])
        ab_prev = float(self.schedule.alphas_cumprod[prev])
        sigma = self.eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev))
        direction = math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0))
        x_prev = math.sqrt(ab_prev) * x0 + direction * eps
        if sigma > 0:
            x_prev = x_prev + sigma * _noise_like(x, generator)
        return x_prev


Sampler = DDPMSampler | DDIMSampler


def make_sampler(name: str, schedule: NoiseSchedule, steps: int | None = None, eta: float = 0.0) -> Sampler:
    """ddpm (ancestral; `steps` None = all timesteps) or ddim (`steps` timesteps, `eta`)."""
    if name == "ddpm":
        return DDPMSampler(schedule, steps)
    if name == "ddim":
        return DDIMSampler(schedule, steps, eta)
    raise ConfigError(f"diffusion.sampler={name!r} is not a sampler (accepted: {', '.join(SAMPLER_NAMES)})")


# -- the sampling loop ------------------------------------------------------------------------------
def repeat_cond(cond: Any, times: int) -> Any:
    """`cond` for a batch repeated `times` times along the batch (clip 0..B-1, then again, ...).

    Handles None, tensors (batch on dim 0), dicts / lists / tuples of those, and any object with a
    `repeat_batch(times)` method. Pass your own function to `sample` for anything else.
    """
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return torch.cat([cond] * times, dim=0)
    if isinstance(cond, dict):
        return {key: repeat_cond(value, times) for key, value in cond.items()}
    if isinstance(cond, (list, tuple)):
        return type(cond)(repeat_cond(value, times) for value in cond)
    if hasattr(cond, "repeat_batch"):
        return cond.repeat_batch(times)
    raise TypeError(
        f"cannot repeat a condition of type {type(cond).__name__} for guidance; "
        "give it a repeat_batch(times) method or pass repeat_cond= to sample()"
    )


def guided_output(
    model_fn: ModelFn,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: Any,
    guidance: float,
    repeat_cond_fn: Callable[[Any, int], Any] = repeat_cond,
) -> torch.Tensor:
    """Classifier-free guidance: uncond + guidance * (cond - uncond), one model call.

    guidance 1 is the conditional output alone and 0 the unconditional one (one call on the batch);
    otherwise the model sees a doubled batch: the conditional copy, then the same with drop_cond = True.
    """
    batch = x.shape[0]
    if guidance == 1.0:
        return model_fn(x, t, cond, None)
    if guidance == 0.0:
        return model_fn(x, t, cond, torch.ones(batch, dtype=torch.bool, device=x.device))
    drop_cond = torch.arange(2 * batch, device=x.device) >= batch
    out = model_fn(torch.cat([x, x]), torch.cat([t, t]), repeat_cond_fn(cond, 2), drop_cond)
    cond_out, uncond_out = out.chunk(2)
    return uncond_out + guidance * (cond_out - uncond_out)


@torch.no_grad()
def sample(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    shape: tuple[int, int, int, int, int],
    cond: Any,
    sampler: Sampler,
    guidance: float = 1.0,
    prefix: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int, int], None] | None = None,
    clip_x0: bool = True,
    device: torch.device | str | None = None,
    repeat_cond: Callable[[Any, int], Any] = repeat_cond,
) -> torch.Tensor:
    """Draw clips of `shape` (B, C, T, H, W) by running `sampler` from pure noise to t = 0.

    prefix: (B, C, P, H, W) clean frames: written into the first P frames of x before every model call
        and after every step, and given t = 0; the result's first P frames are `prefix` exactly.
    guidance: classifier-free guidance scale (see `guided_output`).
    progress: called after each step as progress(steps_done, total_steps).
    clip_x0: clamp each predicted x0 to [-1, 1].
    device: where to sample; by default the generator's, else the prefix's, else the CPU.
        `generator` must live on that device.
    """
    if device is None:
        device = generator.device if generator is not None else prefix.device if prefix is not None else "cpu"
    device = torch.device(device)
    batch, _, frames = shape[:3]
    num_prefix = 0
    if prefix is not None:
        num_prefix = prefix.shape[2]
        assert prefix.shape[:2] == shape[:2] and prefix.shape[3:] == shape[3:], "prefix and shape disagree"
        assert num_prefix < frames, f"a prefix of {num_prefix} frames leaves nothing to sample in {frames}"
        prefix = prefix.to(device)

    x = torch.randn(shape, generator=generator, device=device)
    total = sampler.num_steps
    for index, t in enumerate(sampler.timesteps):
        frame_t = torch.full((batch, frames), t, dtype=torch.long, device=device)
        if num_prefix:
            x[:, :, :num_prefix] = prefix
            frame_t[:, :num_prefix] = 0
        model_out = guided_output(model_fn, x, frame_t, cond, guidance, repeat_cond)
        x = sampler.step(model_out, t, x, diffusion, generator, clip_x0=clip_x0)
        if progress is not None:
            progress(index + 1, total)
    if num_prefix:
        x[:, :, :num_prefix] = prefix
    return x
