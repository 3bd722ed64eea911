"""Data loading: clips/s through the training DataLoader, and the share of a training step it takes.

    .venv/bin/python experiments/bench/bench_data.py                      # all three parts
    .venv/bin/python experiments/bench/bench_data.py --only shapes --workers 0 2
    .venv/bin/python experiments/bench/bench_data.py --only step --steps 3
    .venv/bin/python experiments/bench/bench_data.py --only action_genome --ag-root /data/ag   # a prepared real root

Every loader is the one `sg2video.train.loop.fit` builds: DataLoader(batch_sampler=StepBatchSampler,
collate_fn=collate_clips, num_workers=N) over `build_dataset(cfg.data, "train")`, at train.batch_size.

1. shapes: clips/s of the default `shapes` data (8x32x32) with 0 and 2 workers; the first batch (worker
   start-up included) is timed apart from the steady rate.
2. step: the share of a training step the loader takes in the default run (train.num_workers = 0, so the
   batch is made in the training process): each step fetches a batch (`next(loader)`, timed) and then runs
   the real diffusion loss (`DiffusionTask.loss` with conf/model/unet.yaml, a frozen untrained encoder),
   backward, gradient clipping, AdamW and the EMA update, as the loop does. Prints the per-step medians and
   fetch / (fetch + train), in wall and process-CPU time (target: the loader < 5% of the step).
3. action_genome: clips/s of the Action Genome loader (decord) with 0 and 2 workers on a synthetic root in
   the exact release format, built by `build_root` of tests/test_action_genome.py (192x128 mp4s of 20-40
   frames, annotated every frame or so) and prepared with `prepare_action_genome`; or, with --ag-root, on a
   real root that prepare.py has indexed. The synthetic videos are small and short, so real Charades
   videos (longer, larger, sparser annotations: more seeking) decode slower per clip.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_unet.py: spinning threads on a shared machine

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from sg2video.config import register_resolvers  # noqa: E402
from sg2video.data import build_dataset  # noqa: E402
from sg2video.data.clips import collate_clips  # noqa: E402
from sg2video.train.loop import StepBatchSampler  # noqa: E402


REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
os.environ.setdefault("SG2VIDEO_ROOT", str(REPO_ROOT))  # conf/config.yaml finds +experiment=NAME through it


def compose_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


def train_loader(dataset, batch_size: int, workers: int, batches: int, seed: int = 0) -> DataLoader:
    """The DataLoader `fit` builds (without pin_memory: CPU)."""
    sampler = StepBatchSampler(len(dataset), batch_size, 0, batches, seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_clips, num_workers=workers,
                      persistent_workers=False, generator=torch.Generator().manual_seed(seed))


def loader_rate(dataset, batch_size: int, workers: int, batches: int) -> tuple[float, float]:
    """(seconds to the first batch, clips/s over the following `batches` batches)."""
    start = time.perf_counter()
    batch_iter = iter(train_loader(dataset, batch_size, workers, batches + 1))
    next(batch_iter)
    first = time.perf_counter() - start
    start, clips = time.perf_counter(), 0
    for batch in batch_iter:
        clips += batch.batch_size
    return first, clips / (time.perf_counter() - start)


def report_rates(name: str, dataset, frames: int, batch_size: int, workers: list[int], batches: int) -> None:
    for n in workers:
        first, rate = loader_rate(dataset, batch_size, n, batches)
        print(f"{name}: {n} worker(s), batch {batch_size}: {rate:8.1f} clips/s = {rate * frames:7.0f} frames/s over "
              f"{batches} batches (first batch after {first:.2f} s)", flush=True)


# -- 1. shapes -------------------------------------------------------------------------------------------------

def bench_shapes(args: argparse.Namespace) -> None:
    cfg = compose_config(args.set)
    dataset = build_dataset(cfg.data, "train")
    shape = f"{cfg.data.frames}x{cfg.data.size}x{cfg.data.size}"
    report_rates(f"shapes {shape}", dataset, int(cfg.data.frames), int(cfg.train.batch_size), args.workers,
                 args.batches)


# -- 2. the loader's share of a training step -----------------------------------------------------------------

def bench_step(args: argparse.Namespace) -> None:
    from sg2video.encoder.pretrain import build_pretrainer
    from sg2video.denoiser import Denoiser, build_unet
    from sg2video.sampling import build_diffusion
    from sg2video.stages.diffusion import DiffusionTask
    from sg2video.train.loop import ema_update

    cfg = compose_config(args.set)
    torch.manual_seed(int(cfg.train.seed))
    dataset = build_dataset(cfg.data, "train")
    cond_dim = int(cfg.encoder.cond_dim)
    encoder = build_pretrainer(cfg.encoder, dataset.vocab, int(cfg.data.size)).graph_encoder
    encoder.eval().requires_grad_(False)
    model = Denoiser(build_unet(cfg.model, 3, cond_dim), dataset.vocab.num_objects, cond_dim)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    task = DiffusionTask(model, encoder, None, build_diffusion(cfg.diffusion), cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg.train.lr),
                                  weight_decay=float(cfg.train.weight_decay))
    batch_size, workers = int(cfg.train.batch_size), int(cfg.train.num_workers)
    batches = iter(train_loader(dataset, batch_size, workers, args.steps + 1, int(cfg.train.seed)))
    params = sum(p.numel() for p in model.parameters())
    print(f"train step: model.dim={cfg.model.dim} dim_mults={list(cfg.model.dim_mults)} cond={cfg.model.cond} "
          f"({params:,} parameters), batch {batch_size} clips of {cfg.data.frames}x{cfg.data.size}x{cfg.data.size}, "
          f"train.num_workers={workers}, {torch.get_num_threads()} thread(s)", flush=True)
    fetch_wall, fetch_cpu, train_wall, train_cpu = [], [], [], []
    model.train()
    for step in range(args.steps + 1):  # step 0 warms up
        wall, cpu = time.perf_counter(), time.process_time()
        batch = next(batches)
        fetched_wall, fetched_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        task.loss(model, batch, step)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.train.grad_clip))
        optimizer.step()
        ema_update(ema, model, float(cfg.train.ema_decay))
        done_wall, done_cpu = time.perf_counter(), time.process_time()
        if step:
            fetch_wall.append(fetched_wall - wall)
            fetch_cpu.append(fetched_cpu - cpu)
            train_wall.append(done_wall - fetched_wall)
            train_cpu.append(done_cpu - fetched_cpu)
            print(f"step {step}: fetch {fetch_wall[-1] * 1e3:.1f} ms (cpu {fetch_cpu[-1] * 1e3:.1f}), "
                  f"train {train_wall[-1]:.2f} s (cpu {train_cpu[-1]:.2f})", flush=True)
    fw, fc = statistics.median(fetch_wall), statistics.median(fetch_cpu)
    tw, tc = statistics.median(train_wall), statistics.median(train_cpu)
    print(f"median: fetch {fw * 1e3:.1f} ms, train {tw:.2f} s; the loader takes {100 * fw / (fw + tw):.2f}% of the "
          f"step in wall time, {100 * fc / (fc + tc):.2f}% in cpu time (target < 5%)")


# -- 3. Action Genome (decord) ---------------------------------------------------------------------------------

def synthetic_action_genome(root: Path, frames: int) -> None:
    """A release-format root by the Action Genome test's builder, indexed for clips of `frames` frames."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from test_action_genome import build_root

    from sg2video.data.action_genome import prepare_action_genome

    build_root(root)
    prepare_action_genome(root, frames, unpickle_ok=True)


