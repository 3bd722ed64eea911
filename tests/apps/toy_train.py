"""Train a toy task through `sg2video.train.loop.fit`, for the loop's reliability tests and the DDP benchmark.

The task regresses a fixed nonlinear function of a per-index deterministic input (`ToyDataset`), with
dropout (so the RNG state matters) and an EMA copy. Run as a program, one process or under torchrun:

    python tests/apps/toy_train.py RUN_DIR --max-steps 30 --ckpt-every 8 [--die-at-step 13]
    torchrun --standalone --nproc_per_node=2 tests/apps/toy_train.py RUN_DIR --max-steps 6 --dropout 0

`--die-at-step K` SIGKILLs the process right after step K (a hook, rank 0); `--nan-at-steps 3,4` makes
the loss of those 0-based step indices NaN; `--dump DIR` writes each rank's final model / EMA to
`DIR/rank<r>.pt`; `--split-run-dir` gives rank r > 0 its own run dir `RUN_DIR_rank<r>` (to show it
writes nothing there). The last stdout line (of rank 0) is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sg2video.errors import exit_on_user_error
from sg2video.train.distributed import cleanup, setup_distributed
from sg2video.train.loop import FitResult, Hook, LoopConfig, fit

STAGE = "toy"


class ToyDataset(torch.utils.data.Dataset):
    """Item i: an input drawn from a generator seeded by i, and a fixed nonlinear target of it."""

    def __init__(self, length: int = 64, kind: str = "mlp", dim: int = 8, size: int = 32) -> None:
        self.length, self.kind, self.dim, self.size = length, kind, dim, size
        self.w_true = torch.randn(dim if kind == "mlp" else 3, generator=torch.Generator().manual_seed(1234))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(10_000 + i)
        if self.kind == "mlp":
            x = torch.randn(self.dim, generator=gen)
            return x, torch.sin(x @ self.w_true).unsqueeze(0)
        x = torch.randn(3, self.size, self.size, generator=gen)  # (C, H, W)
        return x, torch.tanh(x.mean(dim=(1, 2)) @ self.w_true * 4).unsqueeze(0)


def make_model(kind: str = "mlp", dim: int = 8, hidden: int = 32, dropout: float = 0.2) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden),
                             nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
    return nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, hidden, 3, padding=1),
                         nn.GELU(), nn.Dropout2d(dropout), nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
                         nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, 1))


class ToyTask:
    """MSE regression; NaN loss at the 0-based step indices in `nan_steps`; optional sleep per step."""

    def __init__(self, model: nn.Module, nan_steps: set[int] = frozenset(), step_sleep: float = 0.0) -> None:
        self.model, self.nan_steps, self.step_sleep = model, set(nan_steps), step_sleep

    def loss(self, model: nn.Module, batch, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        loss = (model(x) - y).pow(2).mean()
        if step in self.nan_steps:
            loss = loss * float("nan")
        if self.step_sleep:
            time.sleep(self.step_sleep)
        return {"loss": loss}


def collate(items):
    xs, ys = zip(*items)
    return torch.stack(xs), torch.stack(ys)


def to_device(batch, device):
    return tuple(t.to(device) for t in batch)


def loop_config(**overrides) -> LoopConfig:
    """The toy's defaults: small batches, short warmup, EMA on, frequent checkpoints."""
    values = dict(max_steps=30, batch_size=8, lr=3e-3, warmup_steps=5, ema_decay=0.9, ckpt_every=8,
                  keep_last=2, log_every=5, seed=0)
    values.update(overrides)
    return LoopConfig(**values)


def train(run_dir: str | Path, cfg: LoopConfig, kind: str = "mlp", dropout: float = 0.2, length: int = 64,
          nan_steps=(), step_sleep: float = 0.0, hooks=None, dist_info=None, log=print) -> FitResult:
    torch.manual_seed(0)  # the same initial weights in every process
    task = ToyTask(make_model(kind, dropout=dropout), set(nan_steps), step_sleep)
    return fit(task, ToyDataset(length, kind), collate, cfg, run_dir, STAGE, dist_info=dist_info, hooks=hooks,
               progress=False, log=log, to_device=to_device)


def die_at(step_to_die: int) -> Hook:
    def maybe_die(step, model, ema_model, writer) -> None:
        if step == step_to_die:
            print(f"[toy] SIGKILL at step {step}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return Hook(every=1, fn=maybe_die)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--ckpt-every", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="global batch size")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--model", choices=("mlp", "conv"), default="mlp")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--ema", type=float, default=0.9)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--length", type=int, default=64, help="dataset size")
    parser.add_argument("--max-minutes", type=float, default=0.0)
    parser.add_argument("--max-bad-steps", type=int, default=5)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--die-at-step", type=int, default=None)
    parser.add_argument("--nan-at-steps", default="", help="comma-separated 0-based step indices")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dump", default=None, help="write DIR/rank<r>.pt with the final model and EMA")
    parser.add_argument("--split-run-dir", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = setup_distributed("cpu")
    run_dir = Path(args.run_dir)
    if args.split_run_dir and info.rank > 0:
        run_dir = run_dir.with_name(f"{run_dir.name}_rank{info.rank}")
    cfg = loop_config(max_steps=args.max_steps, ckpt_every=args.ckpt_every, batch_size=args.batch,
                      grad_accum=args.grad_accum, ema_decay=args.ema, lr=args.lr, max_minutes=args.max_minutes,
                      max_bad_steps=args.max_bad_steps)
    nan_steps = {int(s) for s in args.nan_at_steps.split(",") if s.strip()}
    ticks: list[tuple[int, float]] = []  # (step, time) on rank 0, for the steady-state speed
    hooks = [Hook(every=1, fn=lambda step, *_: ticks.append((step, time.perf_counter())))]
    if args.die_at_step is not None:
        hooks.append(die_at(args.die_at_step))
    start = time.perf_counter()
    try:
        result = train(run_dir, cfg, args.model, args.dropout, args.length, nan_steps, args.step_sleep, hooks, info)
        seconds = time.perf_counter() - start
        if args.dump:
            Path(args.dump).mkdir(parents=True, exist_ok=True)
            torch.save({"model": result.model.state_dict(),
                        "ema": result.ema_model.state_dict() if result.ema_model is not None else None,
                        "pid": os.getpid(), "step": result.step}, Path(args.dump) / f"rank{info.rank}.pt")
        summary = {"rank": info.rank, "world_size": info.world_size, "step": result.step,
                   "finished": result.finished, "skipped": result.skipped_steps, "trained_steps": len(result.history),
                   "seconds": seconds, "pid": os.getpid()}
        warm = [t for t in ticks if t[0] >= min(5, result.step // 2)]  # skip the first steps (allocations)
        if len(warm) >= 2 and warm[-1][0] > warm[0][0]:
            summary["steps_per_s"] = (warm[-1][0] - warm[0][0]) / (warm[-1][1] - warm[0][1])
        if info.is_main:  # torchrun merges the ranks' stdout
            print(json.dumps(summary), flush=True)
    finally:
        cleanup(info)


if __name__ == "__main__":
    sys.exit(main())
