"""GPU figures of the 3D UNet and the sampler, for `experiments/bench/gpu_check.sh` (needs CUDA).

Prints, one line each:
- train throughput (clips/s) of sg2video's UNet3D and of video-diffusion-pytorch's Unet3D at equal width
  (dim 64, mults 1-2-4, 16 frames of 64x64, batch 8, fp32), and each one's MFU: FLOPs of one step counted by
  torch.utils.flop_counter over the device's peak (`--peak-tflops`, default from the device name);
- ours in bf16 autocast and with torch.compile: the speed-up over fp32 eager;
- DDIM-50 latency of one 16-frame 64x64 clip with classifier-free guidance (a random-weight generator, so only
  the time counts);
- peak memory of sampling a 128-frame video chunk by chunk.
Usage: python experiments/bench/bench_gpu.py [--steps 20] [--peak-tflops 989]
"""
from __future__ import annotations

import argparse
import time

import torch

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense bf16 tensor cores


def peak_tflops(name: str) -> float | None:
    return next((value for key, value in PEAK_TFLOPS.items() if key in name), None)


def ours(batch: int, frames: int, size: int, dim: int):
    from sg2video.unet import Conditioning, UNet3D

    model = UNet3D(dim=dim, dim_mults=(1, 2, 4), cond="crossattn", cond_dim=256).cuda()
    tokens = torch.randn(batch, frames, 12, 256, device="cuda")
    cond = Conditioning(tokens=tokens, token_mask=torch.ones(batch, frames, 12, dtype=torch.bool, device="cuda"),
                        global_vec=torch.randn(batch, frames, 256, device="cuda"))
    t = torch.randint(1, 1000, (batch, frames), device="cuda")
    return model, lambda x, net=model: net(x, t, cond)


def peer(batch: int, dim: int):
    from video_diffusion_pytorch.video_diffusion_pytorch import Unet3D

    model = Unet3D(dim=dim, dim_mults=(1, 2, 4), cond_dim=256).cuda()
    t, c = torch.randint(1, 1000, (batch,), device="cuda"), torch.randn(batch, 256, device="cuda")
    return model, lambda x: model(x, t, cond=c)


def step_fn(model, forward, precision: str):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step(x):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = (forward(x).float() - x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timed(step, x, steps: int) -> float:
    for _ in range(3):
        step(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(x)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def flops_per_step(forward, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        (forward(x).float() - x).square().mean().backward()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or peak_tflops(name)
    print(f"device: {name}, torch {torch.__version__}, peak {peak} TFLOPS (bf16 dense)")
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size, device="cuda")
    shape = f"batch {args.batch} x {args.frames}x{args.size}x{args.size}, dim {args.dim}"

    results = {}
    candidates = {"ours": lambda: ours(args.batch, args.frames, args.size, args.dim)}
    try:
        import video_diffusion_pytorch  # noqa: F401

        candidates["video-diffusion-pytorch"] = lambda: peer(args.batch, args.dim)
    except ImportError:
        print("video-diffusion-pytorch is not installed (pip install -e '.[bench]'): no peer row")
    for label, make in candidates.items():
        model, forward = make()
        flops = flops_per_step(forward, x)
        seconds = timed(step_fn(model, forward, "fp32"), x, args.steps)
        mfu = flops / seconds / (peak * 1e12) if peak else float("nan")
        results[label] = seconds
        print(f"train fp32 {label}: {args.batch / seconds:.1f} clips/s ({shape}), {flops / 1e9:.1f} GFLOP/step, "
              f"MFU {100 * mfu:.1f}%")
        del model
    model, forward = ours(args.batch, args.frames, args.size, args.dim)
    bf16 = timed(step_fn(model, forward, "bf16"), x, args.steps)
    print(f"train bf16 ours: {args.batch / bf16:.1f} clips/s, {results['ours'] / bf16:.2f}x fp32")
    compiled = torch.compile(model)
    compiled_s = timed(step_fn(model, lambda v: forward(v, net=compiled), "bf16"), x, args.steps)
    print(f"train bf16 + compile ours: {args.batch / compiled_s:.1f} clips/s, {results['ours'] / compiled_s:.2f}x fp32")

    from sg2video.diffusion import GaussianDiffusion, make_sampler, make_schedule, sample, sample_long
    from sg2video.unet import Conditioning

    diffusion = GaussianDiffusion(make_schedule("cosine", 1000), "x0")
    model.eval()
    cond = Conditioning(global_vec=torch.randn(1, args.frames, 256, device="cuda"))
    net = lambda v, t, c, drop: model(v, t, None, drop)  # noqa: E731
    generator = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        sample(diffusion, net, (1, 3, args.frames, args.size, args.size), cond, make_sampler("ddim", diffusion.schedule, 5),
               guidance=2.0, generator=generator, device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        sample(diffusion, net, (1, 3, args.frames, args.size, args.size), cond,
               make_sampler("ddim", diffusion.schedule, 50), guidance=2.0, generator=generator, device="cuda")
        torch.cuda.synchronize()
        print(f"DDIM-50 with guidance, one {args.frames}x{args.size}x{args.size} clip: {time.perf_counter() - start:.2f} s")
        torch.cuda.reset_peak_memory_stats()
        sample_long(diffusion, net, lambda: make_sampler("ddim", diffusion.schedule, 10), 128, args.frames, 4,
                    lambda s, e: None, 3, args.size, args.size, guidance=2.0, generator=generator, device="cuda")
        print(f"128 frames chunk by chunk ({args.frames}-frame chunks, 4 prefix): peak "
              f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
