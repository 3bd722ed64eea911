"""Stage `eval`: sample the held-out split's graphs with the trained pipeline, measure, and report.

Metrics (all into `metrics.json["eval"]` and TensorBoard):
- compliance (shapes world): object / relation accuracy, extra objects, per predicate; the same for an
  unconditional control (the same model with its condition dropped, guidance 0), which must score far
  lower or the conditioning is not used; in layout mode also with boxes from the encoder's box head;
- long videos: held-out clips of `eval.long_frames` frames (their relations change as objects move)
  generated chunk by chunk, compliance per timeline segment;
- SG score: retrieval of generated videos against their graphs with the pretrained encoder;
- fidelity: FID/KID per frame and a video Frechet distance with the named features; temporal change;
- manipulation (SGDiff): one relation or object changed, regenerated with the same seed.
Then `report.html`: config, metrics, loss curves, and samples beside their graphs and ground truth.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from sg2video.data import build_dataset
from sg2video.errors import UserError
from sg2video.rundir import read_metrics, samples_dir, stage_checkpoint, update_metrics
from sg2video.sampling import VideoGenerator
from sg2video.stages.common import tb_writer, write_scalars
from sg2video.train.distributed import DistInfo


def generate_for_graphs(generator: VideoGenerator, graph_lists: list, cfg: DictConfig, guidance: float,
                        box_source: str = "graph", seed_offset: int = 0) -> torch.Tensor:
    out = []
    bs = int(cfg.eval.batch_size)
    for start in range(0, len(graph_lists), bs):
        out.append(generator.generate(graph_lists[start : start + bs], sampler=str(cfg.eval.sampler),
                                      steps=int(cfg.eval.sample_steps), guidance=guidance,
                                      seed=int(cfg.eval.seed) + seed_offset + start, box_source=box_source))
    return torch.cat(out)


def compliance_metrics(videos: torch.Tensor, graph_lists: list) -> dict:
    from sg2video.eval.compliance import score_videos

    scores = score_videos([v.numpy() for v in videos], graph_lists)
    flat = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float, np.floating))}
    for name, value in scores.get("per_predicate", {}).items():
        flat[f"relation_accuracy/{name}"] = float(value)
    return flat


def segment_metrics(videos: torch.Tensor, graph_lists: list) -> dict:
    """Compliance per timeline segment (runs of frames with the same relations), pooled over videos."""
    from sg2video.eval.compliance import check_video
    from sg2video.graphs import relation_segments

    first, later, changes = [], [], 0
    for video, graphs in zip(videos, graph_lists):
        result = check_video(video.numpy(), graphs)
        segments = relation_segments(graphs)
        changes += len(segments) - 1
        for i, (start, end) in enumerate(segments):
            (first if i == 0 else later).append(result.over_frames(start, end))
    out = {"segments_per_video": (changes / max(1, len(graph_lists))) + 1}
    for name, group in (("first_segment", first), ("later_segments", later)):
        for key in ("object_accuracy", "relation_accuracy"):
            values = [getattr(g, key) if hasattr(g, key) else g[key] for g in group]
            values = [v for v in values if v == v]
            out[f"{name}/{key}"] = float(np.mean(values)) if values else float("nan")
    return out


def write_samples(run_dir: Path, vocab, videos: torch.Tensor, items: list[dict], count: int) -> list[dict]:
    """The first `count` samples as gif/npy + graph JSON + graph picture + ground truth gif."""
    from sg2video.eval.compliance import check_video
    from sg2video.graphs import graphs_to_json, write_graph_json
    from sg2video.video_io import write_gif, write_npy
    from sg2video.viz import draw_timeline

    out = samples_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(min(count, len(items))):
        stem = out / f"sample_{i:03d}"
        frames = videos[i].numpy()
        scale = max(1, 128 // frames.shape[1])
        write_gif(f"{stem}.gif", frames, scale=scale)
        write_npy(f"{stem}.npy", frames)
        write_gif(f"{stem}_gt.gif", items[i]["video"].permute(0, 2, 3, 1).numpy(), scale=scale)
        write_graph_json(f"{stem}.json", graphs_to_json(vocab, items[i]["graphs"], items[i].get("source")))
        draw_timeline(vocab, items[i]["graphs"], f"{stem}_graph.png")
        sample = {"gif_path": f"{stem}.gif", "gt_gif_path": f"{stem}_gt.gif", "graph_png_path": f"{stem}_graph.png",
                  "caption": f"held-out clip {items[i].get('source', {}).get('index', i)}"}
        if vocab.objects[0] == "red circle":  # the shapes world: score each sample for the report
            result = check_video(frames, items[i]["graphs"])
            sample["metrics"] = {"object_accuracy": result.object_accuracy,
                                 "relation_accuracy": result.relation_accuracy}
        written.append(sample)
    return written


def sg_score(encoder_ckpt: Path, videos: torch.Tensor, items: list[dict], gallery: int, device) -> dict:
    """Retrieval of generated videos against their graphs with the pretrained encoder (and of the real clips)."""
    from sg2video.data.clips import collate_clips, video_to_model
    from sg2video.eval.retrieval import retrieval_accuracy
    from sg2video.stages.encoder import load_pretrainer

    model, _, _ = load_pretrainer(encoder_ckpt, device)
    model.to(device)
    batch = collate_clips(items).to(device)
    with torch.inference_mode():
        graph_emb = model.embed_clip_graphs(batch.graphs, batch.num_frames).cpu()
        fake = video_to_model(videos.permute(0, 1, 4, 2, 3)).to(device)
        _, fake_emb = model.embed_videos(fake)
        _, real_emb = model.embed_videos(batch.video)
    size = min(gallery, len(items))
    fake_scores = retrieval_accuracy(graph_emb, fake_emb.cpu(), gallery=size)
    real_scores = retrieval_accuracy(graph_emb, real_emb.cpu(), gallery=size)
    out = {f"sg_score/{k}": v for k, v in fake_scores.items() if k.startswith(("g2v", "v2g"))}
    out.update({f"sg_score_real/{k}": v for k, v in real_scores.items() if k.startswith(("g2v", "v2g"))})
    out["sg_score/gallery_size"] = float(size)
    return out


def fidelity(cfg: DictConfig, encoder_ckpt: Path, videos: torch.Tensor, items: list[dict], device) -> dict:
    from sg2video.eval.fidelity import EncoderFeatures, LocalInceptionFeatures, fidelity_metrics, temporal_metrics
    from sg2video.stages.encoder import load_pretrainer

    real = torch.stack([it["video"].permute(0, 2, 3, 1) for it in items]).numpy()
    fake = videos.numpy()
    if cfg.eval.fid_weights:
        extractor = LocalInceptionFeatures(str(cfg.eval.fid_weights), device=device)
    else:
        model, _, _ = load_pretrainer(encoder_ckpt, device)
        extractor = EncoderFeatures(model.video_encoder.to(device), name=f"sg2video-video-encoder@{encoder_ckpt}",
                                    device=device)
    out = fidelity_metrics(real, fake, extractor, kid_subset_size=min(50, len(items) * real.shape[1]))
    out.update(temporal_metrics(real, fake))
    return out


def manipulation(generator: VideoGenerator, items: list[dict], cfg: DictConfig, guidance: float, box_source: str) -> dict:
    """SGDiff's semantic manipulation: change one relation / object, regenerate with the same seed."""
    from sg2video.eval.manipulation import element_outcomes, manipulate_graph, score_manipulation

    out = {}
    originals = [it["graphs"] for it in items]
    before = generate_for_graphs(generator, originals, cfg, guidance, box_source, seed_offset=1000)
    for kind in ("relation", "object"):
        changed_graphs, changes = [], []
        for i, graphs in enumerate(originals):
            new, change = manipulate_graph(graphs, kind, rng=int(cfg.eval.seed) + i, vocab=generator.vocab)
            changed_graphs.append(new)
            changes.append(change)
        after = generate_for_graphs(generator, changed_graphs, cfg, guidance, box_source, seed_offset=1000)
        res_before = [element_outcomes(v.numpy(), g) for v, g in zip(before, originals)]
        res_after = [element_outcomes(v.numpy(), g) for v, g in zip(after, changed_graphs)]
        scores = score_manipulation(res_before, res_after, [c.changed for c in changes], [c.unchanged for c in changes])
        out.update({f"manipulation_{kind}/{k}": float(v) for k, v in scores.items()})
    return out


