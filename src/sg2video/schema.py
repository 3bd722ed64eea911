"""The config schema: every key a person sets, its type, its range and its accepted names, in one place.

Types are Hydra's own mechanism: each config file (conf/<group>/*.yaml and the entry points' configs) starts from
a structured config registered here in Hydra's ConfigStore (`defaults: [/_schemas/<name>@_here_, _self_]`), so
`train.lr=abc` or a misspelt key is refused while the config is composed, before anything runs. The YAML files
hold the values and their comments; the dataclasses here hold no defaults of their own.

Ranges and names are what structured configs cannot say: each field's metadata (`ge`, `gt`, `le`, `lt`,
`choices`) is checked by `check_ranges`, and the accepted names come from where the thing they name is
implemented (`COND_MODES` from the UNet's conditioning, samplers from the samplers, ...). Rules between keys are
in `sg2video.config.validate`, which runs both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from sg2video.data import DATASET_NAMES
from sg2video.data.coco_stuff import RELATION_MODES
from sg2video.data.fit import RESIZE_MODES
from sg2video.data.household import MAX_OBJECTS as HOUSEHOLD_MAX_OBJECTS, SIZES as HOUSEHOLD_SIZES
from sg2video.data.shapes_holdout import HOLDOUT_MODES
from sg2video.diffusion import SPACES
from sg2video.diffusion.gaussian import LOSSES, PARAMETERIZATIONS, SNR_WEIGHTINGS
from sg2video.diffusion.samplers import SAMPLER_NAMES
from sg2video.diffusion.schedules import SCHEDULE_NAMES
from sg2video.encoder.gcn import POOLINGS
from sg2video.encoder.video_encoder import POOLS
from sg2video.entry_schemas import ENTRY_SCHEMAS
from sg2video.schema_fields import check_node, key
from sg2video.layout import LAYOUT_SOURCES
from sg2video.train.loop import PRECISIONS
from sg2video.unet.conditioning import COND_MODES

DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N"


# -- data --------------------------------------------------------------------------------------------


@dataclass
class DataSchema:
    name: str = key(choices=DATASET_NAMES)
    root: Optional[str] = key()
    size: int = key(ge=1)
    frames: int = key(ge=1)
    num_workers: int = key(ge=0)


@dataclass
class ShapesDataSchema(DataSchema):
    size: int = key(ge=8)  # the world's objects need room: radius round(0.1 * size)
    min_objects: int = key(ge=1, le=8)
    max_objects: int = key(ge=1, le=8)
    layout_frames: Optional[int] = key(ge=1)
    seed: int = key()
    holdout: str = key(choices=HOLDOUT_MODES)
    train_size: int = key(ge=1)
    val_size: int = key(ge=1)
    test_size: int = key(ge=1)


@dataclass
class HouseholdDataSchema(DataSchema):
    size: int = key(choices=HOUSEHOLD_SIZES)  # sprites scale by size // 32 (16: painted at 32, every other pixel)
    min_objects: int = key(ge=2, le=HOUSEHOLD_MAX_OBJECTS)  # graph objects, the person included
    max_objects: int = key(ge=2, le=HOUSEHOLD_MAX_OBJECTS)
    layout_frames: Optional[int] = key(ge=1)
    seed: int = key()
    train_size: int = key(ge=1)
    val_size: int = key(ge=1)
    test_size: int = key(ge=1)


@dataclass
class FileDataSchema(DataSchema):
    resize: str = key(choices=RESIZE_MODES)


@dataclass
class ActionGenomeDataSchema(FileDataSchema):
    stride: int = key(ge=1)
    cache_dir: Optional[str] = key()
    image_mix: Optional[Any] = key()


@dataclass
class VisualGenomeDataSchema(FileDataSchema):
    min_object_instances: int = key(ge=0)
    min_predicate_instances: int = key(ge=0)
    min_image_size: int = key(ge=0)
    min_object_size: float = key(ge=0.0, le=1.0)
    min_objects: int = key(ge=0)
    max_objects: int = key(ge=1)
    min_relations: int = key(ge=0)
    max_relations: int = key(ge=0)
    max_objects_kept: int = key(ge=1)
    use_orphaned_objects: bool = key()
    split_ratios: List[float] = key(ge=0.0, le=1.0, each=True)
    splits_file: Optional[str] = key()
    object_aliases: Optional[str] = key()
    predicate_aliases: Optional[str] = key()
    image_node: bool = key()
    preprocessed: Optional[str] = key()
    cache_dir: Optional[str] = key()


@dataclass
class CocoStuffDataSchema(FileDataSchema):
    splits: Dict[str, str] = key()
    val_images: int = key(ge=0)
    min_object_size: float = key(ge=0.0, le=1.0)
    min_objects: int = key(ge=0)
    max_objects: int = key(ge=1)
    include_other: bool = key()
    stuff_only: bool = key()
    include_crowd: bool = key()
    instance_whitelist: Optional[List[str]] = key()
    stuff_whitelist: Optional[List[str]] = key()
    relations: str = key(choices=RELATION_MODES)
    seed: int = key()
    image_node: bool = key()


@dataclass
class GifFolderDataSchema(FileDataSchema):
    stride: Optional[int] = key(ge=1)


DATA_SCHEMAS = {"shapes": ShapesDataSchema, "household": HouseholdDataSchema, "action_genome": ActionGenomeDataSchema,
                "visual_genome": VisualGenomeDataSchema, "coco_stuff": CocoStuffDataSchema,
                "gif_folder": GifFolderDataSchema}


# -- the training loop of a stage -------------------------------------------------------------------


@dataclass
class StageTrainSchema:
    """The keys a stage's own `train` block (encoder.train, layout.train, autoencoder.train) may set."""

    max_steps: int = key(ge=0)
    batch_size: int = key(ge=1)
    lr: float = key(gt=0.0)
    weight_decay: float = key(ge=0.0)
    warmup_steps: int = key(ge=0)
    ckpt_every: int = key(ge=0)


