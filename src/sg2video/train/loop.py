"""The training loop every stage shares: plain PyTorch, readable top to bottom.

AdamW with warmup + cosine decay, gradient accumulation, AMP (bf16/fp16 on GPU), gradient clipping,
an EMA copy, DDP when launched with several processes, TensorBoard scalars, a progress bar, and
checkpoints that make a killed run resume exactly: the data order is a pure function of the step
(`StepBatchSampler`), and model, EMA, optimizer, scheduler, scaler, step and RNG states (one per rank)
are restored. Exact means bitwise on the same machine and world size, with `num_workers=0` or data
loading that draws no random numbers (worker RNG is reseeded per resume, not restored).
"""
from __future__ import annotations

import contextlib
import copy
import math
import random
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from sg2video.logs import progress_enabled, say
from sg2video.errors import ConfigError, UserError
from sg2video.train import checkpoint as ckpt
from sg2video.train.distributed import DistInfo, barrier


PRECISIONS = ("fp32", "bf16", "fp16")  # `train.precision`: autocast dtype (fp16 adds a grad scaler)


class TrainingError(UserError):
    """A run that cannot go on (e.g. the loss stayed non-finite); its last good checkpoint is kept."""


@dataclass
class LoopConfig:
    max_steps: int = 1000
    batch_size: int = 16  # global: split across ranks and accumulation micro-steps
    lr: float = 3e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds a grad scaler)
    seed: int = 0
    log_every: int = 25
    ckpt_every: int = 200
    keep_last: int = 2
    ema_decay: float = 0.0  # 0 disables the EMA copy
    ema_start: int = 0
    max_bad_steps: int = 5
    max_minutes: float = 0.0  # 0: no wall-clock budget; else stop (and save) after this long
    num_workers: int = 0
    compile: bool = False
    deterministic: bool = False  # deterministic kernels (bitwise reruns on a GPU; CPU runs are already)
    resume: str | None = None  # a checkpoint to start from when the run dir has none of this stage

    @classmethod
    def from_cfg(cls, cfg: Any, **overrides) -> "LoopConfig":
        names = {f.name for f in fields(cls)}
        values = {k: cfg[k] for k in names if k in cfg and cfg[k] is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def validate(self, world_size: int, prefix: str = "train") -> None:
        if self.max_steps < 0:
            raise ConfigError(f"{prefix}.max_steps={self.max_steps} must be >= 0")
        if self.batch_size < 1:
            raise ConfigError(f"{prefix}.batch_size={self.batch_size} must be >= 1")
        if self.grad_accum < 1:
            raise ConfigError(f"{prefix}.grad_accum={self.grad_accum} must be >= 1")
        if self.batch_size % (world_size * self.grad_accum):
            raise ConfigError(
                f"{prefix}.batch_size={self.batch_size} must divide evenly into {world_size} processes x "
                f"{self.grad_accum} accumulation steps (use a multiple of {world_size * self.grad_accum})"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{prefix}.precision={self.precision!r} is not a precision (accepted: {', '.join(PRECISIONS)})")
        if self.lr <= 0:
            raise ConfigError(f"{prefix}.lr={self.lr} must be > 0")
        if self.max_bad_steps < 1:
            raise ConfigError(f"{prefix}.max_bad_steps={self.max_bad_steps} must be >= 1")
        if self.keep_last < 1:
            raise ConfigError(f"{prefix}.keep_last={self.keep_last} must be >= 1 (step files kept beside last.pt)")


class TrainTask(Protocol):
    """What a stage gives the loop: the trainable module and its loss on one batch."""

    model: nn.Module

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """Loss terms for `batch`; key "loss" is minimised, the others are logged."""


@dataclass
class Hook:
    """`fn(step, model, ema_model, writer)` every `every` steps and at the end, on rank 0."""

    every: int
    fn: Callable[[int, nn.Module, nn.Module | None, Any], None]


@dataclass
class FitResult:
    model: nn.Module
    ema_model: nn.Module | None
    step: int
    finished: bool
    history: list[dict] = field(default_factory=list)
    skipped_steps: int = 0


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


def lr_lambda(cfg: LoopConfig) -> Callable[[int], float]:
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


def fit(
    task: TrainTask,
    dataset,
    collate_fn: Callable,
    cfg: LoopConfig,
    run_dir: str | Path,
    stage: str,
    dist_info: DistInfo | None = None,
    checkpoint_extra: dict | None = None,
    hooks: list[Hook] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = say,
    to_device: Callable[[Any, torch.device], Any] | None = None,
) -> FitResult:
    """Train `task.model` for `cfg.max_steps` steps, resuming from this stage's checkpoint if present.

    A step whose loss is not finite (on any rank) still counts as a step (the data stream and the LR
    schedule move on) but changes neither the parameters nor the EMA; `cfg.max_bad_steps` of them in a
    row raise TrainingError. Every rank must call `fit` with the same arguments (saves are collective).
    """
    info = dist_info or DistInfo()
    cfg.validate(info.world_size)
    device = info.device
    if cfg.deterministic:
        use_deterministic_kernels()
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints" / stage
    hooks = hooks or []
    model = task.model.to(device)
    ema_model = copy.deepcopy(model).requires_grad_(False).eval() if cfg.ema_decay > 0 else None

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")

    def budget_spent(elapsed_s: float) -> bool:
        return cfg.max_minutes > 0 and elapsed_s >= 60 * cfg.max_minutes

    # -- resume ----------------------------------------------------------------------------------
    step, elapsed_before, skipped_total, last_saved = 0, 0.0, 0, None
    state = _resume_state(cfg, ckpt_dir, stage, log if info.is_main else (lambda _: None))
    if state is not None:
        model.load_state_dict(state["model"])
        if ema_model is not None and state.get("ema") is not None:
            ema_model.load_state_dict(state["ema"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
        step = last_saved = int(state["step"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
        skipped_total = int(state.get("skipped_steps", 0))
        if info.is_main:
            log(f"[{stage}] resuming from step {step}")
        if state.get("finished") and (step >= cfg.max_steps or budget_spent(elapsed_before)):
            return FitResult(model, ema_model, step, True, skipped_steps=skipped_total)

    train_model: nn.Module = model
    if info.enabled:  # DDP broadcasts rank 0's parameters and buffers to every rank
        # a task whose loss can leave parts of the model out (a loss weight of 0) says so
        unused = bool(getattr(task, "find_unused_parameters", False))
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused)
        if ema_model is not None and (state is None or state.get("ema") is None):
            ema_model.load_state_dict(model.state_dict())
    if cfg.compile:
        train_model = torch.compile(train_model)
    # RNG last, so that nothing above shifts the stream between a fresh and a resumed run.
    if state is not None:
        _restore_rng(state, info, cfg.seed, step, log)
    else:
        _seed_all(cfg.seed * max(1, info.world_size) + info.rank)

    sampler = StepBatchSampler(len(dataset), cfg.batch_size, step, cfg.max_steps, cfg.seed,
                               info.rank, info.world_size, cfg.grad_accum)
    # Its own generator: iterating a DataLoader would otherwise draw from the global RNG (and break resume).
    loader_gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + info.rank * 10_007 + step) % 2**63)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False, generator=loader_gen)
    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides what a killed run logged after its last checkpoint (those steps run again)
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if state is not None else None)
    move = to_device or (lambda batch, dev: batch.to(dev))

    def save(finished: bool) -> None:
        """Collective: every rank gives its RNG state, rank 0 writes."""
        nonlocal last_saved
        rng_ranks = _gather(ckpt.rng_state(), info)
        if info.is_main:
            ckpt.save_training_checkpoint(ckpt_dir, {
                "stage": stage,
                "step": step,
                "finished": finished,
                "model": model.state_dict(),
                "ema": ema_model.state_dict() if ema_model is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_ranks[0],
                "rng_ranks": rng_ranks,
                "elapsed_s": elapsed_before + (time.time() - start_time),
                "skipped_steps": skipped_total,
                **(checkpoint_extra or {}),
            }, keep_last=cfg.keep_last)
        last_saved = step
        barrier(info)

    bar = None
    if progress and info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc=stage, dynamic_ncols=True, mininterval=2.0,
                   disable=not progress_enabled())

    history: list[dict] = []
    bad_in_row = 0
    start_time = time.time()
    last_log_time, last_log_step, data_time, step_time = start_time, step, 0.0, 0.0
    batches = iter(loader)
    model.train()
    finished = saved_final = False
    try:
        while step < cfg.max_steps and not budget_spent(elapsed_before):
            t0 = time.time()
            optimizer.zero_grad(set_to_none=True)
            terms_sum: dict[str, float] = {}
            finite = True
            for micro in range(cfg.grad_accum):
                t_data = time.time()
                batch = move(next(batches), device)
                data_time += time.time() - t_data
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
            if info.enabled:  # every rank must take the same decision
                flag = torch.tensor([1.0 if finite else 0.0], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                finite = bool(flag.item() > 0)
            if finite:
                bad_in_row = 0
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
            else:
                bad_in_row += 1
                skipped_total += 1
                optimizer.zero_grad(set_to_none=True)
                if bad_in_row >= cfg.max_bad_steps:
                    kept = (f"last checkpoint: step {last_saved} in {ckpt_dir}" if last_saved is not None
                            else "no checkpoint written")
                    raise TrainingError(
                        f"{stage}: the loss was not finite for {bad_in_row} steps in a row (steps "
                        f"{step - bad_in_row + 2}-{step + 1}); stopped ({kept}; try a lower train.lr or precision=fp32)"
                    )
                if info.is_main:
                    log(f"[{stage}] step {step + 1}: loss not finite, step skipped ({bad_in_row} in a row)")
                with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()" when step 0 is bad
                    warnings.simplefilter("ignore", UserWarning)
                    scheduler.step()  # the LR schedule follows the step counter
            step += 1
            if finite and ema_model is not None:
                ema_update(ema_model, model, cfg.ema_decay if step > cfg.ema_start else 0.0)
            step_time += time.time() - t0
            if finite:
                history.append({"step": step, **terms_sum})
            if bar is not None:
                if finite:
                    bar.set_postfix(loss=f"{terms_sum['loss']:.4f}", refresh=False)
                bar.update(1)
            if writer is not None:
                if not finite:
                    writer.add_scalar(f"{stage}/skipped_steps", skipped_total, step)
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    now = time.time()
                    if finite:
                        for key, value in terms_sum.items():
                            writer.add_scalar(f"{stage}/{key}", value, step)
                        writer.add_scalar(f"{stage}/grad_norm", float(grad_norm), step)
                    writer.add_scalar(f"{stage}/lr", scheduler.get_last_lr()[0], step)
                    writer.add_scalar(f"{stage}/steps_per_s", (step - last_log_step) / max(1e-9, now - last_log_time), step)
                    writer.add_scalar(f"{stage}/data_fraction", data_time / max(1e-9, step_time), step)
                    last_log_time, last_log_step = now, step
            out_of_time = budget_spent(elapsed_before + time.time() - start_time)
            if info.enabled:
                flag = torch.tensor([1.0 if out_of_time else 0.0], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item() > 0)
            done = step >= cfg.max_steps or out_of_time
            for hook in hooks:
                if hook.every > 0 and step % hook.every == 0 and not done and info.is_main:
                    hook.fn(step, model, ema_model, writer)
                    model.train()
            if done or (cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0):
                save(finished=done)
                saved_final = done
            if done:
                if out_of_time and info.is_main:
                    log(f"[{stage}] wall-clock budget of {cfg.max_minutes} min reached at step {step}")
                break
        finished = True
        if not saved_final:  # nothing to train (max_steps=0, or a checkpoint at or past max_steps)
            save(finished=True)
        if info.is_main:
            for hook in hooks:
                hook.fn(step, model, ema_model, writer)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.add_scalar(f"{stage}/skipped_steps", skipped_total, step)
            writer.flush()
            writer.close()
    if info.is_main and skipped_total:
        log(f"[{stage}] skipped {skipped_total} steps with a non-finite loss")
    barrier(info)
    return FitResult(model, ema_model, step, finished, history, skipped_total)


def _resume_state(cfg: LoopConfig, ckpt_dir: Path, stage: str, warn: Callable[[str], None]) -> dict | None:
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