def run_eval_stage(cfg: DictConfig, run_dir: Path, info: DistInfo) -> float | None:
    if not info.is_main:
        return None
    ckpt = stage_checkpoint(run_dir, "diffusion")
    if not ckpt.exists():
        raise UserError(f"{ckpt} is missing: run stage=diffusion (or stage=all) in this run directory first")
    encoder_ckpt = stage_checkpoint(run_dir, "encoder")
    device = info.device
    generator = VideoGenerator.from_checkpoint(ckpt, device)
    dataset = build_dataset(cfg.data, "test")
    num = min(int(cfg.eval.num_samples), len(dataset))
    items = dataset.__getitems__(list(range(num)))
    graph_lists = [it["graphs"] for it in items]
    guidance = float(cfg.eval.guidance)
    t0 = time.time()
    videos = generate_for_graphs(generator, graph_lists, cfg, guidance)
    metrics: dict = {"num_samples": num, "sampler": str(cfg.eval.sampler), "steps": int(cfg.eval.sample_steps),
                     "guidance": guidance, "seconds_per_video": (time.time() - t0) / max(1, num),
                     "cond": generator.denoiser.cond_mode}
    is_shapes = cfg.data.name == "shapes"
    layout = generator.denoiser.cond_mode == "layout"
    few = items[: min(num, int(cfg.eval.control_samples))]
    few_graphs = [it["graphs"] for it in few]
    if is_shapes:
        metrics.update(compliance_metrics(videos, graph_lists))
        control = generate_for_graphs(generator, few_graphs, cfg, guidance=0.0)
        metrics.update({f"control_uncond/{k}": v for k, v in compliance_metrics(control, few_graphs).items() if "/" not in k})
        if layout and bool(cfg.eval.predicted_layout):
            predicted = generate_for_graphs(generator, few_graphs, cfg, guidance, box_source="predicted")
            metrics.update({f"predicted_layout/{k}": v for k, v in compliance_metrics(predicted, few_graphs).items()
                            if "/" not in k})
        long_frames = int(cfg.eval.get("long_frames", 0) or 0)
        if long_frames > generator.clip_frames and generator.prefix_frames > 0 and int(cfg.eval.long_samples) > 0:
            long_items = _long_clips(cfg, long_frames, int(cfg.eval.long_samples))
            long_graphs = [it["graphs"] for it in long_items]
            t1 = time.time()
            long_videos = generate_for_graphs(generator, long_graphs, cfg, guidance)
            metrics["long/seconds_per_video"] = (time.time() - t1) / len(long_items)
            metrics["long/frames"] = long_frames
            metrics.update({f"long/{k}": v for k, v in compliance_metrics(long_videos, long_graphs).items() if "/" not in k})
            metrics.update({f"long/{k}": v for k, v in segment_metrics(long_videos, long_graphs).items()})
        if int(cfg.eval.get("manipulation_samples", 0) or 0) > 0:
            subset = items[: int(cfg.eval.manipulation_samples)]
            metrics.update(manipulation(generator, subset, cfg, guidance, "predicted" if layout else "graph"))
    if encoder_ckpt.exists() and num >= 2:
        metrics.update(sg_score(encoder_ckpt, videos, items, int(cfg.eval.retrieval_gallery), device))
        fid = fidelity(cfg, encoder_ckpt, videos, items, device)
        metrics.update({f"fidelity/{k}": v for k, v in fid.items()})
    samples = write_samples(run_dir, generator.vocab, videos, items, int(cfg.eval.save_samples))
    update_metrics(run_dir, "eval", metrics)
    writer = tb_writer(run_dir)
    write_scalars(writer, "eval", metrics, 0)
    writer.close()
    _report(cfg, run_dir, samples)
    if is_shapes:
        print(f"[eval] {num} held-out graphs: object accuracy {metrics['object_accuracy']:.3f}, relation accuracy "
              f"{metrics['relation_accuracy']:.3f}, colour accuracy {metrics['colour_accuracy']:.3f} (unconditional "
              f"control: {metrics['control_uncond/object_accuracy']:.3f} / "
              f"{metrics['control_uncond/relation_accuracy']:.3f} / {metrics['control_uncond/colour_accuracy']:.3f})")
    return metrics.get("relation_accuracy")


def _long_clips(cfg: DictConfig, frames: int, count: int) -> list[dict]:
    from omegaconf import OmegaConf

    long_cfg = OmegaConf.merge(cfg.data, {"frames": frames})
    return build_dataset(long_cfg, "test").__getitems__(list(range(count)))


def _report(cfg: DictConfig, run_dir: Path, samples: list[dict]) -> Path:
    from sg2video.config import to_dict
    from sg2video.eval.report import summarize_config, write_report

    title = f"sg2video run: {cfg.data.name}, encoder {cfg.encoder.name}, cond {cfg.model.cond}"
    return write_report(run_dir, title, summarize_config(to_dict(cfg)), read_metrics(run_dir), samples=samples)
