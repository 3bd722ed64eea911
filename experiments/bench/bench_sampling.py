"""Sampling speed (DDIM vs DDPM) and long-video time and peak memory of `VideoGenerator.generate`.

    .venv/bin/python experiments/bench/bench_sampling.py                       # conf/ model at model.dim=32
    .venv/bin/python experiments/bench/bench_sampling.py --dim 8 --ddpm-steps 100   # quicker, DDPM projected
    .venv/bin/python experiments/bench/bench_sampling.py --ckpt outputs/runs/.../checkpoints/diffusion/last.pt
    .venv/bin/python experiments/bench/bench_sampling.py --only memory --lengths 16 64 128 --memory-steps 10

Without --ckpt the generator is built untrained from the configs in conf/ (data, encoder, model, diffusion;
`--dim` sets model.dim, `--set key=value` any other override, `--set +experiment=smoke` a named experiment)
through `VideoGenerator.from_state`, the path a real checkpoint takes. Sampling cost does not depend on
the weights: the same tensors of the same shapes go through the same ops whatever their values, so an
untrained generator times like a trained one of the same config.

1. speed: wall and process-CPU seconds of DDIM-50 and DDPM-T (T = diffusion.timesteps, every timestep)
   for one video of the model's clip length and one of `--speed-frames` (16; longer than a clip of 8, so
   it is sampled chunk by chunk with the same chunks for both samplers); prints the ratio (target >= 15x).
   `--ddpm-steps N < T` times a respaced N-step DDPM (the same model call and update per step) and
   projects it to T steps linearly; it says "projected" when it does (checked at model.dim=8: DDPM-1000
   took 49.3 cpu s, the projection from DDPM-100 said 48.5).
2. memory: each of `--lengths` frames in a fresh subprocess (DDIM, `--memory-steps` steps): after a
   warm-up generation that allocates every chunk shape once, the process's resident set (VmRSS) right
   before sampling, the peak during sampling (VmHWM, reset just before through /proc/self/clear_refs) and
   the growth between the two, the drift of the resident set from the end of the first chunk to the end
   of the last (a leak is a slope; the only thing that should grow is the video's own output buffer,
   printed beside it), and the lifetime peak (ru_maxrss, mostly the ~0.7 GB that `import torch` maps).
   The children run with a fixed glibc mmap threshold (CHILD_ENV) so RSS follows live tensors. Time
   should grow with the number of chunks and memory stay flat: target peak(128 frames) <= 1.2x
   peak(16 frames). On CUDA (`--device cuda`) the same with torch.cuda memory statistics.
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning (see bench_unet.py: spinning threads on a shared machine
# wait for descheduled partners at every op). Set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from sg2video.config import register_resolvers, to_dict  # noqa: E402
from sg2video.data import build_dataset  # noqa: E402
from sg2video.diffusion import plan_chunks  # noqa: E402
from sg2video.encoder.pretrain import build_pretrainer  # noqa: E402
from sg2video.errors import UserError  # noqa: E402
from sg2video.denoiser import Denoiser, build_unet  # noqa: E402
from sg2video.graphs import SceneGraph  # noqa: E402
from sg2video.sampling import VideoGenerator  # noqa: E402
from sg2video.train.checkpoint import load_checkpoint  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
os.environ.setdefault("SG2VIDEO_ROOT", str(REPO_ROOT))  # conf/config.yaml finds +experiment=NAME through it
MB = 1024 * 1024
# A fixed mmap threshold: glibc otherwise raises it as large blocks are freed (up to 32 MB), after which freed
# tensors stay in the heap and the resident set follows fragmentation, not the live working set (measured
# here at model.dim=32: peak growth jumped between 18 and 37 MB from run to run; with this, 29.0 +- 1 MB).
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072")}


# -- the generator and its graphs ----------------------------------------------------------------------------

def untrained_state(overrides: list[str], seed: int = 0) -> dict:
    """The dict the diffusion stage stores in checkpoints/diffusion/last.pt, with freshly initialised weights."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    if cfg.diffusion.space != "pixel":
        raise UserError("diffusion.space=latent needs a trained autoencoder: pass --ckpt of such a run instead")
    torch.manual_seed(seed)
    vocab = build_dataset(cfg.data, "val").vocab
    size, cond_dim = int(cfg.data.size), int(cfg.encoder.cond_dim)
    encoder = build_pretrainer(cfg.encoder, vocab, size).graph_encoder
    denoiser = Denoiser(build_unet(cfg.model, 3, cond_dim), vocab.num_objects, cond_dim)
    return {
        "stage": "diffusion",
        "config": {"data": to_dict(cfg.data)},
        "vocab": vocab.to_dict(),
        "encoder_config": to_dict(cfg.encoder),
        "graph_encoder": encoder.state_dict(),
        "model_config": to_dict(cfg.model),
        "diffusion_config": to_dict(cfg.diffusion),
        "image_size": size,
        "latent_size": size,
        "channels": 3,
        "clip_frames": int(cfg.data.frames),
        "max_objects": int(cfg.data.get("max_objects", 0)) or None,
        "autoencoder": None,
        "model": denoiser.state_dict(),
        "ema": None,
    }


