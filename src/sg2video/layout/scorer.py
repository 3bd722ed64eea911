"""Judging sampled layouts with what the training data shows, for any dataset's predicates.

- `RelationScorer`: p(predicate | subject box, object box, their classes), a small MLP trained on the data's
  own triples and boxes. It learns whatever geometry a predicate has in the data ("left of" on shapes exactly,
  "holding" on Action Genome loosely, "looking at" hardly at all) and scores a layout by how well its boxes
  carry the graph's relations.
- `LayoutStats`: how far objects move per frame and how much two objects of one frame overlap in the data
  (high quantiles), so a sampled layout can be checked for moves and overlaps the data never shows.
`layout_scores` combines both into one number per candidate layout; the sampler keeps the best candidate.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from sg2video.layout.boxes import centres, moves, pairwise_iou

VIOLATION_PENALTY = 10.0  # per implausible move or overlap: more than any likely relation log-probability


def pair_features(subject: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., 4) x0 y0 x1 y1 boxes of subject and object -> (..., 14) geometry features: both centres, their
    displacement and its absolute value (which axis is the major one), both sizes and their log ratio."""
    cs, co = centres(subject), centres(target)
    ss = (subject[..., 2:] - subject[..., :2]).clamp(min=1e-3)
    so = (target[..., 2:] - target[..., :2]).clamp(min=1e-3)
    return torch.cat([cs, co, co - cs, (co - cs).abs(), ss, so, (so / ss).log()], dim=-1)