@dataclass
class TrainSchema(StageTrainSchema):
    grad_clip: float = key(ge=0.0)
    grad_accum: int = key(ge=1)
    precision: str = key(choices=PRECISIONS)
    seed: int = key(ge=0)
    ema_decay: float = key(ge=0.0, lt=1.0)
    ema_start: int = key(ge=0)
    log_every: int = key(ge=1)
    keep_last: int = key(ge=1)
    sample_every: int = key(ge=0)
    max_minutes: float = key(ge=0.0)
    max_bad_steps: int = key(ge=1)
    num_workers: int = key(ge=0)
    threads: Optional[int] = key(ge=1)
    compile: bool = key()
    deterministic: bool = key()
    resume: Optional[str] = key()


# -- models -----------------------------------------------------------------------------------------


@dataclass
class VideoEncoderSchema:
    patch_size: int = key(ge=1)
    embed_dim: int = key(ge=1)
    depth: int = key(ge=1)
    heads: int = key(ge=1)
    pool: str = key(choices=POOLS)
    pretrained_file: Optional[str] = key()


@dataclass
class EncoderLossSchema:
    contrastive: float = key(ge=0.0)
    masked: float = key(ge=0.0)
    box: float = key(ge=0.0)
    mask_ratio: float = key(ge=0.0, le=1.0)


@dataclass
class EncoderTrainSchema(StageTrainSchema):
    max_minutes: float = key(ge=0.0)
    eval_every: int = key(ge=0)
    eval_clips: int = key(ge=1)


@dataclass
class EncoderSchema:
    name: str = key()
    layers: int = key(ge=0)
    dim: int = key(ge=1)
    hidden: int = key(ge=1)
    cond_dim: int = key(ge=1)
    pooling: str = key(choices=POOLINGS)
    use_gcn: bool = key()
    residual: bool = key()
    max_tokens: int = key(ge=1)
    video: VideoEncoderSchema = field(default_factory=VideoEncoderSchema)
    loss: EncoderLossSchema = field(default_factory=EncoderLossSchema)
    train: EncoderTrainSchema = field(default_factory=EncoderTrainSchema)