def bench_action_genome(args: argparse.Namespace) -> None:
    import warnings

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF_DIR / "data" / "action_genome.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        if args.ag_root:
            cfg.root, where = args.ag_root, args.ag_root
        else:
            cfg.frames = args.ag_frames
            cfg.root, where = tmp, "synthetic release-format root (tests/test_action_genome.py)"
            synthetic_action_genome(Path(tmp), int(cfg.frames))
        dataset = build_dataset(cfg, "train")
        name = f"action_genome {cfg.frames}x{cfg.size}x{cfg.size} ({len(dataset)} train clips, {where})"
        with warnings.catch_warnings():  # the synthetic root's corrupt mp4 (skipped by the dataset) also makes
            warnings.simplefilter("ignore")  # ffmpeg and decord print "moov atom not found" on stderr: expected
            report_rates(name, dataset, int(cfg.frames), args.ag_batch, args.workers, args.batches)
        print(f"(conf/data/action_genome.yaml has data.num_workers={cfg.num_workers}; "
              "the training loop's DataLoader takes train.num_workers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("shapes", "step", "action_genome"), default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override of the default config (repeatable), e.g. model.dim=64")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=50, help="batches timed per loader")
    parser.add_argument("--steps", type=int, default=3, help="training steps timed (after one warm-up step)")
    parser.add_argument("--ag-root", default=None, help="a real Action Genome root, prepared by prepare.py")
    parser.add_argument("--ag-frames", type=int, default=3, help="frames per clip on the synthetic root")
    parser.add_argument("--ag-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, as a run)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only in (None, "shapes"):
        bench_shapes(args)
    if args.only in (None, "step"):
        bench_step(args)
    if args.only in (None, "action_genome"):
        bench_action_genome(args)


if __name__ == "__main__":
    main()
