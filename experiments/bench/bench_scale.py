"""FLOPs and CPU time of one training step of the encoder and of the diffusion UNet, per clip, at a dataset's
frame size and clip length: the inputs of experiments/results/scale.md (what full Action Genome training costs).

FLOPs are counted by torch.utils.flop_counter (matrix multiplies and convolutions, forward + backward; a
multiply-add counts 2), on the project's default configs (conf/encoder/gcn.yaml, conf/model/unet.yaml,
conf/autoencoder) with shapes-world clips of the requested size (a graph of 1-4 objects; Action Genome's graphs
hold about 4 objects, so the graph encoder's share, already tiny, is if anything undercounted). CPU seconds are
process time per clip on one thread, after a warm-up step.

Usage: .venv/bin/python experiments/bench/bench_scale.py [--size 64] [--frames 8] [--batch 4]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from sg2video.autoencoder import FrameAutoencoder  # noqa: E402
from sg2video.data.clips import collate_clips  # noqa: E402
from sg2video.data.shapes import ShapesDataset  # noqa: E402
from sg2video.denoiser import Denoiser, build_unet  # noqa: E402
from sg2video.encoder.pretrain import build_pretrainer  # noqa: E402

CONF = Path(__file__).resolve().parents[2] / "conf"


def measure(step, batch: int) -> tuple[float, float]:
    """(FLOPs, CPU seconds) per clip of `step()` (forward + backward of a batch of `batch` clips)."""
    step()  # warm-up
    with FlopCounterMode(display=False) as counter:
        step()
    start = time.process_time()
    step()
    return counter.get_total_flops() / batch, (time.process_time() - start) / batch


def encoder_step(size: int, frames: int, batch: int):
    data = ShapesDataset("train", 10_000, size=size, frames=frames)
    model = build_pretrainer(OmegaConf.load(CONF / "encoder" / "gcn.yaml"), data.vocab, size)
    clips = collate_clips(data.__getitems__(range(batch)))

    def step():
        model.zero_grad(set_to_none=True)
        model(clips)["loss"].backward()

    return step, sum(p.numel() for p in model.parameters())


def diffusion_step(size: int, frames: int, batch: int, cond: str, dim: int | None):
    cfg = OmegaConf.load(CONF / "model" / "unet.yaml")
    cfg.cond = cond
    if dim:
        cfg.dim = dim
    autoencoder = FrameAutoencoder().eval()
    with torch.no_grad():
        latent = autoencoder.encode(torch.randn(batch, 3, frames, size, size))
    channels = latent.shape[1]
    model = Denoiser(build_unet(cfg, channels, 256), 9, 256)
    t = torch.randint(1, 1000, (batch, frames))
    lo = torch.rand(batch, frames, 4, 2) * 0.5
    from sg2video.denoiser import Conditioning

    condition = Conditioning(
        tokens=torch.randn(batch, frames, 10, 256), token_mask=torch.ones(batch, frames, 10, dtype=torch.bool),
        global_vec=torch.randn(batch, frames, 256), obj_classes=torch.randint(0, 9, (batch, frames, 4)),
        obj_tokens=torch.randn(batch, frames, 4, 256), layout_boxes=torch.cat((lo, lo + 0.2), -1),
        layout_mask=torch.ones(batch, frames, 4, dtype=torch.bool))

    def step():
        model.zero_grad(set_to_none=True)
        (model(latent, t, condition) - latent).pow(2).mean().backward()

    return step, sum(p.numel() for p in model.parameters()), tuple(latent.shape[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--cond", default="concat")
    parser.add_argument("--unet-dims", type=int, nargs="*", default=[0], help="UNet widths (0: conf/model/unet.yaml's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    step, params = encoder_step(args.size, args.frames, args.batch)
    flops, cpu = measure(step, args.batch)
    print(f"encoder  ({params / 1e6:.2f} M parameters), {args.frames} x {args.size}px clips: "
          f"{flops / 1e9:.2f} GFLOP per clip per step, {cpu:.3f} CPU s per clip (1 thread)")
    for dim in args.unet_dims:
        step, params, shape = diffusion_step(args.size, args.frames, args.batch, args.cond, dim)
        flops, cpu = measure(step, args.batch)
        print(f"diffusion UNet dim {dim or 'default'}, cond={args.cond} ({params / 1e6:.2f} M parameters), latents "
              f"{shape}: {flops / 1e9:.2f} GFLOP per clip per step, {cpu:.3f} CPU s per clip (1 thread)")


if __name__ == "__main__":
    main()
