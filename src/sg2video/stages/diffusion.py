"""Stage `diffusion`: train the graph-conditioned 3D UNet on the frozen encoder's embeddings."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from sg2video.config import to_dict
from sg2video.data.clips import collate_clips
from sg2video.denoiser import Denoiser, build_unet, encode_condition
from sg2video.graphs import GraphBatch
from sg2video.layout.train import drop_relations
from sg2video.rundir import stage_checkpoint
from sg2video.sampling import build_diffusion
from sg2video.stages.common import datasets, report_skipped, required_checkpoint, stage_loop_config
from sg2video.stages.encoder import load_pretrainer
from sg2video.stages.generator_stage import checkpoint_extra, generator_hooks
from sg2video.train.distributed import DistInfo
from sg2video.train.loop import fit


class DiffusionTask:
    """Loss of one batch: encode graphs (frozen), encode frames to latents (frozen, latent space), denoise."""

    def __init__(self, denoiser, encoder, autoencoder, diffusion, model_cfg: DictConfig,
                 objective_cfg: DictConfig | None = None):
        """model_cfg: the `model` group (prefix_frames); objective_cfg: the `diffusion` group (cond_dropout,
        prefix_dropout, relation_dropout; without it, or for keys it lacks, model_cfg's old names cfg_dropout /
        prefix_dropout)."""
        self.model = denoiser
        self.encoder, self.autoencoder, self.diffusion = encoder, autoencoder, diffusion
        self.prefix_frames = int(model_cfg.prefix_frames)
        self.cond_dropout, self.prefix_dropout = objective_settings(objective_cfg, model_cfg)
        self.relation_dropout = float((objective_cfg or {}).get("relation_dropout", None) or 0.0)

    def loss(self, model, batch, step):
        B, T = batch.batch_size, batch.num_frames
        graphs = sparser_graphs(batch.graphs, B, T, self.relation_dropout)
        cond = encode_condition(self.encoder, graphs, B, T, "given")  # trains on the data's boxes
        still = [bool(source.get("still", False)) for source in batch.sources]
        if any(still):  # image items of image-video co-training: temporal attention keeps their frames apart
            cond.still = torch.tensor(still, device=batch.video.device)[:, None].expand(B, T)
        x0 = batch.video
        if self.autoencoder is not None:
            with torch.no_grad():
                x0 = self.autoencoder.encode(x0)
        terms = self.diffusion.training_loss(model, x0, cond, prefix_frames=self.prefix_frames,
                                             cond_dropout=self.cond_dropout, prefix_dropout=self.prefix_dropout)
        return {k: v for k, v in terms.items() if v.dim() == 0}


def sparser_graphs(graphs: GraphBatch, clips: int, frames: int, probability: float) -> GraphBatch:
    """Graphs as people write them: with `probability`, a clip loses the triples of a random subset of its object
    pairs (each pair with probability 3/4) in every frame; objects and boxes stay (`drop_relations`, as the layout
    stage trains)."""
    if probability <= 0:
        return graphs
    per_frame = graphs.unpack()
    pruned = drop_relations([per_frame[b * frames : (b + 1) * frames] for b in range(clips)], probability)
    return GraphBatch.pack([g for clip in pruned for g in clip]).to(graphs.device)


# the objective's keys where no config gives them (the defaults of conf/diffusion/default.yaml)
OBJECTIVE_DEFAULTS = {"cond_dropout": 0.1, "prefix_dropout": 0.2}


def objective_settings(objective_cfg, model_cfg=None) -> tuple[float, float]:
    """(cond_dropout, prefix_dropout): the diffusion group's keys, else the model group's old names."""
    def read(name: str, old: str) -> float:
        for cfg, key in ((objective_cfg, name), (model_cfg, old)):
            value = cfg.get(key) if cfg is not None else None
            if value is not None:
                return float(value)
        return OBJECTIVE_DEFAULTS[name]

    return read("cond_dropout", "cfg_dropout"), read("prefix_dropout", "prefix_dropout")


def _load_autoencoder(cfg: DictConfig, run_dir: Path, device):
    if cfg.diffusion.space != "latent":
        return None, None
    from sg2video.autoencoder.train import load_autoencoder

    path = required_checkpoint(run_dir, "autoencoder")
    model = load_autoencoder(path).to(device).eval().requires_grad_(False)
    return model, model.export_state()


def run_diffusion_stage(cfg: DictConfig, run_dir: Path, info: DistInfo) -> Path:
    device = info.device
    pretrainer, vocab, enc_state = load_pretrainer(required_checkpoint(run_dir, "encoder"))
    encoder = pretrainer.graph_encoder.to(device).eval().requires_grad_(False)
    cond_dim = int(enc_state["encoder_config"]["cond_dim"])
    autoencoder, ae_state = _load_autoencoder(cfg, run_dir, device)
    size = int(cfg.data.size)
    channels, latent_size = 3, size
    if autoencoder is not None:
        channels = int(autoencoder.latent_channels)
        latent_size = size // int(autoencoder.downsample)
    torch.manual_seed(int(cfg.train.seed))  # the initial weights are a function of train.seed
    unet = build_unet(cfg.model, channels, cond_dim)
    denoiser = Denoiser(unet, vocab.num_objects, cond_dim, class_tokens=bool(cfg.model.class_tokens))
    diffusion = build_diffusion(cfg.diffusion)
    data = datasets(cfg, ("train", "val"))
    extra = checkpoint_extra(cfg, run_dir, vocab, enc_state["encoder_config"], encoder,
                             diffusion_config=to_dict(cfg.diffusion), latent_size=latent_size, channels=channels,
                             autoencoder=ae_state)

    result = fit(
        DiffusionTask(denoiser, encoder, autoencoder, diffusion, cfg.model, objective_cfg=cfg.diffusion),
        data["train"],
        collate_clips,
        stage_loop_config(cfg, None),
        run_dir,
        "diffusion",
        info,
        checkpoint_extra=extra,
        hooks=generator_hooks(cfg, run_dir, "diffusion", data["val"], extra, info),
    )
    if info.is_main:
        report_skipped("diffusion", data["train"], run_dir)
    del result
    return stage_checkpoint(run_dir, "diffusion")

