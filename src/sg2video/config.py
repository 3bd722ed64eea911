"""Config helpers: resolvers the config tree uses, validation of user-set values, and hashing.

`validate(cfg)` runs before any stage: every value a person can get wrong is refused here with a
ConfigError that names the key, the value and what is accepted (one line, exit 2 from the CLIs). Types, ranges
and accepted names of single keys live in `sg2video.schema`; the rules between keys are here.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sg2video.errors import ConfigError

def uses_layout_model(cfg: DictConfig) -> bool:
    """A mode that reads boxes (concat, hybrid, grounded crossattn; sg2im) draws those a graph does not give with
    the layout stage's model (layout=sampled)."""
    from sg2video.unet.conditioning import reads_boxes

    grounding = OmegaConf.select(cfg, "model.grounding", default=True)
    return reads_boxes(str(cfg.model.cond), grounding) and cfg.layout.name == "sampled"


def generator_stage(cfg: DictConfig) -> str:
    """The stage that trains the video generator: `diffusion` (model=unet) or `sg2im` (model=sg2im); its
    checkpoint, checkpoints/<stage>/last.pt, is what the eval stage and src/sample.py load."""
    return "sg2im" if cfg.model.name == "sg2im" else "diffusion"


def uses_autoencoder(cfg: DictConfig) -> bool:
    """Latent diffusion needs the frame autoencoder; sg2im draws pixels, whatever diffusion.space says."""
    return cfg.diffusion.space == "latent" and generator_stage(cfg) == "diffusion"


def register_resolvers() -> None:
    """What composing conf/ needs: the `${pid:}` resolver (the process id, so two runs started in the same second
    get different directories) and the structured-config schemas in Hydra's ConfigStore (sg2video.schema)."""
    from sg2video.schema import register

    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", lambda: str(os.getpid()), use_cache=True)
    register()


