"""The training loop every stage shares: plain PyTorch, readable top to bottom (the pieces: train/parts.py).

AdamW with warmup + cosine decay, gradient accumulation, AMP (bf16/fp16 on GPU), gradient clipping,
an EMA copy, DDP when launched with several processes, TensorBoard scalars, a progress bar, and
checkpoints that make a killed run resume exactly: the data order is a pure function of the step
(`StepBatchSampler`), and model, EMA, optimizer, scheduler, scaler, step and RNG states (one per rank)
are restored. Exact means bitwise on the same machine and world size, with `num_workers=0` or data
loading that draws no random numbers (worker RNG is reseeded per resume, not restored).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from sg2video.errors import ConfigError
from sg2video.logs import say
from sg2video.train.distributed import DistInfo, barrier
from sg2video.train.parts import (
    Checkpointer,
    Progress,
    StepBatchSampler,
    StepLog,
    TrainingError,
    accumulate_gradients,
    all_ranks,
    apply_update,
    build_optimizer,
    check_bad_steps,
    ema_update,
    load_resumed,
    lr_lambda,
    make_loader,
    new_ema,
    resume_state,
    seed_or_restore_rng,
    use_deterministic_kernels,
    wrap_model,
)


__all__ = ["fit", "FitResult", "Hook", "LoopConfig", "PRECISIONS", "StepBatchSampler", "TrainTask", "TrainingError",
           "lr_lambda"]

PRECISIONS = ("fp32", "bf16", "fp16")  # `train.precision`: autocast dtype (fp16 adds a grad scaler)


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
    if cfg.deterministic:
        use_deterministic_kernels()
    run_dir, hooks, main_log = Path(run_dir), hooks or [], log if info.is_main else None
    ckpt_dir = run_dir / "checkpoints" / stage
    model = task.model.to(info.device)
    ema_model = new_ema(model, cfg.ema_decay)
    optimizer, scheduler, scaler = build_optimizer(model, cfg, info.device)
    out_of_budget = lambda elapsed_s: cfg.max_minutes > 0 and elapsed_s >= 60 * cfg.max_minutes  # noqa: E731

    # -- resume, then the rest of the set-up (random streams last) ---------------------------------
    state = resume_state(cfg, ckpt_dir, stage, main_log or (lambda _: None))
    done = Progress()
    if state is not None:
        done = load_resumed(state, model, ema_model, optimizer, scheduler, scaler)
        if main_log:
            log(f"[{stage}] resuming from step {done.step}")
        if state.get("finished") and (done.step >= cfg.max_steps or out_of_budget(done.elapsed_before)):
            return FitResult(model, ema_model, done.step, True, skipped_steps=done.skipped)
    train_model = wrap_model(model, task, info, cfg, ema_model, state is not None and state.get("ema") is not None)
    seed_or_restore_rng(state, info, cfg.seed, done.step, log)
    batches = iter(make_loader(dataset, collate_fn, cfg, info, done.step))
    steps_log = StepLog(stage, run_dir, cfg, done.step, state is not None, progress, info.is_main)
    start_time = time.time()
    saver = Checkpointer(ckpt_dir, stage, info, cfg, checkpoint_extra, start_time)
    save = lambda finished: saver.save(done, finished, model, ema_model, optimizer, scheduler, scaler)  # noqa: E731
    move = to_device or (lambda batch, device: batch.to(device))

    # -- the steps: batch -> loss -> update -> EMA -> log -> hooks -> save ------------------------
    history, bad_in_row, finished, saved_final = [], 0, False, False
    model.train()
    try:
        while done.step < cfg.max_steps and not out_of_budget(done.elapsed_before):
            t0 = time.time()
            optimizer.zero_grad(set_to_none=True)
            terms, finite, data_seconds = accumulate_gradients(task, train_model, batches, move, cfg, info, scaler,
                                                               done.step)
            grad_norm = apply_update(finite, model, optimizer, scheduler, scaler, cfg)
            bad_in_row = 0 if finite else bad_in_row + 1
            if not finite:
                done.skipped += 1
                check_bad_steps(bad_in_row, cfg, stage, done.step, done, ckpt_dir, main_log)
            done.step += 1
            if finite:
                if ema_model is not None:
                    ema_update(ema_model, model, cfg.ema_decay if done.step > cfg.ema_start else 0.0)
                history.append({"step": done.step, **terms})
            steps_log.data_seconds += data_seconds
            steps_log.step_seconds += time.time() - t0
            steps_log.record(done.step, terms, grad_norm, scheduler.get_last_lr()[0], done.skipped)
            out_of_time = all_ranks(out_of_budget(done.elapsed_before + time.time() - start_time), info, "any")
            last = done.step >= cfg.max_steps or out_of_time
            for hook in hooks:
                if hook.every > 0 and done.step % hook.every == 0 and not last and info.is_main:
                    hook.fn(done.step, model, ema_model, steps_log.writer)
                    model.train()
            if last or (cfg.ckpt_every > 0 and done.step % cfg.ckpt_every == 0):
                save(last)
                saved_final = last
            if last:
                if out_of_time and main_log:
                    log(f"[{stage}] wall-clock budget of {cfg.max_minutes} min reached at step {done.step}")
                break
        finished = True
        if not saved_final:  # nothing to train (max_steps=0, or a checkpoint at or past max_steps)
            save(True)
        for hook in hooks if info.is_main else []:
            hook.fn(done.step, model, ema_model, steps_log.writer)
    finally:
        steps_log.close(done.step, done.skipped)
    if main_log and done.skipped:
        log(f"[{stage}] skipped {done.skipped} steps with a non-finite loss")
    barrier(info)
    return FitResult(model, ema_model, done.step, finished, history, done.skipped)