class RelationScorer(nn.Module):
    """Logits over predicates for (subject box, object box, subject class, object class)."""

    def __init__(self, num_classes: int, num_predicates: int, dim: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.class_embed = nn.Embedding(num_classes, dim)
        self.net = nn.Sequential(nn.Linear(14 + 2 * dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, num_predicates))

    def forward(self, subject: torch.Tensor, target: torch.Tensor, subject_class: torch.Tensor,
                target_class: torch.Tensor) -> torch.Tensor:
        features = torch.cat([pair_features(subject, target), self.class_embed(subject_class),
                              self.class_embed(target_class)], dim=-1)
        return self.net(features)

    def triple_log_probs(self, boxes: torch.Tensor, classes: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
        """log p(predicate) of every triple. boxes (B, K, W, 4) x0 y0 x1 y1; classes (B, K); triples (B, W, R, 3)
        -> (B, W, R)."""
        B, K, W, _ = boxes.shape
        s, p, o = triples.unbind(-1)
        b = torch.arange(B, device=boxes.device)[:, None, None].expand_as(s)
        w = torch.arange(W, device=boxes.device)[None, :, None].expand_as(s)
        logits = self(boxes[b, s, w], boxes[b, o, w], classes[b, s], classes[b, o])
        return logits.log_softmax(-1).gather(-1, p[..., None])[..., 0]

    def loss(self, boxes: torch.Tensor, classes: torch.Tensor, triples: torch.Tensor, triple_mask: torch.Tensor,
             box_mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the data's triples whose two boxes are given. box_mask (B, K, W)."""
        B, K, W, _ = boxes.shape
        s, _, o = triples.unbind(-1)
        b = torch.arange(B, device=boxes.device)[:, None, None].expand_as(s)
        w = torch.arange(W, device=boxes.device)[None, :, None].expand_as(s)
        usable = triple_mask & box_mask[b, s, w] & box_mask[b, o, w]
        if not bool(usable.any()):
            return boxes.sum() * 0.0
        return -self.triple_log_probs(boxes, classes, triples)[usable].mean()


@dataclass
class LayoutStats:
    """What the data allows, in normalised frame units: the largest per-frame move of an object's centre and the
    largest overlap (IoU) of two objects of one frame (high quantiles over the training data), and the range its
    box centres and sizes cover per axis (low and high quantiles): `project` keeps sampled boxes inside it."""

    max_move: float = 1.0
    max_overlap: float = 1.0
    min_gap: float = -1.0  # the smallest gap between two objects' boxes of a frame (negative: they overlap)
    clips: int = 0
    centre_lo: tuple[float, float] = (0.0, 0.0)
    centre_hi: tuple[float, float] = (1.0, 1.0)
    size_lo: tuple[float, float] = (0.0, 0.0)
    size_hi: tuple[float, float] = (1.0, 1.0)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "LayoutStats":
        def value(k, v):
            return int(v) if k == "clips" else tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v)

        return cls(**{k: value(k, v) for k, v in data.items()})

    def project(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes (..., 4) x0 y0 x1 y1 with each centre and size moved into the range the data covers (a box the
        data would never show, half outside the frame or of a size no object has, is drawn as its nearest one
        that it would)."""
        lo, hi = boxes.new_tensor(self.centre_lo), boxes.new_tensor(self.centre_hi)
        size_lo, size_hi = boxes.new_tensor(self.size_lo), boxes.new_tensor(self.size_hi)
        size = torch.maximum(torch.minimum(boxes[..., 2:] - boxes[..., :2], size_hi), size_lo)
        centre = torch.maximum(torch.minimum(centres(boxes), hi), lo)
        return torch.cat([centre - size / 2, centre + size / 2], dim=-1)

    @classmethod
    def measure(cls, boxes: torch.Tensor, box_mask: torch.Tensor, obj_mask: torch.Tensor,
                quantile: float = 0.999) -> "LayoutStats":
        """From data boxes (N, K, W, 4) x0 y0 x1 y1 with box_mask (N, K, W) and obj_mask (N, K)."""
        step = moves(boxes)  # (N, K, W - 1)
        both = box_mask[..., 1:] & box_mask[..., :-1] & _nonempty(boxes)[..., 1:] & _nonempty(boxes)[..., :-1]
        move_values = step[both]
        iou = pairwise_iou(boxes.transpose(1, 2))  # (N, W, K, K)
        real = (box_mask & _nonempty(boxes)).transpose(1, 2)  # (N, W, K)
        pair = real[..., :, None] & real[..., None, :]
        pair &= ~torch.eye(boxes.shape[1], dtype=torch.bool, device=boxes.device)
        overlap_values = iou[pair]
        gap_values = pairwise_gap(boxes.transpose(1, 2))[pair]
        given = box_mask & obj_mask[:, :, None]
        centre, size = centres(boxes)[given], (boxes[..., 2:] - boxes[..., :2])[given]  # (n, 2) each

        def bounds(values: torch.Tensor, q: float) -> tuple[float, float]:
            return tuple(float(v) for v in values.quantile(q, dim=0)) if values.numel() else None  # type: ignore

        ranges = {}
        if centre.numel():
            low = 1.0 - quantile
            ranges = dict(centre_lo=bounds(centre, low), centre_hi=bounds(centre, quantile),
                          size_lo=bounds(size, low), size_hi=bounds(size, quantile))
        return cls(
            max_move=float(move_values.quantile(quantile)) if move_values.numel() else 1.0,
            max_overlap=float(overlap_values.quantile(quantile)) if overlap_values.numel() else 1.0,
            min_gap=float(gap_values.quantile(1.0 - quantile)) if gap_values.numel() else -1.0,
            clips=int(boxes.shape[0]),
            **ranges,
        )


def pairwise_gap(boxes: torch.Tensor) -> torch.Tensor:
    """(..., K, 4) x0 y0 x1 y1 -> (..., K, K): how far apart two boxes are along the axis that separates them
    most (positive: a gap between them; negative: how deep they overlap)."""
    a, b = boxes[..., :, None, :], boxes[..., None, :, :]
    return torch.stack([b[..., 0] - a[..., 2], a[..., 0] - b[..., 2], b[..., 1] - a[..., 3], a[..., 1] - b[..., 3]],
                       dim=-1).amax(dim=-1)


def _nonempty(boxes: torch.Tensor) -> torch.Tensor:
    return ((boxes[..., 2] - boxes[..., 0]) > 0) & ((boxes[..., 3] - boxes[..., 1]) > 0)


def violations(boxes: torch.Tensor, obj_mask: torch.Tensor, stats: LayoutStats, frames: torch.Tensor,
               move_slack: float = 1.15, overlap_slack: float = 0.05, gap_slack: float = 0.01) -> torch.Tensor:
    """Implausible moves, overlaps and objects closer than the data's ever are, per candidate: boxes (B, K, W, 4)
    x0 y0 x1 y1, obj_mask (B, K), frames (W,) bool: the frames being judged (a move counts when it ends in one)
    -> (B,) float counts."""
    step = moves(boxes)  # (B, K, W - 1)
    fast = (step > stats.max_move * move_slack) & obj_mask[..., None] & frames[1:]
    iou = pairwise_iou(boxes.transpose(1, 2))  # (B, W, K, K)
    pair = obj_mask[:, None, :, None] & obj_mask[:, None, None, :]
    pair = pair & ~torch.eye(boxes.shape[1], dtype=torch.bool, device=boxes.device) & frames[None, :, None, None]
    overlapping = ((iou > stats.max_overlap + overlap_slack) | (pairwise_gap(boxes.transpose(1, 2))
                                                                 < stats.min_gap - gap_slack)) & pair
    return fast.sum(dim=(1, 2)).float() + overlapping.sum(dim=(1, 2, 3)).float() / 2


def layout_scores(scorer: RelationScorer, stats: LayoutStats, boxes: torch.Tensor, cond, frames: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per candidate: a score (higher is better: the summed log-probability of the graph's triples in the judged
    frames, minus a penalty per implausible move or overlap) and whether it looks right (every judged triple's
    predicate is the scorer's most likely one for its boxes, and nothing is implausible). boxes (B, K, W, 4)."""
    B, K, W, _ = boxes.shape
    s, p, o = cond.triples.unbind(-1)
    b = torch.arange(B, device=boxes.device)[:, None, None].expand_as(s)
    w = torch.arange(W, device=boxes.device)[None, :, None].expand_as(s)
    log_p = scorer(boxes[b, s, w], boxes[b, o, w], cond.classes[b, s], cond.classes[b, o]).log_softmax(-1)  # (B, W, R, P)
    judged = cond.triple_mask & frames[None, :, None]
    relation = (log_p.gather(-1, p[..., None])[..., 0] * judged).sum(dim=(1, 2))
    wrong = ((log_p.argmax(-1) != p) & judged).sum(dim=(1, 2))
    bad = violations(boxes, cond.obj_mask, stats, frames)
    return relation - VIOLATION_PENALTY * bad, (wrong == 0) & (bad == 0)


def scorer_accuracy(scorer: RelationScorer, boxes: torch.Tensor, classes: torch.Tensor, triples: torch.Tensor,
                    triple_mask: torch.Tensor) -> float:
    """Share of triples whose predicate is the scorer's most likely one for the boxes."""
    B, K, W, _ = boxes.shape
    s, p, o = triples.unbind(-1)
    b = torch.arange(B, device=boxes.device)[:, None, None].expand_as(s)
    w = torch.arange(W, device=boxes.device)[None, :, None].expand_as(s)
    logits = scorer(boxes[b, s, w], boxes[b, o, w], classes[b, s], classes[b, o])
    hits = (logits.argmax(-1) == p)[triple_mask]
    return float(hits.float().mean()) if hits.numel() else float("nan")


__all__ = ["RelationScorer", "LayoutStats", "layout_scores", "violations", "scorer_accuracy", "pair_features"]
