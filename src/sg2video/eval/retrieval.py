"""Graph <-> video retrieval with the pretrained encoders (SGDiff's encoder check).

`retrieval_accuracy` shuffles N paired embeddings (seeded) into disjoint galleries of `gallery` items
(floor(N / gallery) of them, the remainder left out; when N < gallery, a single gallery of all N items)
and, within each gallery, ranks all videos for every graph (g2v) and all graphs for every video (v2g) by
cosine similarity. Ties count against the query (an item tied with the true match ranks above it), so
constant embeddings score 0 rather than 1. Chance top-k is k / gallery.

Duplicate graphs (many Action Genome clips share one scene graph): given each item's graph key
(`sg2video.graphs.canonical_key` for a frame graph, `clip_key` for a clip), g2v also reports
- `g2v_top1_graph_equiv`: top-1 where retrieving any video whose graph key equals the query's counts as a hit
  (ties again count against the query: a hit needs some equal-graph video strictly more similar than every
  other video);
- `g2v_top1_ceiling`: the plain top-1 a perfect model that cannot tell equal graphs apart would expect: per
  query 1 / (gallery items whose key equals the query's, the query's own included), averaged. It is 1 when
  the galleries hold no duplicate graphs.
"""
from __future__ import annotations

import math
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F

from sg2video.data.clips import collate_clips
from sg2video.graphs import canonical_key, clip_key


def _hits(sim: torch.Tensor, k: int) -> torch.Tensor:
    """sim (n, n), row i's true match in column i -> (n,) bool: the match is among the top k."""
    true = sim.diagonal()[:, None]
    ahead = (sim > true).sum(1) + (sim == true).sum(1) - 1  # other items ranked at or above the match
    return ahead < k


