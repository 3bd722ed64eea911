"""What the stages that train a video generator share (diffusion, sg2im; any generator registered in
sg2video.generators): the part of the checkpoint every generator's carries, and the training hooks that sample
from the generator as it learns (TensorBoard videos, the box-free compliance curve).

Kept apart from stages.common on purpose: the cached stages (autoencoder, encoder, layout) import that module,
and an edit here must not change their cache keys.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from sg2video.config import to_dict, uses_layout_model
from sg2video.generators import VideoGenerator, generator_from_state
from sg2video.graphs import Vocab
from sg2video.logs import say
from sg2video.eval.worlds import checker_for
from sg2video.rundir import add_curve_point
from sg2video.stages.common import required_checkpoint
from sg2video.train.distributed import DistInfo
from sg2video.train.loop import Hook


def layout_state(cfg: DictConfig, run_dir: Path) -> dict | None:
    """The layout stage's model, carried in the generator's checkpoint so that sampling needs that file alone."""
    if not uses_layout_model(cfg):
        return None
    from sg2video.stages.layout import load_layout_state

    return load_layout_state(required_checkpoint(run_dir, "layout"))


def checkpoint_extra(cfg: DictConfig, run_dir: Path, vocab: Vocab, encoder_config: dict,
                     graph_encoder: torch.nn.Module, **own) -> dict:
    """The keys every generator checkpoint carries besides its weights, so that sampling needs that file alone (see
    `sampling.frozen_encoder`): the run's config, the vocabulary, the encoder stage's config and frozen graph encoder
    (the layout model reads its embeddings), the model config, frame size, clip length, object limit and the layout
    model (layout=sampled; else None); then the generator's `own` keys."""
    return {
        "config": to_dict(cfg),
        "vocab": vocab.to_dict(),
        "encoder_config": encoder_config,
        "graph_encoder": {k: v.cpu() for k, v in graph_encoder.state_dict().items()},
        "model_config": to_dict(cfg.model),
        "image_size": int(cfg.data.size),
        "clip_frames": int(cfg.data.frames),
        "max_objects": int(cfg.data.get("max_objects", 0)) or None,
        "layout": layout_state(cfg, run_dir),
        **own,
    }


def generator_hooks(cfg: DictConfig, run_dir: Path, stage: str, val_data, extra: dict, info: DistInfo) -> list[Hook]:
    """What a generator stage does during training besides the steps: sample videos into TensorBoard
    (`train.sample_every`; at the end always) and the box-free compliance curve (`eval.curve_every`). The generator
    is read from `extra` and the current weights by the class registered for `stage`."""
    hooks = [Hook(int(cfg.train.sample_every), _sample_hook(cfg, stage, val_data, extra, info.device))]
    if int(cfg.eval.curve_every) > 0 and checker_for(val_data.vocab) is not None and info.is_main:
        hooks.append(Hook(int(cfg.eval.curve_every), _curve_hook(cfg, run_dir, stage, val_data, extra, info.device)))
    return hooks


def _generator(stage: str, extra: dict, model, ema, device) -> VideoGenerator:
    state = {**extra, "stage": stage, "model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None}
    return generator_from_state(state, device)


def _sample_hook(cfg: DictConfig, stage: str, val_data, extra: dict, device):
    def log_samples(step, model, ema, writer):
        if writer is None:
            return
        video_gen = _generator(stage, extra, model, ema, device)
        items = val_data.__getitems__(list(range(min(4, len(val_data)))))
        box_free = [[g.without_boxes() for g in item["graphs"]] for item in items]  # as people write graphs
        videos = video_gen.generate(box_free, steps=int(cfg.diffusion.sample_steps),
                                    guidance=float(cfg.diffusion.guidance), seed=0, layout=str(cfg.layout.name))
        real = torch.stack([item["video"] for item in items])  # (B, T, 3, H, W)
        fake = videos.permute(0, 1, 4, 2, 3)
        writer.add_video(f"{stage}/samples", torch.cat([real, fake]), step, fps=4)

    return log_samples


def _curve_hook(cfg: DictConfig, run_dir: Path, stage: str, val_data, extra: dict, device):
    """`eval.curve_every`: box-free compliance of `eval.curve_samples` held-out (val) graphs with the EMA weights,
    into curve.json and TensorBoard (`curve/...`), with the CPU and wall seconds the training took so far (the
    curve's own sampling not counted), so modes can be compared at equal steps or equal CPU time."""
    from sg2video.stages.eval_measures import curve_point, eval_layout

    graph_lists = [item["graphs"] for item in val_data.__getitems__(
        list(range(min(int(cfg.eval.curve_samples), len(val_data)))))]
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    spent = {"cpu": 0.0, "wall": 0.0}  # by the curve's own sampling

    def hook(step, model, ema, writer):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        video_gen = _generator(stage, extra, model, ema, device)
        point = {"step": step, **curve_point(video_gen, graph_lists, cfg, eval_layout(cfg)),
                 "train_cpu_seconds": cpu0 - start_cpu - spent["cpu"],
                 "train_wall_seconds": wall0 - start_wall - spent["wall"], "graphs": len(graph_lists)}
        add_curve_point(run_dir, point)
        if writer is not None:
            for key, value in point.items():
                if key != "step" and isinstance(value, (int, float)):
                    writer.add_scalar(f"curve/{key}", value, step)
        if "object_accuracy" in point:
            kept = f", objects kept through the clip {point['identity/kept']:.3f}" if "identity/kept" in point else ""
            say(f"[curve] step {step}: {len(graph_lists)} held-out graphs without boxes: object accuracy "
                f"{point['object_accuracy']:.3f}, relation accuracy {point['relation_accuracy']:.3f}{kept}")
        spent["cpu"] += time.process_time() - cpu0
        spent["wall"] += time.perf_counter() - wall0

    return hook
