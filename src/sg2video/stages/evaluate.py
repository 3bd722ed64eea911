"""Stage `eval`: sample the held-out split's graphs with the trained pipeline and measure the videos.

Compliance (shapes world: are the named objects there, do they satisfy the relations) overall, per
predicate and per frame; the same for an unconditional control (the same model with its condition
dropped, guidance 0), which must score far lower or the conditioning is not used; retrieval of the
generated videos against their graphs with the pretrained encoder (an "SG score").
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from sg2video.data import build_dataset
from sg2video.rundir import samples_dir, stage_checkpoint, update_metrics
from sg2video.sampling import VideoGenerator
from sg2video.stages.common import tb_writer, write_scalars
from sg2video.train.distributed import DistInfo


def generate_for_items(generator: VideoGenerator, items: list[dict], cfg: DictConfig, guidance: float,
                       box_source: str = "graph") -> torch.Tensor:
    out = []
    bs = int(cfg.eval.batch_size)
    for start in range(0, len(items), bs):
        chunk = items[start : start + bs]
        out.append(generator.generate([it["graphs"] for it in chunk], sampler=str(cfg.eval.sampler),
                                      steps=int(cfg.eval.sample_steps), guidance=guidance,
                                      seed=int(cfg.eval.seed) + start, box_source=box_source))
    return torch.cat(out)


def compliance_metrics(videos: torch.Tensor, items: list[dict]) -> dict:
    from sg2video.eval.compliance import score_videos

    scores = score_videos([v.numpy() for v in videos], [it["graphs"] for it in items])
    flat = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float, np.floating))}
    for name, value in scores.get("per_predicate", {}).items():
        flat[f"relation_accuracy/{name}"] = float(value)
    return flat


def write_samples(run_dir: Path, vocab, videos: torch.Tensor, items: list[dict], count: int) -> list[dict]:
    """The first `count` samples as gif/mp4/npy + graph JSON + graph picture; returns what was written."""
    from sg2video.graphs import graphs_to_json, write_graph_json
    from sg2video.video_io import write_gif, write_npy
    from sg2video.viz import draw_timeline

    out = samples_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(min(count, len(items))):
        stem = out / f"sample_{i:03d}"
        frames = videos[i].numpy()
        write_gif(f"{stem}.gif", frames, scale=4)
        write_npy(f"{stem}.npy", frames)
        gt = items[i]["video"].permute(0, 2, 3, 1).numpy()
        write_gif(f"{stem}_gt.gif", gt, scale=4)
        write_graph_json(f"{stem}.json", graphs_to_json(vocab, items[i]["graphs"], items[i].get("source")))
        draw_timeline(vocab, items[i]["graphs"], f"{stem}_graph.png")
        written.append({"gif": f"{stem}.gif", "gt_gif": f"{stem}_gt.gif", "graph_png": f"{stem}_graph.png"})
    return written


def run_eval_stage(cfg: DictConfig, run_dir: Path, info: DistInfo) -> float | None:
    if not info.is_main:
        return None
    ckpt = stage_checkpoint(run_dir, "diffusion")
    if not ckpt.exists():
        from sg2video.errors import UserError

        raise UserError(f"{ckpt} is missing: run stage=diffusion (or stage=all) in this run directory first")
    generator = VideoGenerator.from_checkpoint(ckpt, info.device)
    dataset = build_dataset(cfg.data, "test")
    num = min(int(cfg.eval.num_samples), len(dataset))
    items = dataset.__getitems__(list(range(num)))
    t0 = time.time()
    guidance = float(cfg.eval.guidance)
    videos = generate_for_items(generator, items, cfg, guidance)
    seconds = time.time() - t0
    metrics: dict = {"num_samples": num, "sampler": str(cfg.eval.sampler), "steps": int(cfg.eval.sample_steps),
                     "guidance": guidance, "seconds_per_video": seconds / max(1, num)}
    is_shapes = cfg.data.name == "shapes"
    if is_shapes:
        metrics.update(compliance_metrics(videos, items))
        control_n = min(num, int(cfg.eval.get("control_samples", 16)))
        control = generate_for_items(generator, items[:control_n], cfg, guidance=0.0)
        metrics.update({f"control_uncond/{k}": v for k, v in compliance_metrics(control, items[:control_n]).items()
                        if "/" not in k})
        if generator.denoiser.cond_mode == "layout" and bool(cfg.eval.get("predicted_layout", True)):
            predicted = generate_for_items(generator, items[:control_n], cfg, guidance, box_source="predicted")
            metrics.update({f"predicted_layout/{k}": v for k, v in
                            compliance_metrics(predicted, items[:control_n]).items() if "/" not in k})
    write_samples(run_dir, generator.vocab, videos, items, int(cfg.eval.get("save_samples", 8)))
    update_metrics(run_dir, "eval", metrics)
    writer = tb_writer(run_dir)
    write_scalars(writer, "eval", metrics, 0)
    writer.close()
    headline = metrics.get("relation_accuracy")
    if is_shapes:
        print(f"[eval] {num} held-out graphs: object accuracy {metrics['object_accuracy']:.3f}, relation accuracy "
              f"{metrics['relation_accuracy']:.3f} (unconditional control: "
              f"{metrics['control_uncond/object_accuracy']:.3f} / {metrics['control_uncond/relation_accuracy']:.3f})")
    return headline