def load_state(args: argparse.Namespace) -> dict:
    if args.ckpt:
        return load_checkpoint(args.ckpt, "cpu")
    overrides = list(args.set)
    if args.dim is not None:
        overrides.append(f"model.dim={args.dim}")
    return untrained_state(overrides)


def graph_lists(state: dict, frames: int, batch: int = 1) -> list[list[SceneGraph]]:
    """`batch` per-frame graph lists of `frames` frames: clips of the run's dataset (val split) at the trained
    length, played forward and back as often as needed. (The shapes world cannot render one long clip: its
    objects must never touch, which long trajectories almost never manage.) Timing and memory depend on the
    graphs' sizes only, which this keeps."""
    data_cfg = OmegaConf.create(state["config"]["data"])
    dataset = build_dataset(data_cfg, "val")
    clips = [dataset[i]["graphs"] for i in range(batch)]
    return [[clip[bounce(i, len(clip))] for i in range(frames)] for clip in clips]


def bounce(i: int, n: int) -> int:
    """Frame i of a clip of n frames played forward and back: 0 .. n-1, n-2 .. 1, 0 .. ."""
    period = max(1, 2 * n - 2)
    return min(i % period, period - i % period)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_generate(generator: VideoGenerator, graphs, sampler: str, steps: int, guidance: float) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one `generate` call."""
    sync(generator.device)
    wall, cpu = time.perf_counter(), time.process_time()
    generator.generate(graphs, sampler=sampler, steps=steps, guidance=guidance, seed=0)
    sync(generator.device)
    return time.perf_counter() - wall, time.process_time() - cpu


def describe(generator: VideoGenerator, state: dict, args: argparse.Namespace) -> str:
    params = sum(p.numel() for p in generator.denoiser.parameters())
    model = state["model_config"]
    source = args.ckpt or "untrained, from conf/"
    return (f"generator: {source}; model.dim={model['dim']} dim_mults={list(model['dim_mults'])} "
            f"cond={model['cond']} ({params:,} parameters); clips of {generator.clip_frames} frames, "
            f"prefix {generator.prefix_frames}, {generator.size}x{generator.size}; guidance {args.guidance}; "
            f"device {args.device}, {torch.get_num_threads()} thread(s), "
            f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")


# -- 1. DDIM vs DDPM -------------------------------------------------------------------------------------------

def bench_speed(generator: VideoGenerator, state: dict, args: argparse.Namespace) -> None:
    timesteps = generator.diffusion.schedule.timesteps
    ddpm_steps = args.ddpm_steps or timesteps
    scale = timesteps / ddpm_steps
    label = f"DDPM-{timesteps}" + (f" (projected from DDPM-{ddpm_steps} x {scale:g})" if scale != 1 else "")
    lengths = sorted({generator.clip_frames, args.speed_frames})
    warm = max(lengths) if generator.prefix_frames else generator.clip_frames
    timed_generate(generator, graph_lists(state, warm), "ddim", 2, args.guidance)  # warm-up: every chunk shape
    for frames in lengths:
        if frames > generator.clip_frames and not generator.prefix_frames:
            print(f"{frames} frames: skipped (model.prefix_frames=0: the model cannot continue a video)")
            continue
        graphs = graph_lists(state, frames)
        chunks = len(plan_chunks(frames, generator.clip_frames, generator.prefix_frames))
        ddim_wall, ddim_cpu = timed_generate(generator, graphs, "ddim", args.ddim_steps, args.guidance)
        ddpm_wall, ddpm_cpu = timed_generate(generator, graphs, "ddpm", ddpm_steps, args.guidance)
        ddpm_wall, ddpm_cpu = ddpm_wall * scale, ddpm_cpu * scale
        kind = "one clip" if chunks == 1 else f"{chunks} chunks"
        print(f"{frames} frames ({kind}): DDIM-{args.ddim_steps} {ddim_wall:.2f} s (cpu {ddim_cpu:.2f} s) | "
              f"{label} {ddpm_wall:.1f} s (cpu {ddpm_cpu:.1f} s) | DDIM faster by {ddpm_wall / ddim_wall:.1f}x wall, "
              f"{ddpm_cpu / ddim_cpu:.1f}x cpu (target >= 15x)", flush=True)


# -- 2. long videos: time and peak memory per length, each in a fresh process ----------------------------------

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _reset_peak() -> bool:
    """Reset VmHWM to the current VmRSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(args: argparse.Namespace) -> None:
    """Runs in its own process: one long video of `args.child` frames; prints one JSON line."""
    state = load_state(args)
    generator = VideoGenerator.from_state(state, args.device)
    frames = args.child
    graphs = graph_lists(state, frames)
    # warm-up: a short video with every chunk length a long one uses, so allocator pools, oneDNN kernels and
    # the thread pool exist before the measurement
    warm = min(frames, 2 * generator.clip_frames)
    generator.generate([g[:warm] for g in graphs], sampler="ddim", steps=1, guidance=args.guidance)
    gc.collect()
    cuda = generator.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        current = torch.cuda.memory_allocated
    else:
        current = lambda: _status_kb("VmRSS") * 1024  # noqa: E731
        reset = _reset_peak()
    before = current()
    after_chunk: list[int] = []  # memory in use after each chunk: a leak shows as a slope

    def progress(done: int, total: int) -> None:
        if done % args.memory_steps == 0:
            after_chunk.append(current())

    sync(generator.device)
    wall, cpu = time.perf_counter(), time.process_time()
    generator.generate(graphs, sampler="ddim", steps=args.memory_steps, guidance=args.guidance, progress=progress)
    sync(generator.device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        # without the reset, VmHWM is the lifetime peak (maybe from building the model): growth is an upper bound
        peak = _status_kb("VmHWM") * 1024 if reset else max(before, _status_kb("VmHWM") * 1024)
    chunks = len(plan_chunks(frames, generator.clip_frames, generator.prefix_frames))
    print(json.dumps({
        "frames": frames, "chunks": chunks, "wall_s": wall, "cpu_s": cpu, "before": before, "peak": peak,
        "drift": after_chunk[-1] - after_chunk[0],
        "output": 4 * generator.channels * frames * generator.latent_size ** 2,  # the float video sample_long fills
        "lifetime_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cuda": cuda,
        "generator": describe(generator, state, args),
    }))


def child_command(args: argparse.Namespace, frames: int) -> list[str]:
    command = [sys.executable, __file__, "--child", str(frames), "--device", args.device, "--threads",
               str(args.threads), "--guidance", str(args.guidance), "--memory-steps", str(args.memory_steps)]
    if args.ckpt:
        command += ["--ckpt", args.ckpt]
    if args.dim is not None:
        command += ["--dim", str(args.dim)]
    for override in args.set:
        command += ["--set", override]
    return command


def bench_memory(args: argparse.Namespace) -> None:
    results = []
    for frames in args.lengths:
        done = subprocess.run(child_command(args, frames), capture_output=True, text=True, timeout=1800, env=CHILD_ENV)
        if done.returncode != 0:
            sys.exit(f"the {frames}-frame run failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    what = "CUDA memory allocated" if results[0]["cuda"] else "resident set"
    print(results[0]["generator"])
    print(f"long videos, DDIM-{args.memory_steps}, one process per length; {what} in MB")
    base = results[0]
    for r in results:
        growth = r["peak"] - r["before"]
        print(f"{r['frames']:4d} frames, {r['chunks']:3d} chunks: {r['wall_s']:6.2f} s (cpu {r['cpu_s']:6.2f} s, "
              f"{r['cpu_s'] / r['chunks']:.3f} cpu s/chunk) | before {r['before'] / MB:7.1f}, "
              f"peak {r['peak'] / MB:7.1f}, "
              f"growth {growth / MB:6.1f}, drift first->last chunk {r['drift'] / MB:+5.1f} (output buffer "
              f"{r['output'] / MB:.1f}) | lifetime peak {r['lifetime_peak'] / MB:7.1f}", flush=True)
    last = results[-1]
    base_growth, last_growth = base["peak"] - base["before"], last["peak"] - last["before"]
    print(f"{last['frames']} vs {base['frames']} frames: {last['chunks'] / base['chunks']:.1f}x chunks, "
          f"{last['wall_s'] / base['wall_s']:.1f}x wall, {last['cpu_s'] / base['cpu_s']:.1f}x cpu; "
          f"peak {last['peak'] / base['peak']:.3f}x (target <= 1.2x), growth over the pre-sampling "
          f"{'allocation' if base['cuda'] else 'RSS'} {last_growth / MB:.1f} vs {base_growth / MB:.1f} MB "
          f"({last_growth / max(base_growth, 1):.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None, help="a diffusion checkpoint (default: untrained, from conf/)")
    parser.add_argument("--dim", type=int, default=None, help="model.dim of the untrained generator")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for the untrained generator (repeatable)")
    parser.add_argument("--only", choices=("speed", "memory"), default=None)
    parser.add_argument("--guidance", type=float, default=2.0, help="as diffusion.guidance (2: doubled batch)")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--ddpm-steps", type=int, default=0, help="0: every timestep; N: time N, project to all")
    parser.add_argument("--speed-frames", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--memory-steps", type=int, default=10, help="DDIM steps per chunk for the long videos")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        memory_child(args)
        return
    if args.only != "memory":
        state = load_state(args)
        generator = VideoGenerator.from_state(state, args.device)
        print(describe(generator, state, args), flush=True)
        bench_speed(generator, state, args)
        del generator, state
    if args.only != "speed":
        bench_memory(args)


if __name__ == "__main__":
    main()
