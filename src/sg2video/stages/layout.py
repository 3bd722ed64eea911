"""Stage `layout`: train the generative layout model (sg2video.layout) on the training data's graphs and boxes,
with the frozen encoder of stage `encoder`, then measure its layouts on held-out graphs given without boxes.

Runs for a mode that reads boxes (concat, crossattn, hybrid; sg2im) with `layout=sampled` (the default); its
checkpoint carries everything a sampler needs (`layout_state`), and the diffusion stage copies that into its own
checkpoint so that `sample.py` needs that one file.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sg2video.config import to_dict
from sg2video.data import build_dataset
from sg2video.diffusion import GaussianDiffusion, make_schedule
from sg2video.errors import ConfigError
from sg2video.layout.condition import encode_layout_batch
from sg2video.layout.model import build_layout_module
from sg2video.layout.sampler import LayoutSampler
from sg2video.layout.scorer import LayoutStats
from sg2video.layout.boxes import from_model_space
from sg2video.layout.train import LayoutTask, collate_graphs
from sg2video.logs import say
from sg2video.rundir import stage_checkpoint, update_metrics
from sg2video.stages.common import report_skipped, required_checkpoint, stage_loop_config, write_scalars
from sg2video.train.checkpoint import load_checkpoint
from sg2video.train.distributed import DistInfo
from sg2video.train.loop import fit


def layout_settings(cfg: DictConfig) -> DictConfig:
    """`layout` with its window resolved for this dataset (see conf/layout/sampled.yaml)."""
    out = OmegaConf.create(to_dict(cfg.layout))
    frames = out.get("frames")
    if frames is None:
        frames = int(cfg.data.get("layout_frames") or cfg.data.frames) if int(cfg.data.frames) > 1 else 1
    frames = int(frames)
    if frames < 1:
        raise ConfigError(f"layout.frames={frames} must be >= 1 (or null)")
    out.frames = frames
    prefix = min(int(out.prefix_frames), max(1, frames // 4)) if frames > 1 else 0
    out.prefix_frames = prefix
    out.lookahead = max(0, min(int(out.lookahead), frames // 2, frames - prefix - 1))
    return out


def layout_dataset(cfg: DictConfig, split: str, frames: int):
    """The data config's dataset with clips of the layout window's length."""
    data_cfg = OmegaConf.merge(cfg.data, {"frames": frames})
    dataset = build_dataset(data_cfg, split)
    if len(dataset) == 0:
        raise ConfigError(f"data={cfg.data.name} has no {split} clips of {frames} frames for the layout stage "
                          f"(set layout.frames to at most data.frames={cfg.data.frames})")
    return dataset


def measure_stats(dataset, clips: int) -> LayoutStats:
    """The data's move and overlap limits from `clips` clips spread evenly over the dataset."""
    count = min(int(clips), len(dataset))
    indices = torch.linspace(0, len(dataset) - 1, count).round().long().unique().tolist()
    batch = encode_layout_batch(None, [item["graphs"] for item in dataset.__getitems__(indices)], "cpu")
    return LayoutStats.measure(from_model_space(batch.boxes), batch.has_box, batch.obj_mask, classes=batch.classes,
                               num_classes=dataset.vocab.num_objects)


def layout_state(checkpoint: dict) -> dict:
    """What a LayoutSampler is built from, out of a layout-stage checkpoint (EMA weights when kept)."""
    weights = checkpoint["ema"] if checkpoint.get("ema") is not None else checkpoint["model"]
    return {"config": checkpoint["layout_config"], "stats": checkpoint["layout_stats"], "weights": weights}


def load_layout_state(path: str | Path) -> dict:
    return layout_state(load_checkpoint(path))


def run_layout_stage(cfg: DictConfig, run_dir: Path, info: DistInfo) -> Path:
    from sg2video.eval.layouts import evaluate_layouts
    from sg2video.stages.encoder import load_pretrainer

    device = info.device
    pretrainer, vocab, enc_state = load_pretrainer(required_checkpoint(run_dir, "encoder"))
    encoder = pretrainer.graph_encoder.to(device).eval().requires_grad_(False)
    cond_dim = int(enc_state["encoder_config"]["cond_dim"])
    settings = layout_settings(cfg)
    train_data = layout_dataset(cfg, "train", int(settings.frames))
    stats = measure_stats(train_data, int(settings.stats_clips))
    torch.manual_seed(int(cfg.train.seed))  # the initial weights are a function of train.seed
    module = build_layout_module(settings, vocab.num_objects, vocab.num_predicates, cond_dim)
    diffusion = GaussianDiffusion(make_schedule(str(settings.schedule), int(settings.timesteps)),
                                  str(settings.parameterization))
    result = fit(
        LayoutTask(module, encoder, diffusion, settings),
        train_data,
        collate_graphs,
        stage_loop_config(cfg, settings.train),
        run_dir,
        "layout",
        info,
        checkpoint_extra={"config": to_dict(cfg), "vocab": vocab.to_dict(), "layout_config": to_dict(settings),
                          "layout_stats": stats.to_dict(), "encoder_config": enc_state["encoder_config"]},
        to_device=lambda clips, _device: clips,
    )
    path = stage_checkpoint(run_dir, "layout")
    if info.is_main:
        report_skipped("layout", train_data, run_dir)
        sampler = LayoutSampler.from_state(load_layout_state(path), encoder, vocab, cond_dim, device)
        # val, not test: the stage's figures are what its settings are chosen by (test is the eval stage's, once)
        val = layout_dataset(cfg, "val", int(settings.frames))
        count = min(int(settings.eval_clips), len(val))
        clips = [item["graphs"] for item in val.__getitems__(list(range(count)))]
        metrics = evaluate_layouts(sampler, clips, vocab, seed=int(cfg.eval.seed))
        single = evaluate_layouts(sampler, clips, vocab, seed=int(cfg.eval.seed), samples=0, candidates=1)
        metrics.update({f"single_candidate/{k}": v for k, v in single.items() if k != "clips"})
        metrics.update({"steps": result.step, "window": int(settings.frames), "split": "val", "stats": stats.to_dict()})
        update_metrics(run_dir, "layout", metrics)
        from sg2video.stages.common import tb_writer

        writer = tb_writer(run_dir)
        write_scalars(writer, "layout/eval", {k: v for k, v in metrics.items() if not isinstance(v, dict)}, result.step)
        writer.close()
        say(f"[layout] val graphs without boxes: relations satisfied {metrics['relation_accuracy']:.3f} "
              f"(one candidate: {single['relation_accuracy']:.3f}), scorer agreement {metrics['scorer_agreement']:.3f}, "
              f"teleports {metrics['teleport_rate']:.3f}, diversity {metrics.get('diversity', float('nan')):.3f}")
    return path
