"""CPU cost of one diffusion training step per quality lever, to set equal-time step counts.

The lever comparison (experiments/results/quality.md) gives every setting the same CPU time rather than the
same steps: steps = budget / (CPU seconds per step). This prints those seconds for the default UNet
(conf/model/unet.yaml) in process CPU time on one thread (steady when other jobs share the machine):
pixel 4- and 8-frame clips, 8x8x8 latents (plus the frozen autoencoder's encode of the batch), and each
conditioning mode. Batch 16, forward + loss + backward + AdamW, random inputs of the right shapes.

Usage: .venv/bin/python experiments/bench/bench_step_cost.py [--steps 6] [--budget-steps 300]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from sg2video.autoencoder import FrameAutoencoder  # noqa: E402
from sg2video.denoiser import Conditioning, Denoiser, build_unet  # noqa: E402

CONF = Path(__file__).resolve().parents[2] / "conf"


def condition(batch: int, frames: int, objects: int = 4, tokens: int = 10, width: int = 256) -> Conditioning:
    lo = torch.rand(batch, frames, objects, 2) * 0.5
    return Conditioning(
        tokens=torch.randn(batch, frames, tokens, width), token_mask=torch.ones(batch, frames, tokens, dtype=torch.bool),
        global_vec=torch.randn(batch, frames, width), obj_classes=torch.randint(0, 9, (batch, frames, objects)),
        obj_tokens=torch.randn(batch, frames, objects, width), layout_boxes=torch.cat((lo, lo + 0.2), -1),
        layout_mask=torch.ones(batch, frames, objects, dtype=torch.bool))


def step_cost(mode: str, frames: int, latent: bool, batch: int, steps: int) -> float:
    """CPU seconds per training step (after two warm-up steps)."""
    cfg = OmegaConf.load(CONF / "model" / "unet.yaml")
    cfg.cond = mode
    torch.manual_seed(0)
    channels, size = (8, 8) if latent else (3, 32)
    model = Denoiser(build_unet(cfg, channels, 256), 9, 256)
    autoencoder = FrameAutoencoder().eval() if latent else None
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    pixels = torch.randn(batch, 3, frames, 32, 32)
    t = torch.randint(1, 1000, (batch, frames))
    cond = condition(batch, frames)
    for i in range(steps + 2):
        if i == 2:
            start = time.process_time()
        x = pixels
        if autoencoder is not None:
            with torch.no_grad():
                x = autoencoder.encode(pixels)
        assert x.shape[1:] == (channels, frames, size, size)
        loss = (model(x, t, cond) - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.process_time() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--budget-steps", type=int, default=300, help="steps of the reference (pixel layout 4f)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = [("pixel, layout, 4 frames (reference)", "layout", 4, False),
                ("pixel, layout, 8 frames", "layout", 8, False),
                ("latent 8x8x8, layout, 4 frames", "layout", 4, True),
                ("pixel, crossattn, 4 frames", "crossattn", 4, False),
                ("pixel, concat, 4 frames", "concat", 4, False),
                ("pixel, none, 4 frames", "none", 4, False)]
    rows = [(name, step_cost(mode, frames, latent, args.batch, args.steps)) for name, mode, frames, latent in settings]
    budget = rows[0][1] * args.budget_steps
    print(f"CPU s per step (1 thread, batch {args.batch}); equal-time steps for a budget of {args.budget_steps} "
          f"reference steps = {budget:.0f} CPU s")
    print("| setting | CPU s/step | steps in the budget |")
    print("|---|---|---|")
    for name, cost in rows:
        print(f"| {name} | {cost:.3f} | {budget / cost:.0f} |")


if __name__ == "__main__":
    main()
