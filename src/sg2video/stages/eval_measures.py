"""The eval stage's measurement functions (sg2video.stages.evaluate runs them in order): generating videos for
held-out graphs, compliance, identity, timeline segments, teleports, diversity, manipulation, SG score,
fidelity, training-curve points, and writing the samples.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from sg2video.data import build_dataset
from sg2video.eval.worlds import WorldChecker, checker_for
from sg2video.generators import VideoGenerator
from sg2video.graphs import SceneGraph
from sg2video.rundir import samples_dir

GraphLists = Sequence[Sequence[SceneGraph]]


def is_shapes_world(vocab) -> bool:
    """Whether the exact shapes checker applies: the vocabulary is the shapes world's (the one test of it)."""
    checker = checker_for(vocab)
    return checker is not None and checker.name == "shapes"


def _shapes_checker() -> WorldChecker:
    from sg2video.data.shapes import shapes_vocab

    return checker_for(shapes_vocab())


def box_free(graph_lists: GraphLists) -> list[list[SceneGraph]]:
    """The graphs as a person writes them: no boxes."""
    return [[g.without_boxes() for g in frames] for frames in graph_lists]


def generate_for_graphs(video_gen: VideoGenerator, graph_lists: GraphLists, cfg: DictConfig, guidance: float,
                        layout: str, seed_offset: int = 0, return_graphs: bool = False):
    """Videos for many graphs, `eval.batch_size` at a time, each batch seeded by its position."""
    videos, used = [], []
    bs = int(cfg.eval.batch_size)
    for start in range(0, len(graph_lists), bs):
        part, graphs = video_gen.generate(graph_lists[start : start + bs], sampler=str(cfg.eval.sampler),
                                          steps=int(cfg.eval.sample_steps), guidance=guidance,
                                          seed=int(cfg.eval.seed) + seed_offset + start, layout=layout,
                                          return_graphs=True)
        videos.append(part)
        used.extend(graphs)
    videos = torch.cat(videos)
    return (videos, used) if return_graphs else videos


# -- measurements ------------------------------------------------------------------------------------


def compliance_metrics(videos: torch.Tensor, graph_lists: GraphLists, checker: WorldChecker | None = None) -> dict:
    """The world checker's scores (default: the shapes world's), flat: means, `relation_accuracy/<predicate>` and,
    for a world that has predicate families, `relation_family/<family>` (pooled over (frame, triple) rows)."""
    checker = checker or _shapes_checker()
    scores = checker.score_videos([v.numpy() for v in videos], graph_lists)
    flat = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float, np.floating))}
    for name, value in scores.get("per_predicate", {}).items():
        flat[f"relation_accuracy/{name}"] = float(value)
    for name in checker.families:
        flat[f"relation_family/{name}"] = float(scores.get("per_family", {}).get(name, math.nan))
    return flat


def identity_of(videos: torch.Tensor, graph_lists: GraphLists) -> dict:
    """Objects keeping their colour and shape from frame to frame (sg2video.eval.compliance.identity_metrics)."""
    from sg2video.eval.compliance import identity_metrics

    return identity_metrics([v.numpy() for v in videos], graph_lists)


def curve_point(video_gen: VideoGenerator, graph_lists: GraphLists, cfg: DictConfig, layout: str) -> dict:
    """One point of a training curve: the headline compliance and identity of samples of held-out graphs given
    without boxes (a built-in world; {} for data without a checker)."""
    checker = checker_for(video_gen.vocab)
    if checker is None:
        return {}
    videos = generate_for_graphs(video_gen, box_free(graph_lists), cfg, float(cfg.eval.guidance), layout)
    out = _headline_keys(compliance_metrics(videos, graph_lists, checker))
    if checker.name == "shapes":
        out.update({f"identity/{k}": v for k, v in identity_of(videos, graph_lists).items()})
    return out


