"""Train-step throughput of sg2video's UNet3D vs video-diffusion-pytorch's Unet3D (the peer) on CPU.

Both at dim=32, dim_mults=(1, 2, 4); batch 4 clips of 8x32x32; one step = forward + MSE + backward + Adam.
Runs alternate (ours, peer, ours, ...) so background load hits both alike; prints clips/s per round and the
median, in wall time (throughput) and in process CPU time (steadier when other jobs share the cores).
Usage: .venv/bin/python experiments/bench/bench_unet.py [--threads 2] [--rounds 5] [--cond crossattn]
       .venv/bin/python experiments/bench/bench_unet.py --convs   # per-frame conv: Conv3d vs Conv2d
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning. On a busy machine (other jobs on the same 2 cores) spinning
# threads wait for a descheduled partner at every op: measured here, ours went from 1.6 to 16 s/step and the
# peer from 8 to 30 s/step. Set before torch starts its thread pool; `OMP_WAIT_POLICY=ACTIVE` to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from sg2video.unet import Conditioning, UNet3D  # noqa: E402


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_ours(cond: str, batch: int, frames: int, size: int, cond_dim: int = 64):
    model = UNet3D(dim=32, dim_mults=(1, 2, 4), cond=cond, cond_dim=cond_dim)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(batch, frames, 12, cond_dim, generator=g)
    globals_ = torch.randn(batch, frames, cond_dim, generator=g)
    boxes = torch.rand(batch, frames, 6, 4, generator=g).sort(-1).values  # sorted: x0 <= x1 and y0 <= y1
    cond_batch = Conditioning(
        tokens=tokens,
        token_mask=torch.ones(batch, frames, 12, dtype=torch.bool),
        global_vec=globals_,
        layout_boxes=boxes,
        layout_embed=torch.randn(batch, frames, 6, cond_dim, generator=g),
    )
    t = torch.randint(0, 1000, (batch, frames), generator=g)
    return model, lambda x: model(x, t, cond_batch)


def make_peer(batch: int, cond_dim: int = 64):
    from video_diffusion_pytorch.video_diffusion_pytorch import Unet3D

    model = Unet3D(dim=32, dim_mults=(1, 2, 4), cond_dim=cond_dim)
    g = torch.Generator().manual_seed(0)
    t, c = torch.randint(0, 1000, (batch,), generator=g), torch.randn(batch, cond_dim, generator=g)
    return model, lambda x: model(x, t, cond=c)


def step_time(model, forward, x, opt, steps: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per train step. CPU time is the steadier number on a shared
    machine; wall time is the throughput."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = (forward(x) - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def compare_convs(batch: int, frames: int, size: int, rounds: int) -> None:
    """Per-frame 3x3 conv as Conv3d (1, 3, 3) on (b c t h w) vs Conv2d on ((b t) c h w), forward + backward."""
    for ch in (32, 64):
        conv3 = torch.nn.Conv3d(ch, ch, (1, 3, 3), padding=(0, 1, 1))
        conv2 = torch.nn.Conv2d(ch, ch, 3, padding=1)
        x5 = torch.randn(batch, ch, frames, size, size, requires_grad=True)
        x4 = torch.randn(batch * frames, ch, size, size, requires_grad=True)
        results: dict[str, list[float]] = {"conv3d(1,3,3)": [], "conv2d over (b t)": []}
        for _ in range(rounds):
            for name, conv, inp in (("conv3d(1,3,3)", conv3, x5), ("conv2d over (b t)", conv2, x4)):
                conv(inp).sum().backward()  # warm-up / allocator
                start = time.process_time()
                for _ in range(5):
                    conv(inp).sum().backward()
                results[name].append((time.process_time() - start) / 5 * 1e3)
        print(f"{ch} channels, {frames}x{size}x{size}, batch {batch}: " + ", ".join(
            f"{name} {statistics.median(v):.1f} ms cpu" for name, v in results.items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="train steps per round and model")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--cond", default="crossattn")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--convs", action="store_true", help="only compare Conv3d (1,3,3) with Conv2d over (b t)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.convs:
        compare_convs(args.batch, args.frames, args.size, args.rounds)
        return
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    runs = {"ours": make_ours(args.cond, args.batch, args.frames, args.size)}
    if not args.no_peer:
        runs["peer"] = make_peer(args.batch)
    opts = {name: torch.optim.Adam(model.parameters(), lr=1e-4) for name, (model, _) in runs.items()}
    print(f"threads {args.threads}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, batch {args.batch} clips of "
          f"{args.frames}x{args.size}x{args.size}, ours cond={args.cond}")
    for name, (model, _) in runs.items():
        print(f"{name}: {count(model):,} parameters")
    if "peer" in runs:  # equal width should mean a similar size (within 20%): the comparison is fair
        print(f"parameters ours / peer: {count(runs['ours'][0]) / count(runs['peer'][0]):.2f}")
    for name, (model, forward) in runs.items():  # warm-up
        step_time(model, forward, x, opts[name], 1)
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu_times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        line = []
        for name, (model, forward) in runs.items():
            seconds, cpu = step_time(model, forward, x, opts[name], args.steps)
            times[name].append(seconds)
            cpu_times[name].append(cpu)
            line.append(f"{name} {seconds:.3f} s/step {args.batch / seconds:.2f} clips/s (cpu {cpu:.3f} s)")
        print(f"round {r}: " + " | ".join(line), flush=True)
    for name, values in times.items():
        med, cpu = statistics.median(values), statistics.median(cpu_times[name])
        print(f"{name}: median {med:.3f} s/step = {args.batch / med:.2f} clips/s (min {min(values):.3f} s), "
              f"cpu {cpu:.3f} s/step")
    if "peer" in times:
        ratio = statistics.median(times["peer"]) / statistics.median(times["ours"])
        cpu_ratio = statistics.median(cpu_times["peer"]) / statistics.median(cpu_times["ours"])
        print(f"speed-up ours vs peer (median): wall {ratio:.2f}x, cpu time {cpu_ratio:.2f}x")


if __name__ == "__main__":
    main()
