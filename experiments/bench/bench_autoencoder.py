"""Train the default frame autoencoder (conf/autoencoder/kl.yaml) on the shapes world and measure it.

Trains with the same collate and loss as the `autoencoder` stage (a plain loop here, so time is spent on
training only) for `--steps` steps or `--minutes`, then on held-out (val) clips prints
- PSNR of decoded ground truth (posterior mean, clamped) in dB,
- the compliance checker on decoded ground truth (object / relation accuracy, extra objects),
- the same after adding noise to the unit-variance latents (how much latent error the decoder tolerates),
- encode and decode throughput in frames/s (batch of 8 clips).
Usage: .venv/bin/python experiments/bench/bench_autoencoder.py [--size 32] [--steps 2000] [--threads 2]
       [--set latent_channels=4 --set train.lr=1e-3 ...]
64 px: --size 64 --set downsample=8 --set channel_mults=[1,2,2,2] (8x8 latents again).

Measured on a shared 2-core machine, 1 thread (2 threads on a busy machine were 5-70x slower per step:
OpenMP threads wait on each other), 64 val clips:
  32 px, defaults, 2000 steps, 80 s: PSNR 34.9 dB, object 0.999, relation 1.000 (1.000 / 1.000 at 1500 steps);
    latent noise 0.3: 30.2 dB, 0.999 / 0.999; encode ~4600, decode ~2500 frames/s.
  64 px, downsample 8, 1500 steps, 353 s (32 val clips): PSNR 29.0 dB, object 1.000, relation 1.000.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sg2video.autoencoder import psnr
from sg2video.autoencoder.train import FrameSampler, autoencoder_loop_config, build_autoencoder
from sg2video.data.clips import video_to_model, video_to_uint8
from sg2video.data.shapes import ShapesDataset
from sg2video.eval.compliance import check_video
from sg2video.train.loop import lr_lambda

CONFIG = Path(__file__).resolve().parents[2] / "conf" / "autoencoder" / "kl.yaml"


@torch.no_grad()
def evaluate(model, items: list[dict], batch: int = 8, noise: float = 0.0) -> dict[str, float]:
    """Scores of decoded ground truth; `noise` > 0 adds Gaussian noise of that std to the (scaled) latents
    first: how much error in generated latents the decoder tolerates."""
    model.eval()
    video = video_to_model(torch.stack([item["video"] for item in items]))
    gen = torch.Generator().manual_seed(0)
    recon = []
    for i in range(0, len(items), batch):
        z = model.encode(video[i:i + batch])
        recon.append(model.decode(z + noise * torch.randn(z.shape, generator=gen)))
    recon = torch.cat(recon)
    scores = [check_video(video_to_uint8(clip), item["graphs"]) for clip, item in zip(recon, items)]
    truth = [check_video(video_to_uint8(clip), item["graphs"]) for clip, item in zip(video[:4], items)]
    assert all(s.object_accuracy == 1.0 and s.relation_accuracy == 1.0 for s in truth), "checker rejects ground truth"
    model.train()
    return {
        "psnr": psnr(video, recon),
        "object_acc": sum(s.object_accuracy for s in scores) / len(scores),
        "relation_acc": sum(s.relation_accuracy for s in scores) / len(scores),
        "extra_objects": sum(s.extra_objects for s in scores) / len(scores),
    }


@torch.no_grad()
def throughput(model, size: int, frames: int, clips: int = 8, repeats: int = 3) -> tuple[float, float]:
    model.eval()
    video = torch.rand(clips, 3, frames, size, size) * 2 - 1
    z = model.encode(video)
    enc, dec = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        z = model.encode(video)
        t1 = time.perf_counter()
        model.decode(z)
        enc.append(t1 - t0)
        dec.append(time.perf_counter() - t1)
    n = clips * frames
    return n / min(enc), n / min(dec)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="default: autoencoder.train.max_steps")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop training after this long (0: no limit)")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--val-clips", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-noise", type=float, nargs="*", default=[0.1, 0.3],
                        help="after training, score decodes of noisy latents at these noise levels")
    parser.add_argument("--set", action="append", default=[], help="override a config key, e.g. latent_channels=8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG), OmegaConf.from_dotlist(args.set))
    loop = autoencoder_loop_config(cfg, max_steps=args.steps, seed=args.seed)
    torch.manual_seed(loop.seed)
    model = build_autoencoder(cfg)
    print(f"autoencoder: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{OmegaConf.to_container(cfg, resolve=True)}")
    train = ShapesDataset("train", size=args.size, frames=args.frames)
    val_items = ShapesDataset("val", size=args.size, frames=args.frames).__getitems__(list(range(args.val_clips)))
    collate = FrameSampler(int(cfg.train.get("frames_per_clip", 0)), loop.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(loop))
    with torch.no_grad():
        latent_shape = tuple(model.encode(video_to_model(val_items[0]["video"][None])).shape[1:])
    print(f"size {args.size}, {args.frames} frames, latents (Cz, T, h, w) = {latent_shape}")
    model.train()
    train_s, step = 0.0, 0
    while step < loop.max_steps:
        t0 = time.perf_counter()
        batch = collate(train.__getitems__(list(range(step * loop.batch_size, (step + 1) * loop.batch_size))))
        terms = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if loop.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
        opt.step()
        sched.step()
        step += 1
        train_s += time.perf_counter() - t0
        out_of_time = args.minutes > 0 and train_s > 60 * args.minutes
        if step % args.eval_every == 0 or step == loop.max_steps or out_of_time:
            m = evaluate(model, val_items)
            print(f"step {step:5d}  train {train_s:6.1f} s ({1000 * train_s / step:.0f} ms/step)  "
                  f"loss {float(terms['loss'].detach()):.4f}  PSNR {m['psnr']:.2f} dB  object {m['object_acc']:.3f}  "
                  f"relation {m['relation_acc']:.3f}  extra {m['extra_objects']:.3f}", flush=True)
        if out_of_time:
            break
    model.eval()
    with torch.no_grad():  # as the stage does: 1 / std of training latents
        latents = torch.cat([model.encode(collate(train.__getitems__(list(range(i, i + 8))))) for i in range(0, 32, 8)])
    model.fit_scale_factor(latents)
    for noise in args.latent_noise:
        m = evaluate(model, val_items, noise=noise)
        print(f"latent noise std {noise} (unit-variance latents): PSNR {m['psnr']:.2f} dB  "
              f"object {m['object_acc']:.3f}  relation {m['relation_acc']:.3f}  extra {m['extra_objects']:.3f}")
    enc, dec = throughput(model, args.size, args.frames)
    print(f"scale factor {float(model.scale_factor):.4f}; encode {enc:.0f} frames/s, decode {dec:.0f} frames/s "
          f"({args.threads} threads)")
    print(f"trained {step} steps in {train_s:.1f} s")


if __name__ == "__main__":
    main()
