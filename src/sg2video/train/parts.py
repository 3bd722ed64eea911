"""The named pieces of the training loop (`sg2video.train.loop.fit` runs them in order).

Set-up: `build_optimizer` (AdamW with weight decay on matrices only, warmup + cosine `lr_lambda`, the fp16
grad scaler), `resume_state` / `load_resumed` (this stage's newest checkpoint, else `train.resume`),
`wrap_model` (DDP, torch.compile), `seed_or_restore_rng`, `make_loader` (`StepBatchSampler`: the data order is
a pure function of the step). Each step: `accumulate_gradients` (micro-batches, autocast, the finite check
agreed by every rank), `apply_update` (unscale, clip, optimizer and scheduler step; a non-finite step changes
nothing but the counters, and too many in a row raise), `ema_update`, then `StepLog.record` (progress bar and
TensorBoard). `Checkpointer.save` is collective: every rank gives its RNG state, rank 0 writes.
"""
from __future__ import annotations

import contextlib
import copy
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from sg2video.errors import UserError
from sg2video.logs import progress_enabled
from sg2video.train import checkpoint as ckpt
from sg2video.train.distributed import DistInfo, barrier


class TrainingError(UserError):
    """A run that cannot go on (e.g. the loss stayed non-finite); its last good checkpoint is kept."""


class StepBatchSampler(Sampler[list[int]]):
    """Index lists per (step, micro-step): a pure function of the step, so resuming is exact.

    Position p of the global stream (p = step * batch + i) maps to `perm_e[p % length]` with one seeded
    permutation per epoch e; each rank takes its contiguous slice of the global batch.
    """

    def __init__(self, length: int, batch_size: int, start_step: int, max_steps: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, grad_accum: int = 1, shuffle: bool = True) -> None:
        self.length, self.batch_size = length, batch_size
        self.start_step, self.max_steps = start_step, max_steps
        self.seed, self.rank, self.world_size, self.grad_accum = seed, rank, world_size, grad_accum
        self.shuffle = shuffle
        self._epoch, self._perm = -1, torch.arange(0)

    def _index(self, position: int) -> int:
        epoch = position // self.length
        if not self.shuffle:
            return position % self.length
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.length, generator=gen)
        return int(self._perm[position % self.length])

    def step_indices(self, step: int) -> list[list[int]]:
        """This rank's micro-batches of `step`."""
        per_rank = self.batch_size // self.world_size
        micro = per_rank // self.grad_accum
        base = step * self.batch_size + self.rank * per_rank
        idx = [self._index(base + i) for i in range(per_rank)]
        return [idx[i * micro : (i + 1) * micro] for i in range(self.grad_accum)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            yield from self.step_indices(step)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.grad_accum


def lr_lambda(cfg: Any) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_optimizer(model: nn.Module, cfg, device: torch.device):
    """AdamW (decay on weights of 2+ dims only), its warmup + cosine schedule, and the grad scaler (fp16 on CUDA)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
    return optimizer, scheduler, scaler


def new_ema(model: nn.Module, decay: float) -> nn.Module | None:
    return copy.deepcopy(model).requires_grad_(False).eval() if decay > 0 else None


@dataclass
class Progress:
    """The counters a checkpoint carries besides the weights."""

    step: int = 0
    elapsed_before: float = 0.0  # wall seconds of earlier runs of this stage
    skipped: int = 0  # steps with a non-finite loss, in total
    last_saved: int | None = None


def load_resumed(state: dict, model, ema_model, optimizer, scheduler, scaler) -> Progress:
    """Weights, EMA, optimizer, scheduler and scaler from a checkpoint; the counters it saved."""
    model.load_state_dict(state["model"])
    if ema_model is not None and state.get("ema") is not None:
        ema_model.load_state_dict(state["ema"])
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
    step = int(state["step"])
    return Progress(step, float(state.get("elapsed_s", 0.0)), int(state.get("skipped_steps", 0)), step)


def wrap_model(model: nn.Module, task: Any, info: DistInfo, cfg, ema_model: nn.Module | None,
               ema_restored: bool) -> nn.Module:
    """The module the steps run: DDP across processes (which broadcasts rank 0's weights; a fresh EMA then
    copies them), compiled when asked."""
    train_model: nn.Module = model
    if info.enabled:
        unused = bool(getattr(task, "find_unused_parameters", False))  # a loss weight of 0 leaves parts out
        device = info.device
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused)
        if ema_model is not None and not ema_restored:
            ema_model.load_state_dict(model.state_dict())
    if cfg.compile:
        train_model = torch.compile(train_model)
    return train_model


def seed_or_restore_rng(state: dict | None, info: DistInfo, seed: int, step: int, log: Callable[[str], None]) -> None:
    """Last in the set-up, so that nothing before shifts the stream between a fresh and a resumed run."""
    if state is not None:
        _restore_rng(state, info, seed, step, log)
    else:
        _seed_all(seed * max(1, info.world_size) + info.rank)


def make_loader(dataset, collate_fn: Callable, cfg, info: DistInfo, step: int) -> DataLoader:
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, step, cfg.max_steps, cfg.seed,
                               info.rank, info.world_size, cfg.grad_accum)
    # its own generator: iterating a DataLoader would otherwise draw from the global RNG (and break resume)
    generator = torch.Generator().manual_seed((cfg.seed * 1_000_003 + info.rank * 10_007 + step) % 2**63)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=cfg.num_workers,
                      pin_memory=info.device.type == "cuda", persistent_workers=False, generator=generator)


def all_ranks(flag: bool, info: DistInfo, op: str) -> bool:
    """`flag` agreed by every rank: "all" (MIN) or "any" (MAX); itself without a process group."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN if op == "all" else dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def accumulate_gradients(task, train_model: nn.Module, batches: Iterator, move: Callable, cfg, info: DistInfo,
                         scaler, step: int) -> tuple[dict[str, float], bool, float]:
    """Forward and backward over `cfg.grad_accum` micro-batches (DDP syncs on the last). Returns the loss terms
    averaged over them, whether the loss was finite on every rank, and the seconds spent waiting for data."""
    device = info.device
    terms_sum: dict[str, float] = {}
    finite, data_seconds = True, 0.0
    for micro in range(cfg.grad_accum):
        t_data = time.time()
        batch = move(next(batches), device)
        data_seconds += time.time() - t_data
        sync = micro == cfg.grad_accum - 1 or not info.enabled
        context = train_model.no_sync() if (info.enabled and not sync) else contextlib.nullcontext()
        with context:
            with _autocast(device, cfg.precision):
                terms = task.loss(train_model, batch, step)
            loss = terms["loss"] / cfg.grad_accum
            finite = finite and bool(torch.isfinite(loss.detach()))
            scaler.scale(loss).backward()
        for key, value in terms.items():
            terms_sum[key] = terms_sum.get(key, 0.0) + float(value.detach()) / cfg.grad_accum
    return terms_sum, all_ranks(finite, info, "all"), data_seconds


