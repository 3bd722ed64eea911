"""What the stages share: loop settings per stage, datasets, small logging helpers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sg2video.data import build_dataset
from sg2video.errors import UserError
from sg2video.logs import say
from sg2video.rundir import stage_checkpoint
from sg2video.train.loop import LoopConfig

# Keys of `train` that every stage shares; a stage's own block (e.g. `encoder.train`) sets the rest.
SHARED_TRAIN_KEYS = ("precision", "seed", "log_every", "keep_last", "max_bad_steps", "num_workers", "compile",
                     "deterministic")


def stage_loop_config(cfg: DictConfig, own: Any | None) -> LoopConfig:
    """LoopConfig for a stage: `train`'s shared keys, then the stage's own block (if any) on top."""
    if own is None:
        return LoopConfig.from_cfg(cfg.train)
    shared = {k: cfg.train[k] for k in SHARED_TRAIN_KEYS if k in cfg.train}
    merged = OmegaConf.merge(OmegaConf.create(shared), own)
    return LoopConfig.from_cfg(merged)


def required_checkpoint(run_dir: Path, stage: str) -> Path:
    """The finished checkpoint of an earlier stage in this run dir, or a UserError saying which stage to run."""
    path = stage_checkpoint(run_dir, stage)
    if not path.exists():
        raise UserError(f"{path} is missing: run stage={stage} (or stage=all) in this run directory first")
    return path


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


def report_skipped(stage: str, dataset, run_dir: Path) -> int:
    """Say how many clips a dataset skipped because their media was unreadable (and record it)."""
    skipped = int(getattr(dataset, "skipped", 0) or 0)
    if skipped:
        say(f"[{stage}] skipped {skipped} unreadable clips of the training data (see the dataset's log lines)")
    from sg2video.rundir import read_metrics, update_metrics

    section = dict(read_metrics(run_dir).get("data", {}))
    section[f"{stage}_skipped_clips"] = skipped
    update_metrics(run_dir, "data", section)
    return skipped