def eval_layout(cfg: DictConfig) -> str:
    """The layout a box-free graph gets: `layout=given` has nothing to be given, so it falls back to the box head."""
    return "head" if str(cfg.layout.name) == "given" else str(cfg.layout.name)


def _headline_keys(metrics: dict) -> dict:
    """The means and the per-family figures (not per predicate): what a control or a split reports."""
    return {k: v for k, v in metrics.items() if "/" not in k or k.startswith("relation_family/")}


# -- the compositional split and the relation control ------------------------------------------------

SPLIT_KEYS = ("object_accuracy", "relation_accuracy", "colour_accuracy", "relation_accuracy_detected")


def relation_free(graph_lists: GraphLists) -> list[list[SceneGraph]]:
    """The same objects with no relations and no boxes: what the relation control draws its layouts for."""
    return [[SceneGraph(g.objs, torch.zeros(0, 3, dtype=torch.long)) for g in frames] for frames in graph_lists]


def holdout_metrics(videos: torch.Tensor, graph_lists: GraphLists, in_training: Sequence[bool] | None) -> dict:
    """Compliance of the graphs holding a held-out combination (`unseen/...`) and of the others (`seen/...`)
    apart, and relation accuracy pooled over (frame, triple) rows of held-out triples alone
    (`heldout_triples/...`) and of triples joining a held-out pair (`heldout_pairs/...`)."""
    from sg2video.data.shapes import shapes_vocab
    from sg2video.data.shapes_holdout import Holdout

    holdout = Holdout.from_vocab(shapes_vocab())
    unseen = [holdout.clip_is_unseen(graphs) for graphs in graph_lists]
    out = {}
    for name, wanted in (("unseen", True), ("seen", False)):
        rows = [i for i, flag in enumerate(unseen) if flag == wanted]
        scores = compliance_metrics(videos[rows], [graph_lists[i] for i in rows]) if rows else {}
        out[f"{name}/graphs"] = len(rows)
        out.update({f"{name}/{key}": scores.get(key, math.nan) for key in SPLIT_KEYS})
        if in_training is not None:
            out[f"{name}/graphs_in_training"] = int(sum(in_training[i] for i in rows))
    for name, mask_of in (("heldout_triples", holdout.triple_mask), ("heldout_pairs", holdout.pair_triple_mask)):
        accuracy, count = pooled_relation_accuracy(videos, graph_lists, mask_of)
        out.update({f"{name}/relation_accuracy": accuracy, f"{name}/count": count})
    return out


def pooled_relation_accuracy(videos: torch.Tensor, graph_lists: GraphLists, mask_of) -> tuple[float, int]:
    """Relation accuracy over the (frame, triple) rows `mask_of(graph)` keeps, pooled over videos (a held-out
    triple is rare, so a per-video mean would weigh one row like a whole video), and how many rows."""
    from sg2video.eval.compliance import check_video

    correct = total = 0
    for video, graphs in zip(videos, graph_lists):
        kept = [SceneGraph(g.objs, g.triples[torch.from_numpy(mask_of(g))]) for g in graphs]
        if any(g.num_triples for g in kept):
            result = check_video(video.numpy(), kept)
            correct += int(result.relation_correct_per_frame.sum())
            total += int(result.relations_per_frame.sum())
    return (correct / total if total else math.nan), total


def graphs_in_training(data_cfg, graph_lists: GraphLists, clips: int) -> list[bool] | None:
    """Which eval clips' graphs (`sg2video.graphs.clip_key`: per-frame graphs, object order aside) occur verbatim
    among train clips 0..clips-1. The shapes world gives their keys from its parameters without rendering (about
    10k clips/s); None for a dataset that would have to be read clip by clip."""
    from sg2video.graphs import clip_key

    dataset = build_dataset(data_cfg, "train")
    world = getattr(dataset, "world", None)
    if not hasattr(world, "graph_key") or clips <= 0:
        return None
    keys = {world.graph_key(world.params("train", i)) for i in range(min(clips, len(dataset)))}
    return [clip_key(graphs) in keys for graphs in graph_lists]


