"""The sg2im baseline (Johnson et al. 2018) as a generator arm: `model=sg2im` (conf/model/sg2im.yaml)."""
from __future__ import annotations

from typing import Any

from sg2video.sg2im.adversarial import PAPER_WEIGHTS, Sg2imPair
from sg2video.sg2im.model import Sg2imGenerator


def build_sg2im(model_cfg: Any, encoder, num_classes: int, cond_dim: int, size: int) -> Sg2imPair:
    """The generator and its discriminators described by a `model=sg2im` config."""
    groups = int(model_cfg.norm_groups)
    generator = Sg2imGenerator(encoder, num_classes, cond_dim, size, embed_dim=int(model_cfg.embed_dim),
                               mask_size=int(model_cfg.mask_size), crn_dims=[int(d) for d in model_cfg.crn_dims],
                               noise_dim=int(model_cfg.noise_dim), box_hidden=int(model_cfg.box_hidden),
                               norm_groups=groups, train_encoder=bool(model_cfg.train_encoder))
    weights = {k: float(model_cfg.loss[k]) for k in PAPER_WEIGHTS}
    return Sg2imPair(generator, num_classes, [int(d) for d in model_cfg.img_d_widths],
                     [int(d) for d in model_cfg.obj_d_widths], int(model_cfg.crop_size), weights, groups)


__all__ = ["PAPER_WEIGHTS", "Sg2imGenerator", "Sg2imPair", "build_sg2im"]
