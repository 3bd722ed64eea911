"""What the stages share: loop settings per stage, datasets, small logging helpers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sg2video.data import build_dataset
from sg2video.train.loop import LoopConfig

# Keys of `train` that every stage shares; a stage's own block (e.g. `encoder.train`) sets the rest.
SHARED_TRAIN_KEYS = ("precision", "seed", "log_every", "keep_last", "max_bad_steps", "num_workers", "compile")


def stage_loop_config(cfg: DictConfig, own: Any | None) -> LoopConfig:
    """LoopConfig for a stage: `train`'s shared keys, then the stage's own block (if any) on top."""
    if own is None:
        return LoopConfig.from_cfg(cfg.train)
    shared = {k: cfg.train[k] for k in SHARED_TRAIN_KEYS if k in cfg.train}
    merged = OmegaConf.merge(OmegaConf.create(shared), own)
    return LoopConfig.from_cfg(merged)


def datasets(cfg: DictConfig, splits: tuple[str, ...] = ("train", "val")) -> dict[str, Any]:
    return {split: build_dataset(cfg.data, split) for split in splits}


def write_scalars(writer, prefix: str, values: dict[str, float], step: int) -> None:
    if writer is None:
        return
    for key, value in values.items():
        if isinstance(value, (int, float)):
            writer.add_scalar(f"{prefix}/{key}", value, step)


def tb_writer(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tb"))


def torch_threads() -> None:
    """Leave torch's default thread count (all cores) unless the user capped it with OMP_NUM_THREADS."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