def _equiv_top1_hits(sim: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """sim (n, n); same (n, n) bool, column j's graph equals row i's -> (n,) bool: the most similar column has
    an equal graph (a tie with a column of another graph counts as a miss)."""
    best_same = sim.masked_fill(~same, -math.inf).amax(1)
    best_other = sim.masked_fill(same, -math.inf).amax(1)
    return best_same > best_other


def gallery_indices(num: int, gallery: int = 100, seed: int = 0) -> torch.Tensor:
    """(galleries, size) item indices: the seeded disjoint galleries of the module docstring."""
    assert num > 0 and gallery > 0, "need items and a positive gallery size"
    size = min(gallery, num)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num, generator=generator)[: (num // size) * size].view(num // size, size)


def _key_ids(keys: Sequence[Hashable]) -> torch.Tensor:
    """(N,) long: equal keys -> equal ids."""
    ids: dict[Hashable, int] = {}
    return torch.tensor([ids.setdefault(key, len(ids)) for key in keys], dtype=torch.long)


def same_graph_counts(keys: Sequence[Hashable], gallery: int = 100, seed: int = 0) -> torch.Tensor:
    """(galleries, size) long: for each item of each gallery (`gallery_indices`), how many items of its gallery
    have its graph key, itself included (1: its graph is unique in the gallery)."""
    ids = _key_ids(keys)[gallery_indices(len(keys), gallery, seed)]
    return (ids[:, :, None] == ids[:, None, :]).sum(-1)


def retrieval_accuracy(
    graph_emb: torch.Tensor,
    video_emb: torch.Tensor,
    gallery: int = 100,
    ks: Sequence[int] = (1, 5),
    seed: int = 0,
    graph_keys: Sequence[Hashable] | None = None,
) -> dict[str, float]:
    """Top-k accuracy of g2v and v2g retrieval, averaged over galleries (see the module docstring).

    graph_emb, video_emb: (N, D), row i of one pairs with row i of the other. Returns
    `g2v_top{k}`, `v2g_top{k}` for each k, plus `galleries` and `gallery_size`. With `graph_keys` (N hashable
    keys, equal for equal graphs) also `g2v_top1_graph_equiv` and `g2v_top1_ceiling`.
    """
    assert graph_emb.shape == video_emb.shape and graph_emb.ndim == 2, "paired (N, D) embeddings"
    num = graph_emb.shape[0]
    assert graph_keys is None or len(graph_keys) == num, "one graph key per item"
    order = gallery_indices(num, gallery, seed)
    num_galleries, size = order.shape
    g = F.normalize(graph_emb.float().cpu(), dim=-1)[order]  # (galleries, size, D)
    v = F.normalize(video_emb.float().cpu(), dim=-1)[order]
    sim = g @ v.transpose(1, 2)  # (galleries, size, size): graph rows, video columns
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"g2v_top{k}"] = float(torch.cat([_hits(s, k) for s in sim]).float().mean())
        metrics[f"v2g_top{k}"] = float(torch.cat([_hits(s.T, k) for s in sim]).float().mean())
    if graph_keys is not None:
        ids = _key_ids(graph_keys)[order]
        same = ids[:, :, None] == ids[:, None, :]  # (galleries, size, size)
        metrics["g2v_top1_graph_equiv"] = float(torch.cat([_equiv_top1_hits(s, m) for s, m in zip(sim, same)])
                                                .double().mean())
        metrics["g2v_top1_ceiling"] = float((1.0 / same.sum(-1).double()).mean())
    metrics["galleries"] = float(num_galleries)
    metrics["gallery_size"] = float(size)
    return metrics


@torch.no_grad()
def evaluate_retrieval(
    pretrainer: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    num: int,
    gallery: int = 100,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    ks: Sequence[int] = (1, 5),
    seed: int = 0,
) -> dict[str, float]:
    """Retrieval on the first `num` clips of `dataset` (a held-out split).

    Per clip: each clip's frame-graph vectors averaged over T vs the video's clip vector (keys
    `g2v_top1`, ...). Per frame: each frame graph vs its frame vector over all num*T frames (keys
    `frame_g2v_top1`, ...). The pretrainer is put in eval mode and returned to its previous mode.

    Duplicate graphs (module docstring): per clip, two clips have equal graphs when their per-frame graph
    sequences are equal frame by frame (`sg2video.graphs.clip_key`): `g2v_top1_graph_equiv`,
    `g2v_top1_ceiling`; per frame, when the two frame graphs are equal (`canonical_key`):
    `frame_g2v_top1_graph_equiv`, `frame_g2v_top1_ceiling`. Equal means the same multisets of object classes
    and of (subject class, predicate, object class) triples; boxes do not count.
    """
    num = min(num, len(dataset))
    was_training = pretrainer.training
    pretrainer.eval()
    clip_graph, clip_video, frame_graph, frame_video = [], [], [], []
    clip_keys: list[Hashable] = []
    frame_keys: list[Hashable] = []
    try:
        for start in range(0, num, batch_size):
            indices = list(range(start, min(start + batch_size, num)))
            items = dataset.__getitems__(indices) if hasattr(dataset, "__getitems__") else [dataset[i] for i in indices]
            clip_keys.extend(clip_key(item["graphs"]) for item in items)
            frame_keys.extend(canonical_key(g) for item in items for g in item["graphs"])
            batch = collate_clips(items).to(device)
            T = batch.num_frames
            frames, clips = pretrainer.embed_videos(batch.video)
            per_frame_graph = pretrainer.embed_graphs(batch.graphs)
            clip_graph.append(pretrainer.embed_clip_graphs(batch.graphs, T).cpu())
            clip_video.append(clips.cpu())
            frame_graph.append(per_frame_graph.cpu())
            frame_video.append(frames.flatten(0, 1).cpu())
    finally:
        pretrainer.train(was_training)
    metrics = retrieval_accuracy(torch.cat(clip_graph), torch.cat(clip_video), gallery, ks, seed, clip_keys)
    frame_metrics = retrieval_accuracy(torch.cat(frame_graph), torch.cat(frame_video), gallery, ks, seed,
                                       frame_keys)
    metrics.update({f"frame_{name}": value for name, value in frame_metrics.items()})
    return metrics