@dataclass
class ModelSchema:
    name: str = key(choices=("unet",))
    cond: str = key(choices=COND_MODES)
    prefix_frames: int = key(ge=0)
    dim: int = key(ge=1)
    dim_mults: List[int] = key(ge=1, each=True)
    num_res_blocks: int = key(ge=1)
    spatial_attn_levels: Optional[List[int]] = key(ge=0, each=True)
    temporal_attn_levels: Optional[List[int]] = key(ge=0, each=True)
    attn_head_dim: int = key(ge=1)
    layout_channels: int = key(ge=1)
    norm_groups: int = key(ge=1)
    dropout: float = key(ge=0.0, lt=1.0)
    upsample_conv: bool = key()
    coords: Optional[bool] = key()
    class_tokens: bool = key()
    grounding: bool = key()
    region_bias: bool = key()
    adm_slots: int = key(ge=0)
    concat_slots: Optional[int] = key(ge=0)  # moved: model.adm_slots (the VDM vector is mode adm now)
    cfg_dropout: Optional[float] = key(ge=0.0, le=1.0)  # moved: diffusion.cond_dropout
    prefix_dropout: Optional[float] = key(ge=0.0, le=1.0)  # moved: diffusion.prefix_dropout


@dataclass
class Sg2imLossSchema:
    l1: float = key(ge=0.0)
    box: float = key(ge=0.0)
    mask: float = key(ge=0.0)
    gan: float = key(ge=0.0)
    img: float = key(ge=0.0)
    obj: float = key(ge=0.0)
    ac: float = key(ge=0.0)


@dataclass
class Sg2imModelSchema:
    """`model=sg2im`: the sg2im baseline (sg2video.sg2im)."""

    name: str = key(choices=("sg2im",))
    cond: str = key(choices=("concat",))
    prefix_frames: int = key(ge=0, le=0)
    train_encoder: bool = key()
    embed_dim: int = key(ge=1)
    box_hidden: int = key(ge=1)
    mask_size: int = key(choices=(4, 8, 16, 32, 64))
    noise_dim: int = key(ge=0)
    crn_dims: List[int] = key(ge=1, each=True)
    norm_groups: int = key(ge=1)
    img_d_widths: List[int] = key(ge=1, each=True)
    obj_d_widths: List[int] = key(ge=1, each=True)
    crop_size: int = key(ge=4)
    loss: Sg2imLossSchema = field(default_factory=Sg2imLossSchema)


MODEL_SCHEMAS = {"unet": ModelSchema, "sg2im": Sg2imModelSchema}  # by model.name


@dataclass
class DiffusionSchema:
    space: str = key(choices=SPACES)
    timesteps: int = key(ge=1)
    schedule: str = key(choices=SCHEDULE_NAMES)
    parameterization: str = key(choices=PARAMETERIZATIONS)
    loss: str = key(choices=LOSSES)
    snr_weighting: Optional[str] = key(choices=SNR_WEIGHTINGS)
    sampler: str = key(choices=SAMPLER_NAMES)
    sample_steps: int = key(ge=1)
    eta: float = key(ge=0.0, le=1.0)
    guidance: float = key(ge=0.0)
    cond_dropout: float = key(ge=0.0, le=1.0)
    prefix_dropout: float = key(ge=0.0, le=1.0)
    relation_dropout: float = key(ge=0.0, le=1.0)


@dataclass
class AutoencoderTrainSchema(StageTrainSchema):
    frames_per_clip: int = key(ge=0)
    grad_clip: float = key(ge=0.0)
    ema_decay: float = key(ge=0.0, lt=1.0)
    scale_clips: int = key(ge=1)


@dataclass
class AutoencoderSchema:
    name: str = key(choices=("kl",))
    channels: int = key(ge=1)
    channel_mults: List[int] = key(ge=1, each=True)
    num_res_blocks: int = key(ge=1)
    latent_channels: int = key(ge=1)
    downsample: int = key(ge=1)
    kl_weight: float = key(ge=0.0)
    l1_weight: float = key(ge=0.0)
    l2_weight: float = key(ge=0.0)
    foreground_weight: float = key(ge=0.0)
    train: AutoencoderTrainSchema = field(default_factory=AutoencoderTrainSchema)


@dataclass
class LayoutTrainSchema(StageTrainSchema):
    grad_clip: float = key(ge=0.0)
    ema_decay: float = key(ge=0.0, lt=1.0)
    ema_start: int = key(ge=0)


LAYOUT_CHOICES = ("best", "first", "diverse")  # sg2video.layout.sampler: which candidate that looks right is kept
LAYOUT_RANGES = ("data", "class")  # sg2video.layout.scorer.LayoutStats.project: one range for all objects, or per class


@dataclass
class LayoutSchema:
    """`layout=given` and `layout=head` set only the name; the model keys belong to `layout=sampled`."""

    name: str = key(choices=LAYOUT_SOURCES)


