"""Graph <-> video retrieval with the pretrained encoders (SGDiff's encoder check).

`retrieval_accuracy` shuffles N paired embeddings (seeded) into disjoint galleries of `gallery` items
(floor(N / gallery) of them, the remainder left out; when N < gallery, a single gallery of all N items)
and, within each gallery, ranks all videos for every graph (g2v) and all graphs for every video (v2g) by
cosine similarity. Ties count against the query (an item tied with the true match ranks above it), so
constant embeddings score 0 rather than 1. Chance top-k is k / gallery.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from sg2video.data.clips import collate_clips


def _hits(sim: torch.Tensor, k: int) -> torch.Tensor:
    """sim (n, n), row i's true match in column i -> (n,) bool: the match is among the top k."""
    true = sim.diagonal()[:, None]
    ahead = (sim > true).sum(1) + (sim == true).sum(1) - 1  # other items ranked at or above the match
    return ahead < k


def retrieval_accuracy(
    graph_emb: torch.Tensor,
    video_emb: torch.Tensor,
    gallery: int = 100,
    ks: Sequence[int] = (1, 5),
    seed: int = 0,
) -> dict[str, float]:
    """Top-k accuracy of g2v and v2g retrieval, averaged over galleries (see the module docstring).

    graph_emb, video_emb: (N, D), row i of one pairs with row i of the other. Returns
    `g2v_top{k}`, `v2g_top{k}` for each k, plus `galleries` and `gallery_size`.
    """
    assert graph_emb.shape == video_emb.shape and graph_emb.ndim == 2, "paired (N, D) embeddings"
    num = graph_emb.shape[0]
    assert num > 0 and gallery > 0, "need items and a positive gallery size"
    size = min(gallery, num)
    num_galleries = num // size
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num, generator=generator)[: num_galleries * size].view(num_galleries, size)
    g = F.normalize(graph_emb.float().cpu(), dim=-1)[order]  # (galleries, size, D)
    v = F.normalize(video_emb.float().cpu(), dim=-1)[order]
    sim = g @ v.transpose(1, 2)  # (galleries, size, size): graph rows, video columns
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"g2v_top{k}"] = float(torch.cat([_hits(s, k) for s in sim]).float().mean())
        metrics[f"v2g_top{k}"] = float(torch.cat([_hits(s.T, k) for s in sim]).float().mean())
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
    """
    num = min(num, len(dataset))
    was_training = pretrainer.training
    pretrainer.eval()
    clip_graph, clip_video, frame_graph, frame_video = [], [], [], []
    try:
        for start in range(0, num, batch_size):
            indices = list(range(start, min(start + batch_size, num)))
            items = dataset.__getitems__(indices) if hasattr(dataset, "__getitems__") else [dataset[i] for i in indices]
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
    metrics = retrieval_accuracy(torch.cat(clip_graph), torch.cat(clip_video), gallery, ks, seed)
    frame_metrics = retrieval_accuracy(torch.cat(frame_graph), torch.cat(frame_video), gallery, ks, seed)
    metrics.update({f"frame_{name}": value for name, value in frame_metrics.items()})
    return metrics
