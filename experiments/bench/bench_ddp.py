"""DDP speed-up of the shared training loop on CPU processes (gloo), and how exactly a killed run resumes.

Trains the toy task of tests/apps/toy_train.py (`--model conv`: 3 convs on 3x32x32 inputs, or `mlp`)
through `sg2video.train.loop.fit` at one global batch, as 1 process with 1 thread, 1 process with
`--procs` threads, and `--procs` processes with 1 thread each under `torchrun --standalone`. Runs
alternate so background load hits all alike; prints steady-state steps/s (from step 5 on) per round and
the medians. Then the resume check: a run SIGKILLed mid-interval and restarted vs an uninterrupted one
(one process, and DDP), as the max |difference| of the final model, EMA and optimizer tensors.
Usage: .venv/bin/python experiments/bench/bench_ddp.py [--procs 2] [--batch 32] [--steps 60] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from sg2video.train.checkpoint import load_checkpoint

TOY = Path(__file__).resolve().parents[2] / "tests" / "apps" / "toy_train.py"


def torchrun(procs: int) -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", f"--nproc_per_node={procs}"]


def run(command: list[str], threads: int = 1) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0 and "--die-at-step" not in command:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return next((s for s in summaries if s["rank"] == 0), {})


def speed(args, run_dir: Path, procs: int, threads: int) -> float:
    toy = [str(TOY), str(run_dir), "--model", args.model, "--batch", str(args.batch), "--max-steps", str(args.steps),
           "--ckpt-every", "0", "--length", "512", "--threads", str(threads)]
    command = [*torchrun(procs), *toy] if procs > 1 else [sys.executable, *toy]
    return run(command, threads)["steps_per_s"]


def max_diff(a: Path, b: Path) -> float:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    pairs = [(sa["model"], sb["model"]), (sa["ema"], sb["ema"])]
    pairs += [(sa["optimizer"]["state"][i], sb["optimizer"]["state"][i]) for i in sa["optimizer"]["state"]]
    return max(float((x[k].double() - y[k].double()).abs().max()) for x, y in pairs for k in x)


def resume_gap(args, root: Path, procs: int) -> tuple[float, int]:
    """Max |difference| between an uninterrupted run and one killed at step 13 (checkpoint at 8), restarted."""
    toy = [str(TOY), "--model", "mlp", "--batch", "8", "--max-steps", "30", "--ckpt-every", "8", "--dropout", "0.2"]
    launch = torchrun(procs) if procs > 1 else [sys.executable]
    a, b = root / f"resume{procs}_a", root / f"resume{procs}_b"
    run([*launch, toy[0], str(a), *toy[1:]])
    run([*launch, toy[0], str(b), *toy[1:], "--die-at-step", "13"])
    resumed_from = load_checkpoint(b / "checkpoints" / "toy" / "last.pt")["step"]
    run([*launch, toy[0], str(b), *toy[1:]])
    last = lambda d: d / "checkpoints" / "toy" / "last.pt"  # noqa: E731
    return max_diff(last(a), last(b)), resumed_from


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--model", choices=("conv", "mlp"), default="conv")
    parser.add_argument("--batch", type=int, default=32, help="global batch")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-resume", action="store_true")
    args = parser.parse_args()
    print(f"toy {args.model}, global batch {args.batch}, {args.steps} steps, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    setups = {"1 process x 1 thread": (1, 1), f"1 process x {args.procs} threads": (1, args.procs),
              f"{args.procs} processes x 1 thread (DDP, gloo)": (args.procs, 1)}
    rates: dict[str, list[float]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, (procs, threads) in setups.items():
                rates[name].append(speed(args, Path(tmp) / f"speed{round_}_{procs}_{threads}", procs, threads))
            print(f"round {round_ + 1}: " + ", ".join(f"{n}: {r[-1]:.1f}" for n, r in rates.items()))
        medians = {name: statistics.median(r) for name, r in rates.items()}
        base = medians["1 process x 1 thread"]
        for name, value in medians.items():
            print(f"{name:40s} {value:7.1f} steps/s   x{value / base:.2f}")
        if not args.skip_resume:
            for procs in (1, args.procs):
                gap, step = resume_gap(args, Path(tmp), procs)
                print(f"resume after SIGKILL at step 13 (restarted from step {step}), {procs} process(es): "
                      f"max |diff| of model, EMA, optimizer vs uninterrupted = {gap:.3g}")


if __name__ == "__main__":
    main()
