"""Generation throughput of the shapes world on one core, against the target of 2,000 clips/s (8x32x32).

    .venv/bin/python experiments/bench/bench_shapes.py [--clips 2048] [--repeats 3] [--batch 256]

Paths: `ShapesWorld.clips` on batches of `--batch` indices (the vectorised path `__getitems__` uses),
per-item `ShapesDataset.__getitem__`, and a DataLoader (batch 16, `collate_clips`) with 0 and 2 workers,
at 8x32x32 and 8x64x64. Prints clips/s in wall time and in this process's CPU time (steadier when other
jobs share the cores; not shown for worker processes, whose CPU time this process does not see); each
figure is the median of `--repeats` runs over fresh indices; `ratio` is clips/s over the target. Last, the
CPU time of the batch path split into its stages.
"""
from __future__ import annotations

import os

# one core: set before numpy / torch start their thread pools
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402

from sg2video.data.clips import collate_clips  # noqa: E402
from sg2video.data.shapes import ShapesDataset, ShapesWorld  # noqa: E402

TARGET = 2000.0  # clips/s of 8x32x32 on one core


Clock = tuple[float, float]  # (wall, cpu) when timing starts
Run = Callable[[int], tuple[int, Clock]]  # first index -> (clips made, clock at start)


def clock() -> Clock:
    return time.perf_counter(), time.process_time()


def measure(run: Run, repeats: int) -> tuple[float, float]:
    """Median (wall, cpu) clips/s over `repeats` runs on fresh indices, after one warm-up run."""
    run(10**7)
    wall, cpu = [], []
    for repeat in range(repeats):
        made, (wall0, cpu0) = run(repeat * 10**6)
        wall.append(made / (time.perf_counter() - wall0))
        cpu.append(made / max(time.process_time() - cpu0, 1e-9))
    return statistics.median(wall), statistics.median(cpu)


def batch_path(world: ShapesWorld, clips: int, batch: int) -> Run:
    def run(first: int) -> tuple[int, Clock]:
        start = clock()
        for index in range(first, first + clips, batch):
            world.clips("train", list(range(index, index + batch)))
        return clips, start

    return run


def item_path(dataset: ShapesDataset, clips: int) -> Run:
    def run(first: int) -> tuple[int, Clock]:
        start = clock()
        for index in range(first, first + clips):
            dataset[index]
        return clips, start

    return run


def loader_path(dataset: ShapesDataset, clips: int, batch: int, workers: int) -> Run:
    """Steady state: the clock starts after a first batch, which pays for start-up and worker spawn."""

    def run(first: int) -> tuple[int, Clock]:
        subset = torch.utils.data.Subset(dataset, range(first, first + clips + batch))
        batches = iter(torch.utils.data.DataLoader(subset, batch_size=batch, collate_fn=collate_clips, num_workers=workers))
        next(batches)
        start = clock()
        return sum(b.batch_size for b in batches), start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2048, help="clips per timed run of the batch path at 32 px")
    parser.add_argument("--batch", type=int, default=256, help="indices per ShapesWorld.clips call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []  # (path, size, wall clips/s, cpu clips/s or None)
    for size, scale in ((32, 1), (64, 4)):  # 4x fewer clips at 64 px: same pixels per run
        world = ShapesWorld(size=size, frames=args.frames)
        dataset = ShapesDataset("train", length=10**8, size=size, frames=args.frames)
        clips = max(args.clips // scale, args.batch)
        rows.append((f"ShapesWorld.clips, batch {args.batch}", size, *measure(batch_path(world, clips, args.batch), args.repeats)))
        rows.append(("__getitem__ per item", size, *measure(item_path(dataset, clips // 4), args.repeats)))
        for workers in (0, 2):
            wall, cpu = measure(loader_path(dataset, clips // 2, 16, workers), args.repeats)
            rows.append((f"DataLoader b16 workers={workers}", size, wall, cpu if workers == 0 else None))

    print(f"shapes world, {args.frames} frames, torch threads={torch.get_num_threads()}, target {TARGET:,.0f} clips/s "
          f"(8x32x32, one core); median of {args.repeats}; ratio = clips/s / target")
    print(f"{'path':32s} {'frames':>9s} {'wall clips/s':>13s} {'ratio':>6s} {'cpu clips/s':>12s} {'ratio':>6s}")
    for path, size, wall, cpu in rows:
        cpu_text = f"{cpu:12,.0f} {cpu / TARGET:6.2f}" if cpu is not None else f"{'-':>12s} {'-':>6s}"
        print(f"{path:32s} {f'{args.frames}x{size}x{size}':>9s} {wall:13,.0f} {wall / TARGET:6.2f} {cpu_text}")
    print("batch path at 32 px, CPU ms per 1,000 clips: " + ", ".join(
        f"{stage} {ms:.0f}" for stage, ms in breakdown(ShapesWorld(size=32, frames=args.frames), args.clips, args.batch)))


def breakdown(world: ShapesWorld, clips: int, batch: int) -> list[tuple[str, float]]:
    """Where the batch path's time goes: parameters (rejection sampling), pixels, graphs, item dicts."""
    spent = dict.fromkeys(("params", "render", "graphs", "items"), 0.0)
    for first in range(0, clips, batch):
        indices = list(range(first, first + batch))
        t0 = time.process_time()
        params = [world.params("train", i) for i in indices]
        t1 = time.process_time()
        world.render(params)
        t2 = time.process_time()
        for p in params:
            world.graphs(p)
        t3 = time.process_time()
        world.clips("train", indices)  # the whole path again; items = what is left after the three stages
        t4 = time.process_time()
        spent["params"] += t1 - t0
        spent["render"] += t2 - t1
        spent["graphs"] += t3 - t2
        spent["items"] += (t4 - t3) - (t3 - t0)
    return [(stage, 1e6 * seconds / clips) for stage, seconds in spent.items()]

if __name__ == "__main__":
    main()