def apply_update(finite: bool, model: nn.Module, optimizer, scheduler, scaler, cfg) -> float | None:
    """A finite step: unscale, clip, optimizer and scheduler step; returns the gradient norm. A non-finite one:
    drops the gradients and moves only the schedule on (it follows the step counter); returns None."""
    if finite:
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return float(grad_norm)
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()" when step 0 is bad
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
    return None


def check_bad_steps(bad_in_row: int, cfg, stage: str, step: int, progress: Progress, ckpt_dir: Path,
                    log: Callable[[str], None] | None) -> None:
    """Raise TrainingError after `cfg.max_bad_steps` non-finite steps in a row; else say one was skipped."""
    if bad_in_row >= cfg.max_bad_steps:
        kept = (f"last checkpoint: step {progress.last_saved} in {ckpt_dir}" if progress.last_saved is not None
                else "no checkpoint written")
        raise TrainingError(
            f"{stage}: the loss was not finite for {bad_in_row} steps in a row (steps "
            f"{step - bad_in_row + 2}-{step + 1}); stopped ({kept}; try a lower train.lr or precision=fp32)"
        )
    if log is not None:
        log(f"[{stage}] step {step + 1}: loss not finite, step skipped ({bad_in_row} in a row)")


class StepLog:
    """Rank 0's view of the run: the progress bar and TensorBoard (losses, grad norm, lr, speed, data share)."""

    def __init__(self, stage: str, run_dir: Path, cfg, step: int, resumed: bool, show_bar: bool, is_main: bool):
        self.stage, self.cfg = stage, cfg
        self.writer = self.bar = None
        if is_main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides what a killed run logged after its last checkpoint (those steps run again)
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if resumed else None)
            if show_bar:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=cfg.max_steps, initial=step, desc=stage, dynamic_ncols=True, mininterval=2.0,
                                disable=not progress_enabled())
        self.last_time, self.last_step = time.time(), step
        self.data_seconds = self.step_seconds = 0.0

    def record(self, step: int, terms: dict[str, float], grad_norm: float | None, lr: float, skipped: int) -> None:
        """After step `step` (1-based count of steps done); grad_norm None: the step was skipped."""
        finite = grad_norm is not None
        if self.bar is not None:
            if finite:
                self.bar.set_postfix(loss=f"{terms['loss']:.4f}", refresh=False)
            self.bar.update(1)
        if self.writer is None:
            return
        if not finite:
            self.writer.add_scalar(f"{self.stage}/skipped_steps", skipped, step)
        if step % self.cfg.log_every == 0 or step == self.cfg.max_steps:
            now = time.time()
            if finite:
                for key, value in terms.items():
                    self.writer.add_scalar(f"{self.stage}/{key}", value, step)
                self.writer.add_scalar(f"{self.stage}/grad_norm", grad_norm, step)
            self.writer.add_scalar(f"{self.stage}/lr", lr, step)
            self.writer.add_scalar(f"{self.stage}/steps_per_s", (step - self.last_step) / max(1e-9, now - self.last_time), step)
            self.writer.add_scalar(f"{self.stage}/data_fraction", self.data_seconds / max(1e-9, self.step_seconds), step)
            self.last_time, self.last_step = now, step

    def close(self, step: int, skipped: int) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.add_scalar(f"{self.stage}/skipped_steps", skipped, step)
            self.writer.flush()
            self.writer.close()