def segment_metrics(videos: torch.Tensor, graph_lists: GraphLists, checker: WorldChecker | None = None) -> dict:
    """Compliance per timeline segment (runs of frames with the same relations), pooled over videos: the first
    segment, the later ones, and the worst segment of any video."""
    from sg2video.graphs import relation_segments

    checker = checker or _shapes_checker()
    first, later, changes = [], [], 0
    for video, graphs in zip(videos, graph_lists):
        result = checker.check_video(video.numpy(), graphs)
        segments = relation_segments(graphs)
        changes += len(segments) - 1
        for i, (start, end) in enumerate(segments):
            (first if i == 0 else later).append(result.over_frames(start, end))
    out = {"segments_per_video": (changes / max(1, len(graph_lists))) + 1}
    for name, group in (("first_segment", first), ("later_segments", later), ("worst_segment", first + later)):
        for key in ("object_accuracy", "relation_accuracy"):
            values = [g[key] for g in group if g[key] == g[key]]
            pooled = min(values) if name == "worst_segment" else np.mean(values)
            out[f"{name}/{key}"] = float(pooled) if values else float("nan")
    return out


def teleport_metrics(videos: torch.Tensor, graph_lists: GraphLists) -> dict:
    """Share of frame-to-frame moves of the graph's objects (detected in both frames) longer than any move an
    object of the world can make (sg2video.eval.samples.world_move_limit)."""
    from sg2video.eval.compliance import object_moves
    from sg2video.eval.samples import DETECTION_SLACK_PX, world_move_limit

    limit = world_move_limit(int(videos.shape[2]))
    moved = np.concatenate([object_moves(v.numpy(), g) for v, g in zip(videos, graph_lists)] or [np.zeros(0)])
    rate = float((moved > limit + DETECTION_SLACK_PX).mean()) if moved.size else math.nan
    return {"teleport_rate": rate, "teleport_limit_px": limit, "moves_counted": int(moved.size)}


def diversity_metrics(video_gen: VideoGenerator, graph_lists: GraphLists, cfg: DictConfig, guidance: float,
                      layout: str, samples: int) -> dict:
    """`samples` videos of each graph in one call (one seed, different noise per video): the mean distance between
    where the same object lands in two of them (frame units; 0 = copies), and their mean absolute pixel
    difference (of 255)."""
    from sg2video.eval.samples import spread_between

    spreads = []
    for i, graphs in enumerate(graph_lists):
        videos = video_gen.generate([graphs] * samples, sampler=str(cfg.eval.sampler),
                                    steps=int(cfg.eval.sample_steps), guidance=guidance,
                                    seed=int(cfg.eval.seed) + 7000 + i, layout=layout).numpy()
        spreads.append(spread_between(list(videos), graphs))
    return {"position_spread": _mean_of_finite([s["position_spread"] for s in spreads]),
            "pixel_difference": _mean_of_finite([s["pixel_difference"] for s in spreads]),
            "graphs": len(graph_lists), "samples_per_graph": samples}


