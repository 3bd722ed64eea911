"""Config helpers: resolvers the config tree uses, validation of user-set values, and hashing.

`validate(cfg)` runs before any stage: every value a person can get wrong is refused here with a
ConfigError that names the key, the value and what is accepted (one line, exit 2 from the CLIs).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sg2video.errors import ConfigError

STAGES = ("all", "autoencoder", "encoder", "layout", "diffusion", "eval")
COND_MODES = ("crossattn", "concat", "layout", "none")
DATASETS_WITH_ROOT = ("action_genome", "visual_genome", "coco_stuff", "gif_folder")


def uses_layout_model(cfg: DictConfig) -> bool:
    """Layout conditioning draws the boxes a graph does not give with the layout stage's model (layout=sampled)."""
    return cfg.model.cond == "layout" and cfg.layout.name == "sampled"


def register_resolvers() -> None:
    """`${pid:}`: the process id, so two runs started in the same second get different directories."""
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", lambda: str(os.getpid()), use_cache=True)


def to_dict(cfg: DictConfig | dict) -> dict:
    """The resolved config as plain containers (what checkpoints store)."""
    if isinstance(cfg, dict):
        return cfg
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def config_hash(*parts: Any) -> str:
    """A short stable hash of plain (JSON-able) values, for stage caches."""
    text = json.dumps([to_dict(p) if isinstance(p, DictConfig) else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _choice(cfg: DictConfig, key: str, accepted: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in accepted:
        raise ConfigError(f"{key}={value!r} is not accepted (accepted: {', '.join(accepted)})")


def _positive(cfg: DictConfig, key: str, minimum: int = 1) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be a number >= {minimum}")


def validate(cfg: DictConfig) -> None:
    """Refuse bad user-set values before anything runs or is written."""
    _choice(cfg, "stage", STAGES)
    for key in ("data.size", "data.frames", "train.batch_size", "diffusion.timesteps", "diffusion.sample_steps"):
        _positive(cfg, key)
    _positive(cfg, "train.max_steps", 0)
    if OmegaConf.select(cfg, "model") is not None:
        _choice(cfg, "model.cond", COND_MODES)
        prefix = OmegaConf.select(cfg, "model.prefix_frames") or 0
        frames = cfg.data.frames
        if not isinstance(prefix, int) or prefix < 0 or prefix >= frames:
            raise ConfigError(
                f"model.prefix_frames={prefix!r} must be an integer in [0, data.frames) = [0, {frames})"
            )
        _positive(cfg, "model.dim")
    _choice(cfg, "diffusion.schedule", ("linear", "cosine"))
    _choice(cfg, "diffusion.parameterization", ("eps", "x0", "v"))
    _choice(cfg, "diffusion.loss", ("l2", "l1"))
    _choice(cfg, "diffusion.sampler", ("ddim", "ddpm"))
    _choice(cfg, "diffusion.space", ("pixel", "latent"))
    _choice(cfg, "train.precision", ("fp32", "bf16", "fp16"))
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun sets it in every process
    for prefix in ("train", "encoder.train"):
        batch = OmegaConf.select(cfg, f"{prefix}.batch_size")
        accum = OmegaConf.select(cfg, f"{prefix}.grad_accum") or 1
        if isinstance(batch, int) and batch % (world * accum):
            raise ConfigError(
                f"{prefix}.batch_size={batch} must divide evenly into {world} processes x {accum} accumulation steps "
                f"(use a multiple of {world * accum})"
            )
    if cfg.data.name in DATASETS_WITH_ROOT:
        root = OmegaConf.select(cfg, "data.root", default=None)
        if root in (None, "", "???"):
            raise ConfigError(f"data.root is not set (data={cfg.data.name} needs data.root=DIR; see README)")
        if not Path(str(root)).is_dir():
            raise ConfigError(
                f"data.root={root!r} does not exist (set data.root to the {cfg.data.name} directory; see README)"
            )