class Checkpointer:
    """Writes this stage's checkpoints: everything a bitwise resume needs, plus the stage's own `extra`."""

    def __init__(self, ckpt_dir: Path, stage: str, info: DistInfo, cfg, extra: dict | None, start_time: float):
        self.ckpt_dir, self.stage, self.info, self.cfg = ckpt_dir, stage, info, cfg
        self.extra, self.start_time = extra or {}, start_time

    def save(self, progress: Progress, finished: bool, model, ema_model, optimizer, scheduler, scaler) -> None:
        """Collective: every rank gives its RNG state, rank 0 writes."""
        rng_ranks = _gather(ckpt.rng_state(), self.info)
        if self.info.is_main:
            ckpt.save_training_checkpoint(self.ckpt_dir, {
                "stage": self.stage, "step": progress.step, "finished": finished,
                "model": model.state_dict(), "ema": ema_model.state_dict() if ema_model is not None else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rng_ranks[0], "rng_ranks": rng_ranks,
                "elapsed_s": progress.elapsed_before + (time.time() - self.start_time),
                "skipped_steps": progress.skipped, **self.extra,
            }, keep_last=self.cfg.keep_last)
        progress.last_saved = progress.step
        barrier(self.info)


def resume_state(cfg: Any, ckpt_dir: Path, stage: str, warn: Callable[[str], None]) -> dict | None:
    """The newest readable checkpoint of this stage in the run dir, else `cfg.resume` (if set), else None.

    The run dir comes first so that a run started from `cfg.resume` and then killed goes on from its own
    progress, not from `cfg.resume` again.
    """
    state, source = None, ckpt_dir
    if ckpt_dir.exists():
        state = ckpt.load_latest(ckpt_dir, warn=warn)
    if state is None and cfg.resume:
        state, source = ckpt.load_checkpoint(cfg.resume), cfg.resume
    if state is not None and state.get("stage") != stage:
        raise ckpt.CheckpointError(
            f"{source}: a checkpoint of stage {state.get('stage')!r}, not {stage!r}; cannot resume from it")
    return state


def _restore_rng(state: dict, info: DistInfo, seed: int, step: int, log: Callable[[str], None]) -> None:
    """Each rank's own RNG state; a fresh, distinct seed per rank when the world size changed."""
    per_rank = state.get("rng_ranks")
    if per_rank is not None and len(per_rank) == info.world_size:
        ckpt.set_rng_state(per_rank[info.rank])
    elif per_rank is None and info.world_size == 1 and "rng" in state:
        ckpt.set_rng_state(state["rng"])
    else:
        saved = len(per_rank) if per_rank is not None else "?"
        if info.is_main:
            log(f"warning: checkpoint written by {saved} processes, resuming with {info.world_size}: "
                "random streams are reseeded (the run goes on, but not bit-identically)")
        _seed_all((seed * 1_000_003 + step) * max(1, info.world_size) + info.rank)


def use_deterministic_kernels() -> None:
    """Kernels that give the same bits on every rerun: cuDNN without autotuning, cuBLAS with a fixed workspace
    (its variable must be set before the first cuBLAS call, so before training starts), and an error rather
    than a silently nondeterministic op."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def _seed_all(seed: int) -> None:
    """torch, numpy and Python's `random` (datasets may draw from any of them)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _gather(obj: Any, info: DistInfo) -> list:
    """`obj` of every rank, in rank order (a list of one without a process group)."""
    if not (info.enabled and dist.is_initialized()):
        return [obj]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
