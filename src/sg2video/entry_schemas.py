"""The entry points' own keys (src/run.py, sample.py, serve.py, prepare.py, inspect_data.py, data_stats.py,
inspect_embeddings.py): one typed schema each; the config groups' schemas are in sg2video.schema."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from omegaconf import MISSING

from sg2video.data import SPLIT_NAMES
from sg2video.diffusion.samplers import SAMPLER_NAMES
from sg2video.layout import LAYOUT_SOURCES
from sg2video.schema_fields import key

STAGES = ("all", "autoencoder", "encoder", "layout", "diffusion", "sg2im", "eval")


@dataclass
class RunSchema:
    """src/run.py's top-level keys (the groups have their own schemas)."""

    stage: str = key(choices=STAGES)
    device: str = key()
    cache_dir: Optional[str] = key()
    run_dir: Optional[str] = None  # tests and library callers may name the run directory here instead of Hydra
    data: Any = MISSING
    encoder: Any = MISSING
    layout: Any = MISSING
    model: Any = MISSING
    diffusion: Any = MISSING
    autoencoder: Any = MISSING
    train: Any = MISSING
    eval: Any = MISSING


@dataclass
class SampleSchema:
    """src/sample.py's keys."""

    ckpt: str = key()
    graph: str = key()
    frames: Optional[int] = key(ge=1)
    num: int = key(ge=1)
    seed: int = key(ge=0)
    sampler: str = key(choices=SAMPLER_NAMES)
    steps: int = key(ge=1)
    eta: float = key(ge=0.0, le=1.0)
    guidance: float = key(ge=0.0)
    layout: Any = MISSING  # run.py's `layout` group (conf/layout/): one name for where boxes come from
    boxes: Optional[str] = key(choices=(*LAYOUT_SOURCES, None))  # old name of `layout` (this release, with a notice)
    device: str = key()
    fps: int = key(ge=1, le=100)
    out: str = key()
    max_frames: int = key(ge=1)


@dataclass
class ServeSchema:
    """src/serve.py's keys: the server's, and the defaults and limits of the requests it takes."""

    ckpt: str = key()
    host: str = key()
    port: int = key(ge=0, le=65535)  # 0: a free port, named in the printed URL
    device: str = key()
    num: int = key(ge=1)
    seed: int = key(ge=0)
    sampler: str = key(choices=SAMPLER_NAMES)
    steps: int = key(ge=1)
    eta: float = key(ge=0.0, le=1.0)
    guidance: float = key(ge=0.0)
    layout: Any = MISSING  # run.py's `layout` group, as in sample.py: the default source of boxes
    fps: int = key(ge=1, le=100)
    max_frames: int = key(ge=1)
    max_num: int = key(ge=1, le=64)
    max_steps: int = key(ge=1)
    max_request_kb: int = key(ge=1, le=65536)
    max_queue: int = key(ge=1)
    keep_results: int = key(ge=1)
    abandon_s: float = key(gt=0.0)


@dataclass
class PrepareSchema:
    unpickle_ok: bool = key()
    data: Any = MISSING


@dataclass
class InspectSchema:
    split: str = key(choices=SPLIT_NAMES)
    num: int = key(ge=1)
    start: int = key(ge=0)
    out: str = key()
    fps: float = key(gt=0.0, le=100.0)
    data: Any = MISSING


@dataclass
class DataStatsSchema:
    splits: List[str] = key(choices=SPLIT_NAMES, each=True)
    max_clips: int = key(ge=0)
    out: str = key()
    compare: List[str] = key()
    top_classes: int = key(ge=1)
    data: Any = MISSING
    encoder: Any = MISSING


@dataclass
class InspectEmbeddingsSchema:
    ckpt: str = key()
    splits: List[str] = key(choices=SPLIT_NAMES, each=True)
    num: int = key(ge=2)
    highlight_class: Optional[str] = key()
    gallery: int = key(ge=2)
    out: str = key()
    data: Any = MISSING
    data2: Optional[Any] = key()
    data3: Optional[Any] = key()


ENTRY_SCHEMAS = {"config": RunSchema, "sample": SampleSchema, "serve": ServeSchema, "prepare": PrepareSchema,
                 "inspect": InspectSchema, "data_stats": DataStatsSchema, "inspect_embeddings": InspectEmbeddingsSchema}
