"""Diffusion: noise schedules, the Gaussian forward process and loss, samplers, long videos.

The model is any `model_fn(x, t, cond, drop_cond) -> out` (see `gaussian`); timestep 0 means clean
(see `schedules`). Samplers are separate from the model and share one schedule (diffusers style).
"""
from sg2video.diffusion.gaussian import GaussianDiffusion
from sg2video.diffusion.long_video import Chunk, plan_chunks, sample_long
from sg2video.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    guided_output,
    make_sampler,
    repeat_cond,
    sample,
    spaced_timesteps,
)
from sg2video.diffusion.schedules import NoiseSchedule, make_schedule

# Where the diffusion runs (`diffusion.space`): on the frames themselves, or on the frame autoencoder's latents
# (stage `autoencoder` trains it; the diffusion stage encodes with it and sampling decodes).
SPACES = ("pixel", "latent")

__all__ = [
    "Chunk",
    "DDIMSampler",
    "DDPMSampler",
    "GaussianDiffusion",
    "NoiseSchedule",
    "SPACES",
    "guided_output",
    "make_sampler",
    "make_schedule",
    "plan_chunks",
    "repeat_cond",
    "sample",
    "sample_long",
    "spaced_timesteps",
]
