"""Equal steps, equal loss? sg2video's UNet3D vs video-diffusion-pytorch's Unet3D trained the same way on shapes.

Both at dim=32, dim_mults=(1, 2, 4), on 8x32x32 shapes clips, batch 4, the same clips in the same order, the same
diffusion (sg2video's cosine schedule, eps prediction, L2), the same Adam (lr 3e-4) and the same seeds. Both get
the same per-clip condition vector of 64 (a fixed random projection of the clip's object classes): the peer
through its `cond`, ours in `concat` mode (the vector joins the time embedding of every frame).
Every `--eval-every` steps both are scored on one fixed held-out batch (64 clips, 8 fixed timesteps spread over
the schedule, fixed noise): the mean denoising loss, the figure to compare. Also prints seconds per step.

Usage: .venv/bin/python experiments/bench/bench_unet_quality.py [--steps 100] [--threads 2] [--no-peer]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from sg2video.data.clips import video_to_model  # noqa: E402
from sg2video.data.shapes import ShapesWorld  # noqa: E402
from sg2video.diffusion import GaussianDiffusion, make_schedule  # noqa: E402
from sg2video.unet import Conditioning, UNet3D  # noqa: E402

COND_DIM = 64


def clip_vectors(items: list[dict], num_classes: int, projection: torch.Tensor) -> torch.Tensor:
    """(B, COND_DIM): a multi-hot of each clip's object classes through a fixed random projection."""
    hot = torch.zeros(len(items), num_classes)
    for i, item in enumerate(items):
        hot[i, item["graphs"][0].objs] = 1.0
    return hot @ projection


def batch_of(world: ShapesWorld, split: str, indices: list[int], projection: torch.Tensor):
    items = world.clips(split, indices)
    video = video_to_model(torch.stack([it["video"] for it in items]))  # (B, 3, T, H, W) in [-1, 1]
    return video, clip_vectors(items, world.vocab.num_objects, projection)


def make_models(frames: int):
    from video_diffusion_pytorch.video_diffusion_pytorch import Unet3D

    torch.manual_seed(0)
    ours = UNet3D(dim=32, dim_mults=(1, 2, 4), cond="concat", cond_dim=COND_DIM)
    torch.manual_seed(0)
    peer = Unet3D(dim=32, dim_mults=(1, 2, 4), cond_dim=COND_DIM)

    def run_ours(x, t, vec):
        cond = Conditioning(global_vec=vec[:, None].expand(-1, frames, -1))
        return ours(x, t, cond)

    def run_peer(x, t, vec):
        return peer(x, t.float(), cond=vec)

    return {"sg2video": (ours, run_ours), "video-diffusion-pytorch": (peer, run_peer)}


def denoise_loss(diffusion: GaussianDiffusion, forward, x0, vec, t, noise) -> torch.Tensor:
    x_t = diffusion.q_sample(x0, t, noise)
    return (forward(x_t, t, vec) - noise).pow(2).mean()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    world = ShapesWorld(size=args.size, frames=args.frames)
    projection = torch.randn(world.vocab.num_objects, COND_DIM, generator=torch.Generator().manual_seed(1))
    diffusion = GaussianDiffusion(make_schedule("cosine", 1000), parameterization="eps", loss="l2")
    g = torch.Generator().manual_seed(2)
    eval_x, eval_vec = batch_of(world, "val", list(range(64)), projection)
    eval_t = torch.linspace(50, 950, 8).long().repeat(8)  # 8 timesteps x 8 clips each
    eval_noise = torch.randn(eval_x.shape, generator=g)
    train_t = torch.randint(1, 1001, (args.steps, args.batch), generator=g)
    train_noise = torch.randn((args.steps, *eval_x[: args.batch].shape), generator=g)

    models = make_models(args.frames)
    if args.no_peer:
        models.pop("video-diffusion-pytorch")
    results = {}
    for name, (model, forward) in models.items():
        params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        curve, seconds = [], 0.0

        def evaluate() -> float:
            model.eval()
            with torch.no_grad():
                losses = [denoise_loss(diffusion, forward, eval_x[i : i + 16], eval_vec[i : i + 16],
                                       eval_t[i : i + 16], eval_noise[i : i + 16]).item() for i in range(0, 64, 16)]
            model.train()
            return sum(losses) / len(losses)

        curve.append((0, evaluate()))
        model.train()
        for step in range(args.steps):
            x0, vec = batch_of(world, "train", list(range(step * args.batch, (step + 1) * args.batch)), projection)
            start = time.perf_counter()
            loss = denoise_loss(diffusion, forward, x0, vec, train_t[step], train_noise[step])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - start
            if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
                curve.append((step + 1, evaluate()))
                print(f"{name}: step {step + 1} held-out loss {curve[-1][1]:.4f} ({seconds / (step + 1):.2f} s/step)",
                      flush=True)
        results[name] = (params, seconds / args.steps, curve)

    print(f"\nheld-out denoising loss (eps, L2) after N steps; batch {args.batch}, {args.frames}x{args.size}x{args.size}, "
          f"{args.threads} threads")
    steps = [s for s, _ in next(iter(results.values()))[2]]
    print("| model | params | s/step | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("|---|---|---|" + "---|" * len(steps))
    for name, (params, per_step, curve) in results.items():
        print(f"| {name} | {params / 1e6:.2f} M | {per_step:.2f} | " + " | ".join(f"{v:.4f}" for _, v in curve) + " |")
    if len(results) == 2:
        (_, a_s, a), (_, b_s, b) = results.values()
        print(f"final loss ratio ours/peer: {a[-1][1] / b[-1][1]:.3f}; step time ratio peer/ours: {b_s / a_s:.2f}x")


if __name__ == "__main__":
    main()