def _mean_of_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def manipulation_metrics(video_gen: VideoGenerator, graph_lists: GraphLists, cfg: DictConfig, guidance: float,
                         layout: str) -> dict:
    """SGDiff's semantic manipulation on box-free graphs: change one relation / object, regenerate with the same
    seed."""
    from sg2video.eval.manipulation import element_outcomes, manipulate_graph, score_manipulation

    out = {}
    originals = [list(g) for g in graph_lists]
    before = generate_for_graphs(video_gen, originals, cfg, guidance, layout, seed_offset=1000)
    res_before = [element_outcomes(v.numpy(), g) for v, g in zip(before, originals)]
    for kind in ("relation", "object"):
        changed_graphs, changes = [], []
        for i, graphs in enumerate(originals):
            new, change = manipulate_graph(graphs, kind, rng=int(cfg.eval.seed) + i, vocab=video_gen.vocab)
            changed_graphs.append(new)
            changes.append(change)
        after = generate_for_graphs(video_gen, changed_graphs, cfg, guidance, layout, seed_offset=1000)
        res_after = [element_outcomes(v.numpy(), g) for v, g in zip(after, changed_graphs)]
        scores = score_manipulation(res_before, res_after, [c.changed for c in changes], [c.unchanged for c in changes])
        out.update({f"manipulation_{kind}/{k}": float(v) for k, v in scores.items()})
    return out


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
    from hydra.utils import to_absolute_path

    from sg2video.eval.fidelity import (EncoderFeatures, LocalI3DFeatures, LocalInceptionFeatures, fidelity_metrics,
                                        fvd_metrics, temporal_metrics)
    from sg2video.stages.encoder import load_pretrainer

    real = torch.stack([it["video"].permute(0, 2, 3, 1) for it in items]).numpy()
    fake = videos.numpy()
    if cfg.eval.fid_weights:
        extractor = LocalInceptionFeatures(to_absolute_path(str(cfg.eval.fid_weights)), device=device)
    else:
        model, _, _ = load_pretrainer(encoder_ckpt, device)
        extractor = EncoderFeatures(model.video_encoder.to(device), name=f"sg2video-video-encoder@{encoder_ckpt}",
                                    device=device)
    out = fidelity_metrics(real, fake, extractor, kid_subset_size=min(50, len(items) * real.shape[1]))
    if cfg.eval.fvd_weights:
        out.update(fvd_metrics(real, fake, LocalI3DFeatures(to_absolute_path(str(cfg.eval.fvd_weights)), device=device)))
    out.update(temporal_metrics(real, fake))
    return out


def write_samples(run_dir: Path, vocab, videos: torch.Tensor, items: list[dict], count: int,
                  drawn_from: GraphLists | None = None) -> list[dict]:
    """The first `count` samples as gif/npy + the graph they were drawn from as JSON (with the boxes the layout
    model sampled; default: the items' own graphs) + a picture of it + the ground truth gif."""
    drawn_from = drawn_from if drawn_from is not None else [it["graphs"] for it in items]
    from sg2video.graph_json import graphs_to_json, write_graph_json
    from sg2video.video_io import write_gif, write_npy
    from sg2video.viz import draw_timeline

    out = samples_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    checker = checker_for(vocab)
    written = []
    for i in range(min(count, len(items))):
        stem = out / f"sample_{i:03d}"
        frames = videos[i].numpy()
        scale = max(1, 128 // frames.shape[1])
        write_gif(f"{stem}.gif", frames, scale=scale)
        write_npy(f"{stem}.npy", frames)
        write_gif(f"{stem}_gt.gif", items[i]["video"].permute(0, 2, 3, 1).numpy(), scale=scale)
        write_graph_json(f"{stem}.json", graphs_to_json(vocab, drawn_from[i], items[i].get("source"), every_box=True))
        draw_timeline(vocab, drawn_from[i], f"{stem}_graph.png")
        sample = {"gif_path": f"{stem}.gif", "gt_gif_path": f"{stem}_gt.gif", "graph_png_path": f"{stem}_graph.png",
                  "caption": f"held-out clip {items[i].get('source', {}).get('index', i)}, graph without boxes"}
        if checker is not None:  # score each sample for the report
            result = checker.check_video(frames, items[i]["graphs"])
            sample["metrics"] = {"object_accuracy": result.object_accuracy,
                                 "relation_accuracy": result.relation_accuracy}
        written.append(sample)
    return written


def _long_clips(cfg: DictConfig, frames: int, count: int) -> list[dict]:
    from omegaconf import OmegaConf

    long_cfg = OmegaConf.merge(cfg.data, {"frames": frames})
    split = str(OmegaConf.select(cfg, "eval.split", default="test"))  # as evaluate.eval_split
    return build_dataset(long_cfg, split).__getitems__(list(range(count)))