def to_dict(cfg: DictConfig | dict) -> dict:
    """The resolved config as plain containers (what checkpoints store)."""
    if isinstance(cfg, dict):
        return cfg
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def config_hash(*parts: Any) -> str:
    """A short stable hash of plain (JSON-able) values, for stage caches."""
    text = json.dumps([to_dict(p) if isinstance(p, DictConfig) else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_device(value: Any, key: str = "device") -> None:
    """auto | cpu | cuda | cuda:N."""
    text = str(value)
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return
    raise ConfigError(f"{key}={value!r} is not a device (accepted: auto, cpu, cuda, cuda:N)")


def _check_data_root(cfg: DictConfig) -> None:
    from sg2video.data import DATASETS_WITH_ROOT

    if cfg.data.name not in DATASETS_WITH_ROOT:
        return
    root = OmegaConf.select(cfg, "data.root", default=None)
    if root in (None, "", "???"):
        raise ConfigError(f"data.root is not set (data={cfg.data.name} needs data.root=DIR; see README)")
    if not Path(str(root)).is_dir():
        raise ConfigError(f"data.root={root!r} does not exist (set data.root to the {cfg.data.name} directory; see README)")


def validate_data(cfg: DictConfig) -> None:
    """What every entry point that reads a dataset checks: the data keys' ranges and names, and the root."""
    from sg2video.schema import DATA_SCHEMAS, DataSchema, check_node

    check_node(cfg.data, DATA_SCHEMAS.get(cfg.data.name, DataSchema), "data.")
    if cfg.data.name in ("shapes", "household") and cfg.data.min_objects > cfg.data.max_objects:
        raise ConfigError(f"data.min_objects={cfg.data.min_objects} is above data.max_objects={cfg.data.max_objects}")
    _check_data_root(cfg)


# keys that moved (old -> new): the old names still work for this release, copied over with a notice
RENAMED_KEYS = (("model.cfg_dropout", "diffusion.cond_dropout"), ("model.prefix_dropout", "diffusion.prefix_dropout"),
                ("model.concat_slots", "model.adm_slots"))


def migrate_old_mode(cfg: DictConfig) -> list[str]:
    """An old mode name (`model.cond=layout`, today's concat) replaced by today's, with a notice line."""
    from sg2video.unet.conditioning import OLD_MODE_NAMES

    mode = OmegaConf.select(cfg, "model.cond")
    if mode not in OLD_MODE_NAMES:
        return []
    OmegaConf.update(cfg, "model.cond", OLD_MODE_NAMES[mode], merge=False)
    return [f"notice: model.cond={mode} is now model.cond={OLD_MODE_NAMES[mode]} (SGDiff's name for the objects' "
            "maps on the input channels); the old name goes in the next release"]


def migrate_renamed_keys(cfg: DictConfig) -> list[str]:
    """Copy each old key that is set (not null) to its new name, and clear it; one notice line per key moved.
    An old mode name (`model.cond=layout`, today's concat) is replaced the same way."""
    notices = migrate_old_mode(cfg)
    for old, new in RENAMED_KEYS:
        value = OmegaConf.select(cfg, old)
        if value is None:
            continue
        OmegaConf.update(cfg, new, value, merge=False)
        OmegaConf.update(cfg, old, None, merge=False)
        notices.append(f"notice: {old} is now {new} ({old}={value} was used as {new}={value}; "
                       "the old name goes in the next release)")
    return notices


def validate(cfg: DictConfig) -> None:
    """Refuse bad user-set values of src/run.py's config before anything runs or is written: every key's type
    (the structured configs of sg2video.schema, already at composition), range and accepted names
    (schema.check_ranges), then the rules between keys below."""
    from sg2video.schema import check_ranges

    migrate_old_mode(cfg)  # before the names are checked; the moved keys after, so that a range error names the key set
    check_ranges(cfg, "config")
    validate_data(cfg)
    check_device(cfg.device)
    frames = int(cfg.data.frames)
    migrate_renamed_keys(cfg)
    prefix = int(cfg.model.prefix_frames)
    if prefix >= frames:
        raise ConfigError(f"model.prefix_frames={prefix!r} must be an integer in [0, data.frames) = [0, {frames})")
    if cfg.data.name == "gif_folder" and cfg.model.cond != "none":
        raise ConfigError(f"data=gif_folder has no scene graphs: it needs model.cond=none (got model.cond={cfg.model.cond})")
    if cfg.model.name == "sg2im":
        _validate_sg2im(cfg)
    else:
        _validate_unet(cfg)
    for steps_key, total_key in (("diffusion.sample_steps", "diffusion.timesteps"), ("eval.sample_steps", "diffusion.timesteps")):
        steps, total = OmegaConf.select(cfg, steps_key), OmegaConf.select(cfg, total_key)
        if steps > total:
            raise ConfigError(f"{steps_key}={steps} is more than {total_key}={total}")
    _validate_files_and_batches(cfg)


def _validate_sg2im(cfg: DictConfig) -> None:
    size, levels = int(cfg.data.size), len(cfg.model.crn_dims)
    if levels < 1 or size % 2 ** (levels - 1):
        raise ConfigError(f"model.crn_dims has {levels} modules at doubling resolutions ending at data.size={size}: "
                          f"data.size must be a multiple of 2^{max(levels - 1, 0)} (use fewer modules)")


def _validate_unet(cfg: DictConfig) -> None:
    levels = len(cfg.model.dim_mults)
    for name in ("spatial_attn_levels", "temporal_attn_levels"):
        bad = [i for i in (cfg.model[name] or []) if i >= levels]
        if bad:
            raise ConfigError(f"model.{name}={list(cfg.model[name])} names levels {bad}; accepted: 0..{levels - 1} "
                              "(one per model.dim_mults entry)")
    if cfg.model.cond in ("crossattn", "hybrid") and cfg.model.spatial_attn_levels is not None \
            and not cfg.model.spatial_attn_levels:
        raise ConfigError(f"model.cond={cfg.model.cond} needs spatial attention somewhere: set model.spatial_attn_levels")


def _validate_files_and_batches(cfg: DictConfig) -> None:
    from hydra.utils import to_absolute_path

    for name, holds in (("fid_weights", "an inception_v3 state dict"), ("fvd_weights", "cd-fvd's I3D state dict")):
        value = cfg.eval.get(name)
        if value and not Path(to_absolute_path(str(value))).is_file():
            raise ConfigError(f"eval.{name}={str(value)!r}: no such file (expected {holds}; nothing is downloaded)")
    if cfg.layout.name == "sampled" and cfg.layout.sample_steps > cfg.layout.timesteps:
        raise ConfigError(f"layout.sample_steps={cfg.layout.sample_steps} is more than layout.timesteps={cfg.layout.timesteps}")
    if cfg.diffusion.space == "latent":
        down, mults = int(cfg.autoencoder.downsample), len(cfg.autoencoder.channel_mults)
        if down & (down - 1) or 2 ** (mults - 1) != down:
            raise ConfigError(f"autoencoder.downsample={down} must be a power of two with log2(downsample) + 1 = "
                              f"len(autoencoder.channel_mults) entries (got {mults})")
        if int(cfg.data.size) % down:
            raise ConfigError(f"data.size={cfg.data.size} must be a multiple of autoencoder.downsample={down} "
                              "(diffusion.space=latent)")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun sets it in every process
    for prefix in ("train", "encoder.train", "layout.train", "autoencoder.train"):
        batch = OmegaConf.select(cfg, f"{prefix}.batch_size")
        accum = OmegaConf.select(cfg, f"{prefix}.grad_accum") or 1
        if isinstance(batch, int) and batch % (world * accum):
            raise ConfigError(
                f"{prefix}.batch_size={batch} must divide evenly into {world} processes x {accum} accumulation steps "
                f"(use a multiple of {world * accum})"
            )