@dataclass
class SampledLayoutSchema(LayoutSchema):
    frames: Optional[int] = key(ge=1)
    prefix_frames: int = key(ge=0)
    lookahead: int = key(ge=0)
    dim: int = key(ge=1)
    layers: int = key(ge=1)
    heads: int = key(ge=1)
    edge_dim: int = key(ge=1)
    schedule: str = key(choices=SCHEDULE_NAMES)
    timesteps: int = key(ge=1)
    parameterization: str = key(choices=PARAMETERIZATIONS)
    eta: float = key(ge=0.0, le=1.0)
    sample_steps: int = key(ge=1)
    candidates: int = key(ge=1)
    rounds: int = key(ge=1)
    choice: str = key(choices=LAYOUT_CHOICES)
    repel: float = key(ge=0.0, le=1.0)
    ranges: str = key(choices=LAYOUT_RANGES)
    repair_steps: int = key(ge=0)
    scorer_guidance: float = key(ge=0.0, le=1.0)
    guidance: float = key(ge=0.0)
    cond_dropout: float = key(ge=0.0, le=1.0)
    relation_dropout: float = key(ge=0.0, le=1.0)
    prefix_prob: float = key(ge=0.0, le=1.0)
    given_prob: float = key(ge=0.0, le=1.0)
    stats_clips: int = key(ge=1)
    eval_clips: int = key(ge=1)
    train: LayoutTrainSchema = field(default_factory=LayoutTrainSchema)


@dataclass
class EvalSchema:
    split: str = key(choices=("val", "test"))
    num_samples: int = key(ge=1)
    batch_size: int = key(ge=1)
    sampler: str = key(choices=SAMPLER_NAMES)
    sample_steps: int = key(ge=1)
    guidance: float = key(ge=0.0)
    seed: int = key(ge=0)
    retrieval_gallery: int = key(ge=1)
    fid_weights: Optional[str] = key()
    fvd_weights: Optional[str] = key()
    control_samples: int = key(ge=0)
    training_clips: int = key(ge=0)
    save_samples: int = key(ge=0)
    long_frames: int = key(ge=0)
    long_samples: int = key(ge=0)
    diversity_graphs: int = key(ge=0)
    diversity_samples: int = key(ge=2)
    manipulation_samples: int = key(ge=0)
    curve_every: int = key(ge=0)
    curve_samples: int = key(ge=1)


GROUP_SCHEMAS = {"encoder": EncoderSchema, "model": ModelSchema, "diffusion": DiffusionSchema,
                 "autoencoder": AutoencoderSchema, "train": TrainSchema, "eval": EvalSchema}


SCHEMA_GROUP = "_schemas"  # outside every real group, so no key of any config turns into a group override


def register() -> None:
    """Put every schema into Hydra's ConfigStore group `_schemas` (idempotent): `<group>` for each config group,
    `data_<name>` per dataset, `layout_sampled`, and `<config name>` per entry point. A config file starts from
    its schema with `defaults: [/_schemas/<name>@_here_, _self_]`."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    nodes = {**GROUP_SCHEMAS, "model_sg2im": Sg2imModelSchema, "layout": LayoutSchema,
             "layout_sampled": SampledLayoutSchema,
             **{f"data_{name}": schema for name, schema in DATA_SCHEMAS.items()}, **ENTRY_SCHEMAS}
    for name, schema in nodes.items():
        store.store(group=SCHEMA_GROUP, name=name, node=schema, provider="sg2video")


def check_ranges(cfg: DictConfig, entry: str = "config") -> None:
    """The ranges and names of every key of a composed config of `entry` (config | sample | prepare | inspect)."""
    check_node(cfg, ENTRY_SCHEMAS[entry], "")
    if OmegaConf.select(cfg, "data") is not None:
        name = OmegaConf.select(cfg, "data.name")
        check_node(cfg.data, DATA_SCHEMAS.get(name, DataSchema), "data.")
    if entry != "config":
        return
    for group, schema in GROUP_SCHEMAS.items():
        if group == "model":
            schema = MODEL_SCHEMAS.get(str(cfg.model.name), ModelSchema)
        check_node(cfg[group], schema, f"{group}.")
    check_node(cfg.layout, SampledLayoutSchema if cfg.layout.name == "sampled" else LayoutSchema, "layout.")
