"""Stage `sg2im` (model=sg2im): train the sg2im baseline, generator and discriminators together, on the
encoder stage's graph encoder (frozen unless `model.train_encoder`), with the loop every stage shares.

Its checkpoint (checkpoints/sg2im/last.pt) carries what sampling needs, like the diffusion stage's: the vocab,
the encoder's config and frozen weights (the layout model reads them), the model config, the layout model when
boxes are sampled (`stages.generator_stage.checkpoint_extra`). `sg2video.generators.load_video_generator` turns it
into an `Sg2imVideoGenerator`.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from omegaconf import DictConfig

from sg2video.data.clips import collate_clips
from sg2video.rundir import stage_checkpoint
from sg2video.sg2im import build_sg2im
from sg2video.stages.common import datasets, report_skipped, required_checkpoint, stage_loop_config
from sg2video.stages.encoder import load_pretrainer
from sg2video.stages.generator_stage import checkpoint_extra, generator_hooks
from sg2video.train.distributed import DistInfo
from sg2video.train.loop import fit


class Sg2imTask:
    """Loss of one batch: every term of the generator and its discriminators (sg2video.sg2im.adversarial)."""

    def __init__(self, pair) -> None:
        self.model = pair

    def loss(self, model, batch, step):
        return model(batch.video, batch.graphs)


def run_sg2im_stage(cfg: DictConfig, run_dir: Path, info: DistInfo) -> Path:
    pretrainer, vocab, enc_state = load_pretrainer(required_checkpoint(run_dir, "encoder"))
    frozen = pretrainer.graph_encoder
    cond_dim = int(enc_state["encoder_config"]["cond_dim"])
    size = int(cfg.data.size)
    torch.manual_seed(int(cfg.train.seed))  # the initial weights are a function of train.seed
    pair = build_sg2im(cfg.model, copy.deepcopy(frozen), vocab.num_objects, cond_dim, size)
    data = datasets(cfg, ("train", "val"))
    extra = checkpoint_extra(cfg, run_dir, vocab, enc_state["encoder_config"], frozen)
    fit(Sg2imTask(pair), data["train"], collate_clips, stage_loop_config(cfg, None), run_dir, "sg2im", info,
        checkpoint_extra=extra, hooks=generator_hooks(cfg, run_dir, "sg2im", data["val"], extra, info))
    if info.is_main:
        report_skipped("sg2im", data["train"], run_dir)
    return stage_checkpoint(run_dir, "sg2im")
