"""Videos longer than the model's clip, sampled chunk by chunk.

Chunk 0 renders frames [0, chunk_frames) from noise. Every later chunk starts `prefix_frames` frames
before the end of what exists: those frames, already generated, are its clean prefix (t = 0), and it
generates the `chunk_frames - prefix_frames` frames after them. Each chunk is conditioned on its own
frames' graphs: `cond_for_frames(start, end)` is asked for frames [start, end) of the whole video.

The last chunk, when fewer frames are left than a chunk makes (`last_chunk`):
- "short" (default): the model takes a shorter clip, the prefix plus only the frames still needed
  (fine for a UNet whose temporal layers accept any length);
- "overlap": the chunk keeps the full length and ends at the last frame, so its prefix is longer than
  `prefix_frames` (all frames before the new ones are given); for models that need a fixed length.
A video no longer than one chunk is a single clip of `total_frames` frames.

Memory stays flat in the video length: one chunk is on the device at a time; finished frames are copied
into the output buffer on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from sg2video.diffusion.gaussian import GaussianDiffusion, ModelFn
from sg2video.diffusion.samplers import Sampler, repeat_cond, sample
from sg2video.errors import ConfigError, UserError

LAST_CHUNK_MODES = ("short", "overlap")


@dataclass(frozen=True)
class Chunk:
    """Frames [start, end) of the whole video, of which the first `prefix_frames` were given."""

    start: int
    end: int
    prefix_frames: int

    @property
    def new_start(self) -> int:
        """The first frame this chunk generated."""
        return self.start + self.prefix_frames

    @property
    def frames(self) -> int:
        return self.end - self.start


def plan_chunks(total_frames: int, chunk_frames: int, prefix_frames: int, last_chunk: str = "short") -> list[Chunk]:
    """The chunks that make a video of `total_frames` frames (see the module docstring)."""
    if last_chunk not in LAST_CHUNK_MODES:
        raise ConfigError(f"last_chunk={last_chunk!r} is not accepted (accepted: {', '.join(LAST_CHUNK_MODES)})")
    if total_frames < 1:
        raise UserError(f"cannot make a video of {total_frames} frames; ask for at least 1")
    if not 0 <= prefix_frames < chunk_frames:
        raise ConfigError(
            f"model.prefix_frames={prefix_frames} must be in [0, {chunk_frames}) for clips of {chunk_frames} frames"
        )
    if total_frames <= chunk_frames:
        return [Chunk(0, total_frames, 0)]
    if prefix_frames == 0:
        raise UserError(
            f"cannot make {total_frames} frames: this model was trained without prefix frames, so it cannot "
            f"continue a video; ask for at most {chunk_frames} frames"
        )
    chunks = [Chunk(0, chunk_frames, 0)]
    while chunks[-1].end < total_frames:
        end = min(chunks[-1].end - prefix_frames + chunk_frames, total_frames)
        start = chunks[-1].end - prefix_frames
        if last_chunk == "overlap":
            start = end - chunk_frames
        chunks.append(Chunk(start, end, chunks[-1].end - start))
    return chunks


@torch.no_grad()
def sample_long(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    sampler_factory: Callable[[], Sampler],
    total_frames: int,
    chunk_frames: int,
    prefix_frames: int,
    cond_for_frames: Callable[[int, int], Any],
    channels: int,
    height: int,
    width: int,
    batch: int = 1,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    last_chunk: str = "short",
    device: torch.device | str | None = None,
    clip_x0: bool = True,
    progress: Callable[[int, int], None] | None = None,
    repeat_cond: Callable[[Any, int], Any] = repeat_cond,
) -> tuple[torch.Tensor, list[Chunk]]:
    """Sample (batch, channels, total_frames, height, width) videos, chunk by chunk.

    sampler_factory: makes the sampler for a chunk (e.g. `lambda: make_sampler("ddim", schedule, 50)`).
    cond_for_frames(start, end): the conditioning for frames [start, end) of the whole video.
    progress: called as progress(steps_done, total_steps) over all chunks' steps.
    device: where chunks are sampled (default: the generator's, else the CPU). The result is on the CPU.
    Returns the videos and the chunks (frame ranges) they were made of.
    """
    chunks = plan_chunks(total_frames, chunk_frames, prefix_frames, last_chunk)
    if device is None:
        device = generator.device if generator is not None else "cpu"
    video = torch.empty(batch, channels, total_frames, height, width)
    sampler = sampler_factory()  # one per chunk, made as its chunk starts (a DDPM-1000 sampler holds 0.23 MB)
    total_steps = sampler.num_steps * len(chunks)
    steps_before = 0

    for index, chunk in enumerate(chunks):
        if index:
            sampler = sampler_factory()
        prefix = None
        if chunk.prefix_frames:
            prefix = video[:, :, chunk.start : chunk.new_start].to(device)
        chunk_progress = None
        if progress is not None:
            chunk_progress = lambda done, _total, before=steps_before: progress(before + done, total_steps)
        clip = sample(
            diffusion,
            model_fn,
            (batch, channels, chunk.frames, height, width),
            cond_for_frames(chunk.start, chunk.end),
            sampler,
            guidance=guidance,
            prefix=prefix,
            generator=generator,
            progress=chunk_progress,
            clip_x0=clip_x0,
            device=device,
            repeat_cond=repeat_cond,
        )
        video[:, :, chunk.new_start : chunk.end] = clip[:, :, chunk.prefix_frames :].cpu()
        steps_before += sampler.num_steps
        del clip, prefix
    return video, chunks
