"""Sampled layouts measured on their own, before any pixel is drawn.

For held-out clips, their graphs without boxes go through the layout sampler and the boxes that come out are
compared with what the graphs ask and what the data does:
- `relation_accuracy`: share of (frame, triple) pairs whose two boxes satisfy the predicate by the shapes
  checker's rule (sg2video.eval.compliance.predicate_holds on the box centres); only for vocabularies whose
  predicates the checker knows (NaN otherwise). `relation_accuracy_gt` is the same on the data's own boxes;
- `scorer_agreement`: share of triples whose predicate is the relation scorer's most likely one for the sampled
  boxes (any dataset; `scorer_agreement_gt` on the data's boxes says how far to trust it);
- motion: mean per-frame move of an object's centre, sampled and in the data (frame units), and `teleport_rate`,
  the share of sampled moves longer than the data's 99.9th-percentile move (`LayoutStats.max_move`);
- `overlap_rate`: share of (frame, object pair) whose boxes overlap more than the data's 99.9th percentile;
- `diversity`: `samples` layouts of the same graph (different seeds): the mean distance between an object's
  centres in two of them, per frame (frame units; 0 = copies).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from sg2video.eval.compliance import PREDICATE_RULES, predicate_holds
from sg2video.graphs import SceneGraph, Vocab
from sg2video.layout.boxes import centres, from_model_space, moves, pairwise_iou
from sg2video.layout.condition import encode_layout_batch
from sg2video.layout.sampler import LayoutSampler
from sg2video.layout.scorer import scorer_accuracy

OVERLAP_SLACK = 0.05


def rule_accuracy(boxes: torch.Tensor, triples: torch.Tensor, triple_mask: torch.Tensor, vocab: Vocab) -> float:
    """Share of triples (B, W, R, 3) that boxes (B, K, W, 4) satisfy by the checker's rule; NaN when the vocabulary
    has predicates the checker has no rule for."""
    if not all(name in PREDICATE_RULES for name in vocab.predicates):
        return math.nan
    s, p, o = triples.unbind(-1)
    b = torch.arange(boxes.shape[0])[:, None, None].expand_as(s)
    w = torch.arange(boxes.shape[2])[None, :, None].expand_as(s)
    c = centres(boxes.cpu())
    displacement = (c[b, o, w] - c[b, s, w])[triple_mask.cpu()].numpy()
    names = [vocab.predicates[int(i)] for i in p[triple_mask].tolist()]
    if not names:
        return math.nan
    return float(np.mean(predicate_holds(names, displacement)))


def _motion(boxes: torch.Tensor, obj_mask: torch.Tensor) -> torch.Tensor:
    """Per-frame moves (flat) of the real objects of boxes (B, K, W, 4)."""
    step = moves(boxes)  # (B, K, W - 1)
    return step[obj_mask[:, :, None].expand_as(step)]


def _overlaps(boxes: torch.Tensor, obj_mask: torch.Tensor, limit: float) -> tuple[int, int]:
    iou = pairwise_iou(boxes.transpose(1, 2))  # (B, W, K, K)
    K = boxes.shape[1]
    pair = obj_mask[:, None, :, None] & obj_mask[:, None, None, :] & torch.triu(torch.ones(K, K, dtype=torch.bool), 1)
    pair = pair.expand_as(iou)
    return int((iou[pair] > limit + OVERLAP_SLACK).sum()), int(pair.sum())


@torch.no_grad()
def evaluate_layouts(sampler: LayoutSampler, clips: Sequence[Sequence[SceneGraph]], vocab: Vocab, seed: int = 0,
                     samples: int = 4, diversity_clips: int = 8, candidates: int | None = None) -> dict[str, float]:
    """The metrics of the module docstring for held-out `clips` (per-frame graphs with their data boxes)."""
    truth = encode_layout_batch(None, clips, "cpu")
    gt_boxes = from_model_space(truth.boxes)
    box_free = [[g.without_boxes() for g in clip] for clip in clips]
    generator = torch.Generator(device=sampler.device).manual_seed(seed)
    sampled = sampler.sample_boxes(box_free, generator, candidates=candidates).cpu()
    scorer = sampler.module.scorer.cpu()
    limit = sampler.stats.max_move
    sampled_moves, data_moves = _motion(sampled, truth.obj_mask), _motion(gt_boxes, truth.obj_mask)
    overlapping, pairs = _overlaps(sampled, truth.obj_mask, sampler.stats.max_overlap)
    out = {
        "relation_accuracy": rule_accuracy(sampled, truth.triples, truth.triple_mask, vocab),
        "relation_accuracy_gt": rule_accuracy(gt_boxes, truth.triples, truth.triple_mask, vocab),
        "scorer_agreement": scorer_accuracy(scorer, sampled, truth.classes, truth.triples, truth.triple_mask),
        "scorer_agreement_gt": scorer_accuracy(scorer, gt_boxes, truth.classes, truth.triples, truth.triple_mask),
        "move_mean": float(sampled_moves.mean()) if sampled_moves.numel() else math.nan,
        "move_mean_data": float(data_moves.mean()) if data_moves.numel() else math.nan,
        "move_limit_data": float(limit),
        "teleport_rate": float((sampled_moves > limit).float().mean()) if sampled_moves.numel() else math.nan,
        "overlap_rate": overlapping / pairs if pairs else math.nan,
        "clips": len(clips),
    }
    sampler.module.scorer.to(sampler.device)
    if samples >= 2 and diversity_clips > 0:
        few = box_free[:diversity_clips]
        repeated = [clip for clip in few for _ in range(samples)]
        many = sampler.sample_boxes(repeated, generator, candidates=candidates).cpu()
        c = centres(many).view(len(few), samples, *many.shape[1:3], 2)  # (N, S, K, W, 2)
        distance = (c[:, :, None] - c[:, None, :]).norm(dim=-1)  # (N, S, S, K, W)
        off_diagonal = ~torch.eye(samples, dtype=torch.bool)
        real = truth.obj_mask[: len(few)]  # (N, K)
        per_pair = distance[:, off_diagonal]  # (N, S(S-1), K, W)
        out["diversity"] = float(per_pair.permute(0, 2, 1, 3)[real].mean())
    return out
